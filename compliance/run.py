"""Runs Autobahn|Testsuite against wschannel in four roles and compares with expectations.

The roles: ``server`` (compliance/server.py, on the asyncio ``wschannel.serve``) and
``sync-server`` (compliance/sync_server.py, on the blocking ``wschannel.sync.serve``) under
wstest's fuzzing client; ``client`` (compliance/client.py, asyncio) and ``sync-client``
(compliance/sync_client.py, blocking) against wstest's fuzzing server. Each role is one
wstest process and our program; ``--jobs`` roles run at a time (all four by default: see
compliance/README.md for why). Every ``--progress`` seconds a line says how many cases each
role has done. Each case's result is compared with compliance/expected/<role>.json: a case
that does worse than expected, or a case that is missing, fails the run. NON-STRICT counts
as a failure (``--strict``).

    python compliance/run.py                 # all cases, all four roles
    python compliance/run.py --cases '1.*,2.*' --role server,sync-server
    python compliance/run.py --update        # write the expectations from this run
    python compliance/run.py --no-run        # judge the reports of the last run again
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFORMANCE = ROOT.parent / "shared" / "autobahn" / "conformance.py"
INSTALL = CONFORMANCE.with_name("install.sh")
REPORTS = HERE / "reports"
EXPECTED = HERE / "expected"
#: The compression cases the blocking roles skip unless ``--all-cases``: in each of the 12
#: groups (5 data sets, 7 permessage-deflate settings) the 128 KiB messages and the ones
#: wstest fragments into 256 B-32 KiB frames (x.y.10 and x.y.12-18). They cost wstest's
#: Python 2 most of its time, per frame; the blocking roles keep the 16 B-64 KiB messages
#: of every group and the fragmented 8 KiB ones (x.y.11), and the asyncio roles run them all
#: (the engine that inflates and reassembles is the same). See compliance/README.md.
SYNC_SKIPPED = ",".join(f"{major}.*.{size}" for major in (12, 13) for size in (10, *range(12, 19)))
#: Each role: whether wstest tests a server or a client, our echo program, the cases skipped.
ROLES = {
    "server": ("server", "server.py", ""),
    "client": ("client", "client.py", ""),
    "sync-server": ("server", "sync_server.py", SYNC_SKIPPED),
    "sync-client": ("client", "sync_client.py", SYNC_SKIPPED),
}
#: How good a result is: lower is better. OK and INFORMATIONAL both pass.
RANK = {"OK": 0, "INFORMATIONAL": 0, "NON-STRICT": 1}
WORST = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"compliance: the echo server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"compliance: the echo server did not listen on {port}")


def wstest_log(role: str) -> Path:
    """Where conformance.py puts wstest's output for `role` (one line per case started)."""
    mode = "fuzzingclient" if ROLES[role][0] == "server" else "fuzzingserver"
    return REPORTS / role / f"{mode}.log"


def conformance(role: str, args: argparse.Namespace, target: list[str], log: IO[str]) -> int:
    """Runs conformance.py for one role; `target` is the URL or `-- COMMAND`."""
    mode = ROLES[role][0]
    command = [sys.executable, str(CONFORMANCE), mode, *target[:1], "--out", str(REPORTS / role)]
    command += ["--strict", "--timeout", str(args.timeout)]
    if args.cases:
        command += ["--cases", args.cases]
    if excluded(role, args):
        command += ["--exclude", ",".join(excluded(role, args))]
    command += target[1:]
    # Unbuffered: wstest (Python 2) prints a line as each case starts, for the progress.
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def install_wstest() -> None:
    """Installs wstest once, before the roles start: each role's conformance.py would
    otherwise install it at the same time, and the apt-get runs fight for apt's lock."""
    print("compliance: installing Autobahn|Testsuite if needed (about 30 s the first time)")
    done = subprocess.run(["bash", str(INSTALL)], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"compliance: installing wstest failed ({INSTALL})")
    print(f"compliance: wstest is {done.stdout.strip()}")


