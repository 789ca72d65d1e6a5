"""Runs Autobahn|Testsuite against wschannel in both roles and compares with expectations.

The server role (compliance/server.py under wstest's fuzzing client) and the client role
(compliance/client.py against wstest's fuzzing server) run at the same time, one per core.
Each case's result is compared with compliance/expected/<role>.json: a case that does
worse than expected, or a case that is missing, fails the run. NON-STRICT counts as a
failure (``--strict``).

    python compliance/run.py                 # all cases, both roles
    python compliance/run.py --cases '1.*,2.*' --role server
    python compliance/run.py --update        # write the expectations from this run
    python compliance/run.py --no-run        # judge the reports of the last run again
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFORMANCE = ROOT.parent / "shared" / "autobahn" / "conformance.py"
INSTALL = CONFORMANCE.with_name("install.sh")
REPORTS = HERE / "reports"
EXPECTED = HERE / "expected"
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


def conformance(role: str, args: argparse.Namespace, target: list[str]) -> int:
    """Runs conformance.py for one role; `target` is the URL or `-- COMMAND`."""
    out = REPORTS / role
    command = [sys.executable, str(CONFORMANCE), role, *target[:1], "--out", str(out), "--strict"]
    command += ["--timeout", str(args.timeout)]
    if args.cases:
        command += ["--cases", args.cases]
    with open(REPORTS / f"{role}.log", "w") as log:
        command += target[1:]
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode


def install_wstest() -> None:
    """Installs wstest once, before the roles start: each role's conformance.py would
    otherwise install it at the same time, and the two apt-get runs fight for apt's lock."""
    print("compliance: installing Autobahn|Testsuite if needed (about 30 s the first time)")
    done = subprocess.run(["bash", str(INSTALL)], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"compliance: installing wstest failed ({INSTALL})")
    print(f"compliance: wstest is {done.stdout.strip()}")


def run_server_role(args: argparse.Namespace) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "server.py"), "--port", str(port)])
    try:
        wait_for_port(port, server)
        conformance("server", args, [f"ws://127.0.0.1:{port}"])
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_client_role(args: argparse.Namespace) -> None:
    target = ["", "--port", str(free_port()), "--", sys.executable, str(HERE / "client.py")]
    conformance("client", args, target)


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
    if args.update:
        summary = {case: f"{got[case]['behavior']}/{got[case]['behaviorClose']}" for case in got}
        ordered = dict(sorted(summary.items(), key=lambda item: case_key(item[0])))
        expected_file.write_text(json.dumps(ordered, indent=1) + "\n")
    expected: dict[str, str] = {}
    if expected_file.is_file():
        expected = json.loads(expected_file.read_text())
    if args.cases:
        expected = {case: value for case, value in expected.items() if case in got}
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["server", "client", "both"], default="both")
    parser.add_argument("--cases", help="case ids or patterns, e.g. '1.*,2.*'")
    parser.add_argument("--update", action="store_true", help="write the expectations")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--no-run", action="store_true", help="judge the reports of the last run")
    args = parser.parse_args()
    os.makedirs(REPORTS, exist_ok=True)
    roles = ["server", "client"] if args.role == "both" else [args.role]
    runners = {"server": run_server_role, "client": run_client_role}
    threads = (
        []
        if args.no_run
        else [threading.Thread(target=runners[role], args=(args,)) for role in roles]
    )
    if threads:
        install_wstest()
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"compliance: ran in {time.monotonic() - started:.0f} s")
    verdicts = [judge(role, args) for role in roles]
    passed, failed = (sum(column) for column in zip(*verdicts, strict=True))
    print(f"autobahn: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
