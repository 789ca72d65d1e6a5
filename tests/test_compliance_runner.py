"""compliance/run.py, the Autobahn|Testsuite runner: how it judges a report against the
expectations, and what it prints when a role fails (the cause, not a page of "missing").

The judging tests give it report folders written here, shaped as wstest writes them
(``--no-run``); the others run a role whose program or wstest fails, for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TIMEOUT

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "compliance" / "run.py"
INSTALL = ROOT / "compliance" / "install.sh"


def runner(*args: str | Path, timeout: float = TIMEOUT * 4) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_report(reports: Path, role: str, results: dict[str, tuple[str, str]]) -> None:
    """A report as wstest leaves it: index.json, and each case's own JSON file."""
    folder = reports / role / "reports"
    folder.mkdir(parents=True)
    index = {}
    for case, (behavior, closing) in results.items():
        name = f"wschannel_case_{case.replace('.', '_')}.json"
        index[case] = {
            "behavior": behavior,
            "behaviorClose": closing,
            "remoteCloseCode": 1000,
            "reportfile": name,
        }
        detail = {
            "description": f"What case {case} sends.",
            "expectation": f"What case {case} expects.",
            "result": f"What came back in case {case}.",
            "resultClose": "Connection was properly closed",
        }
        (folder / name).write_text(json.dumps(detail))
    (folder / "index.json").write_text(json.dumps({"wschannel": index}))


def write_expected(expected: Path, role: str, results: dict[str, str]) -> None:
    expected.mkdir(exist_ok=True)
    (expected / f"{role}.json").write_text(json.dumps(results))


def test_runner_passes_a_role_whose_cases_are_as_expected(tmp_path: Path) -> None:
    reports, expected = tmp_path / "reports", tmp_path / "expected"
    write_report(reports, "server", {"1.1.1": ("OK", "OK"), "7.13.1": ("INFORMATIONAL", "OK")})
    write_expected(expected, "server", {"1.1.1": "OK/OK", "7.13.1": "INFORMATIONAL/OK"})

    done = runner("--no-run", "--role", "server", "--reports", reports, "--expected", expected)

    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines() == [
        "compliance: server: 2 cases (INFORMATIONAL 1, OK 1), all 2 as expected",
        "autobahn: 2 passed, 0 failed",
    ]


def test_runner_explains_cases_worse_than_expected_and_names_the_missing_ones(
    tmp_path: Path,
) -> None:
    reports, expected = tmp_path / "reports", tmp_path / "expected"
    write_report(
        reports,
        "client",
        {"1.1.1": ("OK", "OK"), "3.3": ("NON-STRICT", "OK"), "5.1": ("OK", "FAILED")},
    )
    write_expected(
        expected, "client", {"1.1.1": "OK/OK", "2.1": "OK/OK", "3.3": "OK/OK", "5.1": "OK/OK"}
    )
    (reports / "client.log").write_text("starting\nTraceback (most recent call last):\nboom\n")

    done = runner("--no-run", "--role", "client", "--reports", reports, "--expected", expected)

    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "compliance: client: FAILED: 3 of 4 cases not as expected (3 results: NON-STRICT 1, OK 2)"
    )
    assert "  case 3.3: NON-STRICT/OK, expected OK/OK" in lines
    assert "      description: What case 3.3 sends." in lines
    assert "      result: What came back in case 3.3." in lines
    assert "  case 5.1: OK/FAILED, expected OK/OK" in lines
    assert "  1 case missing from wstest's report: 2.1" in lines
    assert "    | boom" in lines
    assert lines[-1] == "autobahn: 1 passed, 3 failed"


def test_runner_accepts_a_case_better_than_expected(tmp_path: Path) -> None:
    reports, expected = tmp_path / "reports", tmp_path / "expected"
    write_report(reports, "server", {"3.3": ("OK", "OK")})
    write_expected(expected, "server", {"3.3": "NON-STRICT/OK"})

    done = runner("--no-run", "--role", "server", "--reports", reports, "--expected", expected)

    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1] == "autobahn: 1 passed, 0 failed"


