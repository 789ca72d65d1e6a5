"""Autobahn|Testsuite's ``wstest``: installing it, running its two fuzzing modes, reading
what it reports.

wstest plays the peer and judges every case:

- ``fuzzingclient`` tests a *server*: it connects to the URLs of its spec's ``servers`` once
  per case and writes the report when every case is done;
- ``fuzzingserver`` tests a *client*: it listens on its spec's ``url``; the client reads
  ``/getCaseCount``, opens ``/runCase?case=N&agent=NAME`` for each case and echoes what it
  receives, then opens ``/updateReports?agent=NAME``, which writes the report.

Each mode takes a spec file (JSON: the cases to run and skip, where the report goes) and
prints a line per case as it starts ("Running test case ID 1.1.1 ..."), which is how
``run.py`` shows progress. The report is ``index.json`` (for each agent, each case's
``behavior`` and ``behaviorClose``: OK, INFORMATIONAL, NON-STRICT, FAILED, UNIMPLEMENTED,
WRONG CODE or UNCLEAN) and one JSON file per case that says what was sent, what was
expected and what came back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
INSTALL = HERE / "install.sh"
#: The agent name the reports use: the server spec's ``agent``, the client's ``agent=``.
AGENT = "wschannel"
#: wstest's results that pass; NON-STRICT fails too, since the runs here are strict.
PASSING = frozenset({"OK", "INFORMATIONAL"})


def install() -> str:
    """Installs wstest the first time (compliance/install.sh) and returns its path.

    ``SystemExit`` with install.sh's own explanation when it fails."""
    # install.sh fetches pip's wheel with a Python 3 pip: this interpreter's.
    env = dict(os.environ, PYTHON3=sys.executable)
    done = subprocess.run(["bash", str(INSTALL)], stdout=subprocess.PIPE, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(
            f"compliance: installing wstest failed ({INSTALL}, status {done.returncode})"
        )
    return lines[-1]


def spec(
    mode: str, url: str, reports: Path, cases: list[str], exclude: list[str]
) -> dict[str, Any]:
    """The spec file's content for `mode`: wstest tests the server at `url`
    (``fuzzingclient``) or listens at `url` for the client (``fuzzingserver``)."""
    common: dict[str, Any] = {
        "outdir": str(reports),
        "cases": cases or ["*"],
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    }
    if mode == "fuzzingclient":
        return {"servers": [{"agent": AGENT, "url": url}], **common}
    if mode == "fuzzingserver":
        return {"url": url, **common}
    raise ValueError(f"wstest's fuzzing modes are fuzzingclient and fuzzingserver, not {mode!r}")


def start(wstest: str, mode: str, spec_file: Path, log: IO[str]) -> subprocess.Popen[bytes]:
    """Starts wstest in `mode` with the spec in `spec_file`, its output going to `log`.

    ``OSError`` if it cannot be started (not installed, not executable)."""
    command = [wstest, "--mode", mode, "--spec", str(spec_file)]
    if mode == "fuzzingserver":
        command += ["--webport", "0"]  # no web page beside the fuzzing server
    # Unbuffered (Python 2 reads it too): a line per case as it starts, for the progress.
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        command, cwd=spec_file.parent, stdout=log, stderr=subprocess.STDOUT, env=env
    )


@dataclass
class Case:
    """One case's result, and the report's words for it."""

    id: str
    behavior: str
    behavior_close: str
    remote_close_code: int | None = None
    #: The case's own report (what was sent, expected and received), if wstest wrote one.
    report_file: Path | None = None

    @property
    def result(self) -> str:
        return f"{self.behavior}/{self.behavior_close}"

    @property
    def passed(self) -> bool:
        return self.behavior in PASSING and self.behavior_close in PASSING


def index_file(reports: Path) -> Path | None:
    """The report's index.json under `reports`, or ``None`` if wstest wrote none."""
    for candidate in [reports / "index.json", *sorted(reports.glob("*/index.json"))]:
        if candidate.is_file():
            return candidate
    return None


def read_report(reports: Path) -> dict[str, Case]:
    """Every case of the report under `reports` for our agent; ``{}`` if there is none.

    ``ValueError`` if index.json is not a report (not JSON, or not shaped as one)."""
    index = index_file(reports)
    if index is None:
        return {}
    try:
        by_agent = json.loads(index.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{index} is not JSON: {error}") from None
    agent = by_agent.get(AGENT, {}) if isinstance(by_agent, dict) else None
    if not isinstance(agent, dict):
        raise ValueError(f"{index} is not a wstest report (no object for {AGENT!r})")
    cases = {}
    for case_id, result in agent.items():
        if not isinstance(result, dict):
            raise ValueError(f"{index}: case {case_id} is {result!r}, not an object")
        report_file = result.get("reportfile")
        cases[case_id] = Case(
            id=case_id,
            behavior=str(result.get("behavior", "?")),
            behavior_close=str(result.get("behaviorClose", "?")),
            remote_close_code=result.get("remoteCloseCode"),
            report_file=index.parent / report_file if isinstance(report_file, str) else None,
        )
    return cases


def explain(case: Case) -> dict[str, str]:
    """What the case's own report says: its description, what was expected, and wstest's
    verdict on the messages and on the close. Empty when the file is not there."""
    if case.report_file is None:
        return {}
    try:
        full = json.loads(case.report_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    keys = ("description", "expectation", "result", "resultClose")
    return {key: " ".join(str(full[key]).split()) for key in keys if full.get(key)}