def run_role(role: str, args: argparse.Namespace) -> None:
    """Runs one role; its output (wstest's verdict, our program's) goes to reports/<role>.log."""
    # wstest writes the report only at the end (none if it is stopped at the timeout): an
    # earlier run's must not be judged instead.
    shutil.rmtree(REPORTS / role, ignore_errors=True)
    mode, script, _ = ROLES[role]
    program = [sys.executable, str(HERE / script)]
    with open(REPORTS / f"{role}.log", "w") as log:
        if mode == "client":
            conformance(role, args, ["", "--port", str(free_port()), "--", *program], log)
            return
        port = free_port()
        server = subprocess.Popen([*program, "--port", str(port)], stdout=log, stderr=log)
        try:
            wait_for_port(port, server)
            conformance(role, args, [f"ws://127.0.0.1:{port}"], log)
        finally:
            server.terminate()
            server.wait(timeout=10)


class Progress:
    """Which roles wait, run or are done, and how many cases each has started."""

    def __init__(self, roles: list[str]) -> None:
        self.roles = roles
        self.started: dict[str, float] = {}
        self.took: dict[str, float] = {}
        self.lock = threading.Lock()

    def run(self, role: str, args: argparse.Namespace) -> None:
        with self.lock:
            self.started[role] = time.monotonic()
        try:
            run_role(role, args)
        finally:
            with self.lock:
                self.took[role] = time.monotonic() - self.started[role]
            print(f"compliance: {role} done in {self.took[role]:.0f} s", flush=True)

    def line(self) -> str:
        parts = []
        with self.lock:
            for role in self.roles:
                if role in self.took:
                    parts.append(f"{role} done")
                elif role in self.started:
                    parts.append(f"{role} {cases_started(role)}")
                else:
                    parts.append(f"{role} waiting")
        return ", ".join(parts)


def cases_started(role: str) -> str:
    """'done/total' from wstest's log: it prints the total, then a line per case started."""
    try:
        text = wstest_log(role).read_text(errors="replace")
    except OSError:
        return "starting"
    total = re.search(r"will run (\d+) test cases", text)
    if total is None:
        return "starting"
    # The case in progress has started but is not done.
    done = max(text.count("Running test case ID") - 1, 0)
    return f"{done}/{total.group(1)}"


def excluded(role: str, args: argparse.Namespace) -> list[str]:
    """The case patterns `role` skips: ``--exclude``'s, and its own unless ``--all-cases``."""
    patterns = [] if args.all_cases else ROLES[role][2].split(",")
    patterns += (args.exclude or "").split(",")
    return [pattern.strip() for pattern in patterns if pattern.strip()]


def matches(case: str, patterns: list[str]) -> bool:
    """Whether `case` matches one of `patterns` as wstest matches them: a pattern with '*'
    (any text) as a regular expression from the start of the id, another one exactly."""
    return any(
        re.match(re.escape(pattern).replace(r"\*", ".*"), case)
        if "*" in pattern
        else case == pattern
        for pattern in patterns
    )


def selected(case: str, role: str, args: argparse.Namespace) -> bool:
    """Whether this run asked wstest for `case` in `role`."""
    wanted = [pattern.strip() for pattern in (args.cases or "*").split(",") if pattern.strip()]
    return matches(case, wanted) and not matches(case, excluded(role, args))


def results(role: str) -> dict[str, dict[str, Any]]:
    index = next((REPORTS / role / "reports").glob("*/index.json"), None)
    if index is None:
        index = REPORTS / role / "reports" / "index.json"
    if not index.is_file():
        return {}
    by_agent: dict[str, dict[str, dict[str, Any]]] = json.loads(index.read_text())
    return by_agent.get("wschannel", {})