def test_runner_says_in_one_line_that_wstest_wrote_no_report(tmp_path: Path) -> None:
    reports, expected = tmp_path / "reports", tmp_path / "expected"
    (reports / "server").mkdir(parents=True)
    write_expected(expected, "server", {f"9.{n}": "OK/OK" for n in range(1, 501)})

    done = runner("--no-run", "--role", "server", "--reports", reports, "--expected", expected)

    assert done.returncode == 1
    assert "wstest wrote no report" in done.stdout
    assert "all 500 cases expected are missing" in done.stdout
    assert "9.250" not in done.stdout  # no case-by-case list of what is missing
    assert done.stdout.splitlines()[-1] == "autobahn: 0 passed, 500 failed"


def test_runner_shows_why_the_echo_server_did_not_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-server.py"

    done = runner(
        *("--role", "server", "--cases", "1.1.1", "--reports", tmp_path / "reports"),
        *("--program", missing, "--wstest", tmp_path / "unused-wstest"),
    )

    assert done.returncode == 1
    assert "exited with status 2 before listening" in done.stdout
    assert f"can't open file '{missing}'" in done.stdout  # the program's own error, from its log
    assert done.stdout.splitlines()[-1] == "autobahn: 0 passed, 1 failed"


def test_runner_shows_that_wstest_could_not_start(tmp_path: Path) -> None:
    absent = tmp_path / "absent" / "wstest"

    done = runner(
        *("--role", "client", "--cases", "1.1.1", "--reports", tmp_path / "reports"),
        *("--wstest", absent),
    )

    assert done.returncode == 1
    assert f"wstest could not start: [Errno 2] No such file or directory: '{absent}'" in done.stdout


LISTENING_SERVER = """
import argparse, socket
parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
with socket.create_server(("127.0.0.1", parser.parse_args().port)) as server:
    while True:  # until the runner stops it
        server.accept()[0].close()
"""


@pytest.mark.parametrize(
    ("ending", "said"),
    [
        ("exit 0", "wstest exited with status 0 (as when stopped by SIGTERM or SIGINT)"),
        ("kill -KILL $$", "wstest was killed by signal 9"),
    ],
)
def test_runner_says_how_wstest_ended_without_its_report(
    tmp_path: Path, ending: str, said: str
) -> None:
    server = tmp_path / "listening_server.py"
    server.write_text(LISTENING_SERVER)
    stand_in = tmp_path / "wstest"  # ends as wstest does when something stops it
    stand_in.write_text(
        f"#!/bin/sh\necho 'Running test case ID 1.1.1 for agent wschannel'\n{ending}\n"
    )
    stand_in.chmod(0o755)

    done = runner(
        *("--role", "server", "--cases", "1.1.1", "--reports", tmp_path / "reports"),
        *("--program", server, "--wstest", stand_in),
    )

    assert done.returncode == 1
    assert f"  {said} after case 1.1.1 began without writing its report" in done.stdout
    assert "no results at all: wstest wrote no report" in done.stdout


CRASHING_SERVER = """
import argparse, socket, sys
parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
with socket.create_server(("127.0.0.1", parser.parse_args().port)) as server:
    for _ in range(2):  # the runner's check that it listens, then wstest's first case
        server.accept()[0].close()
    print("crashing on purpose", file=sys.stderr)
    sys.exit(3)
"""


def installed_wstest() -> str:
    """wstest's path if compliance/install.sh has installed it (make test-python does)."""
    done = subprocess.run(
        ["bash", str(INSTALL), "--check"], capture_output=True, text=True, timeout=TIMEOUT * 4
    )
    if done.returncode != 0:
        pytest.skip(f"wstest is not installed: run {INSTALL.relative_to(ROOT)}")
    return done.stdout.strip()


def test_runner_shows_a_server_that_crashes_during_the_run(tmp_path: Path) -> None:
    server = tmp_path / "crashing_server.py"
    server.write_text(CRASHING_SERVER)

    done = runner(
        *("--role", "server", "--cases", "1.1.1,1.1.2", "--reports", tmp_path / "reports"),
        *("--program", server, "--wstest", installed_wstest(), "--timeout", str(TIMEOUT * 12)),
        timeout=TIMEOUT * 24,
    )

    assert done.returncode == 1
    assert "the echo server exited with status 3 during the run" in done.stdout
    assert "    | crashing on purpose" in done.stdout
    assert "case 1.1.1: FAILED/FAILED, expected OK/OK" in done.stdout
    assert "resultClose: The WebSocket opening handshake was never completed!" in done.stdout
    assert "1 case missing from wstest's report: 1.1.2" in done.stdout
    assert done.stdout.splitlines()[-1] == "autobahn: 0 passed, 2 failed"