def rank(case: dict[str, Any]) -> int:
    return max(
        RANK.get(case.get("behavior", ""), WORST), RANK.get(case.get("behaviorClose", ""), WORST)
    )


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def judge(role: str, args: argparse.Namespace) -> tuple[int, int]:
    """Compares one role's results with its expectations; returns (passed, failed)."""
    got = results(role)
    expected_file = EXPECTED / f"{role}.json"
    expected: dict[str, str] = {}
    if expected_file.is_file():
        expected = json.loads(expected_file.read_text())
    if args.update:  # the cases run replace theirs; the others stay
        for case, result in got.items():
            expected[case] = f"{result['behavior']}/{result['behaviorClose']}"
        expected = dict(sorted(expected.items(), key=lambda item: case_key(item[0])))
        expected_file.write_text(json.dumps(expected, indent=1) + "\n")
    expected = {case: value for case, value in expected.items() if selected(case, role, args)}
    counts = collections.Counter(result["behavior"] for result in got.values())
    shown = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
    print(f"compliance: {role}: {len(got)} cases: {shown}")
    if not expected:
        print(f"compliance: {role}: no expectations in {expected_file}")
        return 0, 1
    failed = 0
    for case, want in sorted(expected.items(), key=lambda item: case_key(item[0])):
        behavior, _, closing = want.partition("/")
        if case not in got:
            print(f"  case {case}: missing (expected {want})")
            failed += 1
        elif rank(got[case]) > rank({"behavior": behavior, "behaviorClose": closing}):
            print(
                f"  case {case}: {got[case]['behavior']}/{got[case]['behaviorClose']}"
                f", expected {want}"
            )
            failed += 1
    print(f"compliance: {role}: {len(expected) - failed} cases as expected, {failed} worse")
    return len(expected) - failed, failed


def parse_roles(value: str) -> list[str]:
    roles = list(ROLES) if value == "all" else [role.strip() for role in value.split(",")]
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        raise argparse.ArgumentTypeError(f"roles are {', '.join(ROLES)} or all, not {value!r}")
    return roles


def run_roles(roles: list[str], args: argparse.Namespace) -> None:
    """Runs the roles, `args.jobs` at a time, printing the progress as they go."""
    progress = Progress(roles)
    pending = list(roles)
    running: list[threading.Thread] = []
    last_report = started = time.monotonic()
    while pending or running:
        running = [thread for thread in running if thread.is_alive()]
        while pending and len(running) < args.jobs:
            role = pending.pop(0)
            thread = threading.Thread(target=progress.run, args=(role, args), daemon=True)
            thread.start()
            running.append(thread)
        if running and time.monotonic() - last_report >= args.progress:
            last_report = time.monotonic()
            print(f"compliance: {last_report - started:.0f} s: {progress.line()}", flush=True)
        if running:
            running[0].join(0.5)
    took = ", ".join(f"{role} {progress.took[role]:.0f} s" for role in roles)
    print(f"compliance: ran in {time.monotonic() - started:.0f} s ({took})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--role",
        type=parse_roles,
        default="all",
        help=f"comma-separated, of {', '.join(ROLES)}; or all (the default)",
    )
    parser.add_argument("--cases", help="case ids or patterns, e.g. '1.*,2.*'")
    parser.add_argument("--exclude", help="case ids or patterns to skip, e.g. '12.*,13.*'")
    parser.add_argument(
        "--all-cases",
        action="store_true",
        help="the blocking roles too run every case (by default they skip some compression cases)",
    )
    parser.add_argument("--jobs", type=int, default=len(ROLES), help="roles at a time")
    parser.add_argument("--progress", type=float, default=30, help="seconds between reports")
    parser.add_argument("--update", action="store_true", help="write the expectations")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds, for each role")
    parser.add_argument("--no-run", action="store_true", help="judge the reports of the last run")
    args = parser.parse_args()
    roles: list[str] = args.role
    os.makedirs(REPORTS, exist_ok=True)
    if not args.no_run:
        install_wstest()
        run_roles(roles, args)
    verdicts = [judge(role, args) for role in roles]
    passed, failed = (sum(column) for column in zip(*verdicts, strict=True))
    print(f"autobahn: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
