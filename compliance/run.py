"""Runs Autobahn|Testsuite against wschannel in four roles and compares with expectations.

The roles: ``server`` (compliance/server.py, on the asyncio ``wschannel.serve``) and
``sync-server`` (compliance/sync_server.py, on the blocking ``wschannel.sync.serve``) under
wstest's fuzzing client; ``client`` (compliance/client.py, asyncio) and ``sync-client``
(compliance/sync_client.py, blocking) against wstest's fuzzing server. Each role is one
wstest process and our program (compliance/wstest.py drives wstest; compliance/install.sh
installs it the first time), except that the asyncio roles run their 12.x cases in a second
pair of their own (``SPLIT``; not with ``--cases`` or ``--no-split``); ``--jobs`` of these
run at a time (all six by default: see compliance/README.md for why). Every ``--progress``
seconds a line says how many cases each role has done. Each case's result is compared with
compliance/expected/<role>.json: a case that does worse than expected, or is missing, fails
the run; NON-STRICT counts as a failure. A failing role shows why: what went wrong with
wstest or our program, each case worse than expected (expected vs got, and the case's own
report), and the end of both logs.

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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import wstest
from wstest import Case

HERE = Path(__file__).resolve().parent
#: The compression cases the blocking roles skip unless ``--all-cases``: in each of the 12
#: groups (5 data sets, 7 permessage-deflate settings) the 128 KiB messages and the ones
#: wstest fragments into 256 B-32 KiB frames (x.y.10 and x.y.12-18). They cost wstest's
#: Python 2 most of its time, per frame; the blocking roles keep the 16 B-64 KiB messages
#: of every group and the fragmented 8 KiB ones (x.y.11), and the asyncio roles run them all
#: (the engine that inflates and reassembles is the same). See compliance/README.md.
SYNC_SKIPPED = ",".join(f"{major}.*.{size}" for major in (12, 13) for size in (10, *range(12, 19)))
#: The case groups an asyncio role runs in a wstest process (and an echo program) of their
#: own, beside the one for the rest of its cases: 12.x (permessage-deflate with the default
#: offer) is about 55 % of such a role's time. A role is a pipeline that keeps three quarters
#: of a core busy; the two asyncio roles, each four times a blocking one, would otherwise
#: end the run alone, one core each, long after the rest (compliance/README.md, "Time").
SPLIT = ("12.*",)


@dataclass(frozen=True)
class Role:
    """What wstest tests (``server``: our program listens; ``client``: our program connects
    to wstest), our echo program, the case patterns the role skips by default, and the ones
    it runs apart (:data:`SPLIT`)."""

    tests: str
    program: str
    skipped: str = ""
    split: tuple[str, ...] = ()


ROLES = {
    "server": Role("server", "server.py", split=SPLIT),
    "client": Role("client", "client.py", split=SPLIT),
    "sync-server": Role("server", "sync_server.py", SYNC_SKIPPED),
    "sync-client": Role("client", "sync_client.py", SYNC_SKIPPED),
}
#: How good a result is: lower is better. OK and INFORMATIONAL both pass.
RANK = {"OK": 0, "INFORMATIONAL": 0, "NON-STRICT": 1}
WORST = 2
#: How many failing cases a verdict explains one by one, and how many log lines it shows.
EXPLAINED = 10
LOG_TAIL = 15


class Paths:
    """Where a role's files go, under the ``--reports`` folder; for a part of the role run
    apart (`part`, a pattern of :data:`SPLIT`), under the role's name and the part's, as
    ``server.12``."""

    def __init__(self, reports: Path, role: str, part: str | None = None) -> None:
        name = role if part is None else f"{role}.{part.rstrip('*.')}"
        self.folder = reports / name
        #: Our program's output (and the runner's notes on it).
        self.program_log = reports / f"{name}.log"
        self.wstest_log = self.folder / "wstest.log"
        self.spec = self.folder / "spec.json"
        #: wstest's report: index.json and a JSON and an HTML file per case.
        self.report = self.folder / "reports"
        #: What went wrong with the run itself (a program that exited, a timeout), as JSON.
        self.problems = self.folder / "problems.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], who: str, seconds: float) -> str:
    """Waits until `proc` listens on `port`; what went wrong if it does not, else ''."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"{who} exited with status {proc.returncode} before listening on {port}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return ""
        except OSError:
            time.sleep(0.1)
    return f"{who} did not listen on {port} within {seconds:.0f} s"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def patterns(text: str | None) -> list[str]:
    return [pattern.strip() for pattern in (text or "").split(",") if pattern.strip()]


def excluded(role: str, args: argparse.Namespace) -> list[str]:
    """The case patterns `role` skips: ``--exclude``'s, and its own unless ``--all-cases``."""
    own = [] if args.all_cases else patterns(ROLES[role].skipped)
    return own + patterns(args.exclude)


def parts(role: str, args: argparse.Namespace) -> list[str | None]:
    """The wstest runs of `role`: one per pattern it runs apart, then ``None`` for the rest;
    only ``[None]`` when ``--cases`` chooses the cases or ``--no-split`` asks for one run."""
    if args.cases or args.no_split:
        return [None]
    return [*ROLES[role].split, None]


def part_cases(
    role: str, part: str | None, args: argparse.Namespace
) -> tuple[list[str], list[str]]:
    """The spec's cases and the cases it excludes, for one run of `role` (see :func:`parts`)."""
    if part is not None:
        return [part], excluded(role, args)
    apart = [pattern for pattern in parts(role, args) if pattern is not None]
    return patterns(args.cases), excluded(role, args) + apart


def all_paths(reports: Path, role: str) -> list[Paths]:
    """The folders a run of `role` may have written: its parts' (:data:`SPLIT`), the rest's."""
    return [*(Paths(reports, role, part) for part in ROLES[role].split), Paths(reports, role)]


def program(role: str, args: argparse.Namespace) -> list[str]:
    """The command of the role's echo program (``--program`` replaces it)."""
    path = args.program or str(HERE / ROLES[role].program)
    return [sys.executable, path]


def run_role(role: str, part: str | None, args: argparse.Namespace) -> list[str]:
    """Runs one role (or one part of it, :func:`parts`): our program and wstest, with wstest's
    output in the role's folder and our program's in reports/<role>.log. Returns what went
    wrong with the run, and keeps it in problems.json for ``--no-run``."""
    paths = Paths(args.reports, role, part)
    paths.folder.mkdir(parents=True)
    run = serve_role if ROLES[role].tests == "server" else connect_role
    with open(paths.program_log, "w") as program_log, open(paths.wstest_log, "w") as wstest_log:
        problems = run(role, part, args, paths, program_log, wstest_log)
    paths.problems.write_text(json.dumps(problems, indent=1) + "\n")
    return problems


def serve_role(
    role: str, part: str | None, args: argparse.Namespace, paths: Paths, log: IO[str], wlog: IO[str]
) -> list[str]:
    """Our program listens; wstest's fuzzing client connects to it once per case."""
    port = free_port()
    command = [*program(role, args), "--port", str(port)]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        problem = wait_for_port(port, server, f"the echo server ({' '.join(command)})", 30)
        if problem:
            return [problem]
        url = f"ws://127.0.0.1:{port}"
        spec = wstest.spec("fuzzingclient", url, paths.report, *part_cases(role, part, args))
        paths.spec.write_text(json.dumps(spec, indent=1))
        problems = run_wstest(args, paths, "fuzzingclient", wlog)
        if server.poll() is not None:
            problems.append(
                f"the echo server exited with status {server.returncode} during the run"
            )
        return problems
    finally:
        stop(server)


def run_wstest(args: argparse.Namespace, paths: Paths, mode: str, wlog: IO[str]) -> list[str]:
    """Runs wstest to the end (``--timeout``); what went wrong, if anything."""
    try:
        proc = wstest.start(args.wstest, mode, paths.spec, wlog)
    except OSError as error:
        return [f"wstest could not start: {error}"]
    try:
        status = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        return [f"wstest ran past --timeout {args.timeout:.0f} s and was stopped"]
    if status or wstest.index_file(paths.report) is None:
        return [f"wstest {ended(status)} {last_case(paths.wstest_log)} without writing its report"]
    return []


def ended(status: int | None) -> str:
    """How a process ended, from its return code."""
    if status is None:
        return "is still running"
    if status < 0:
        return f"was killed by signal {-status}"
    if status == 0:
        # Twisted's reactor stops cleanly on SIGTERM and SIGINT: wstest stopped from outside
        # exits with 0, without its report.
        return "exited with status 0 (as when stopped by SIGTERM or SIGINT)"
    return f"exited with status {status}"


def last_case(log: Path) -> str:
    """'after case 12.5.16 began', from the last case wstest's log says it started."""
    try:
        started = re.findall(r"Running test case ID (\S+)", log.read_text(errors="replace"))
    except OSError:
        started = []
    return f"after case {started[-1]} began" if started else "before its first case"


def connect_role(
    role: str, part: str | None, args: argparse.Namespace, paths: Paths, log: IO[str], wlog: IO[str]
) -> list[str]:
    """wstest's fuzzing server listens; our program connects once per case, then asks it to
    write the report."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    spec = wstest.spec("fuzzingserver", url, paths.report, *part_cases(role, part, args))
    paths.spec.write_text(json.dumps(spec, indent=1))
    try:
        server = wstest.start(args.wstest, "fuzzingserver", paths.spec, wlog)
    except OSError as error:
        return [f"wstest could not start: {error}"]
    try:
        problem = wait_for_port(port, server, "wstest's fuzzing server", 60)
        if problem:
            return [problem]
        command = program(role, args)
        env = dict(os.environ, AUTOBAHN_URL=url, AUTOBAHN_AGENT=wstest.AGENT)
        try:
            done = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=args.timeout
            )
        except subprocess.TimeoutExpired:
            return [f"the client ran past --timeout {args.timeout:.0f} s and was stopped"]
        problems = []
        if server.poll() is not None:
            problems.append(
                f"wstest's fuzzing server {ended(server.returncode)} during the run,"
                f" {last_case(paths.wstest_log)}"
            )
        if done.returncode != 0:
            problems.append(f"the client ({' '.join(command)}) {ended(done.returncode)}")
        return problems
    finally:
        stop(server)


#: One wstest run: a role, and the part of it (a pattern of :data:`SPLIT`, or ``None``).
Unit = tuple[str, str | None]


def unit_name(unit: Unit) -> str:
    role, part = unit
    return role if part is None else f"{role} ({part})"


class Progress:
    """Which roles' runs wait, run or are done, and how many cases each role has started."""

    def __init__(self, units: list[Unit], reports: Path) -> None:
        self.units = units
        self.roles = list(dict.fromkeys(role for role, _ in units))
        self.reports = reports
        self.started: dict[Unit, float] = {}
        self.took: dict[Unit, float] = {}
        self.lock = threading.Lock()

    def run(self, unit: Unit, args: argparse.Namespace) -> None:
        with self.lock:
            self.started[unit] = time.monotonic()
        try:
            problems = run_role(*unit, args)
        except Exception as error:  # shown now, and judged as a role without results
            problems = [f"the runner failed: {error!r}"]
        finally:
            with self.lock:
                self.took[unit] = time.monotonic() - self.started[unit]
        trouble = f" ({'; '.join(problems)})" if problems else ""
        print(f"compliance: {unit_name(unit)} done in {self.took[unit]:.0f} s{trouble}", flush=True)

    def role_took(self, role: str) -> float:
        """From the first of the role's runs starting to the last one ending."""
        units = [unit for unit in self.units if unit[0] == role]
        began = min(self.started[unit] for unit in units)
        return max(self.started[unit] + self.took[unit] for unit in units) - began

    def line(self) -> str:
        shown = []
        with self.lock:
            for role in self.roles:
                units = [unit for unit in self.units if unit[0] == role]
                if all(unit in self.took for unit in units):
                    shown.append(f"{role} done")
                elif not any(unit in self.started for unit in units):
                    shown.append(f"{role} waiting")
                else:
                    counts = [
                        cases_started(Paths(self.reports, *unit).wstest_log, unit in self.took)
                        for unit in units
                        if unit in self.started
                    ]
                    if len(counts) < len(units) or None in counts:
                        shown.append(f"{role} starting")
                    else:
                        done = sum(count[0] for count in counts if count is not None)
                        total = sum(count[1] for count in counts if count is not None)
                        shown.append(f"{role} {done}/{total}")
        return ", ".join(shown)


def cases_started(log: Path, ended: bool = False) -> tuple[int, int] | None:
    """(done, total) from wstest's log: it prints the total, then a line per case started;
    ``None`` before it has said the total. All are done once the run has `ended`."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    total = re.search(r"will run (\d+) test cases", text)
    if total is None:
        return None
    if ended:
        return int(total.group(1)), int(total.group(1))
    # The case in progress has started but is not done.
    done = max(text.count("Running test case ID") - 1, 0)
    return done, int(total.group(1))


def matches(case: str, wanted: list[str]) -> bool:
    """Whether `case` matches one of `wanted` as wstest matches them: a pattern with '*'
    (any text) as a regular expression from the start of the id, another one exactly."""
    return any(
        re.match(re.escape(pattern).replace(r"\*", ".*"), case)
        if "*" in pattern
        else case == pattern
        for pattern in wanted
    )


def selected(case: str, role: str, args: argparse.Namespace) -> bool:
    """Whether this run asked wstest for `case` in `role`."""
    return matches(case, patterns(args.cases) or ["*"]) and not matches(case, excluded(role, args))


def rank(behavior: str, behavior_close: str) -> int:
    return max(RANK.get(behavior, WORST), RANK.get(behavior_close, WORST))


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in case_id.split("."))


def load_expected(role: str, args: argparse.Namespace, got: dict[str, Case]) -> dict[str, str]:
    """The role's expectations ("OK/OK" per case id); with ``--update``, first rewritten
    from this run's results (the cases not run keep theirs)."""
    path = args.expected / f"{role}.json"
    expected: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    if args.update:
        expected.update({case_id: case.result for case_id, case in got.items()})
        expected = dict(sorted(expected.items(), key=lambda item: case_key(item[0])))
        path.write_text(json.dumps(expected, indent=1) + "\n")
    return {case: want for case, want in expected.items() if selected(case, role, args)}


def judge(role: str, args: argparse.Namespace) -> tuple[int, int]:
    """Compares one role's results with its expectations and prints the verdict, with the
    causes when it fails; returns (passed, failed). A role run in parts (:func:`parts`) is
    judged on all of them together."""
    paths = Paths(args.reports, role)
    # The parts the last run wrote (run_roles removes those of the run before).
    every = [other for other in all_paths(args.reports, role) if other.folder.is_dir()] or [paths]
    problems: list[str] = []
    got: dict[str, Case] = {}
    for unit in every:
        prefix = "" if unit.folder == paths.folder else f"{unit.folder.name}: "
        problems += [prefix + problem for problem in read_problems(unit)]
        try:
            got.update(wstest.read_report(unit.report))
        except ValueError as error:
            problems.append(prefix + str(error))
    expected = load_expected(role, args, got)
    counts = collections.Counter(case.behavior for case in got.values())
    shown = ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"
    if not expected:
        print(f"compliance: {role}: FAILED: no expectations in {args.expected / f'{role}.json'}")
        return 0, 1
    worse = [
        (got[case], want)
        for case, want in sorted(expected.items(), key=lambda item: case_key(item[0]))
        if case in got and rank(got[case].behavior, got[case].behavior_close) > rank(*split(want))
    ]
    missing = sorted((case for case in expected if case not in got), key=case_key)
    failed = len(worse) + len(missing)
    passed = len(expected) - failed
    if failed == 0 and not problems:
        print(f"compliance: {role}: {len(got)} cases ({shown}), all {passed} as expected")
        return passed, 0
    print(
        f"compliance: {role}: FAILED: {failed} of {len(expected)} cases not as expected"
        f" ({len(got)} results: {shown})"
    )
    for problem in problems:
        print(f"  {problem}")
    show_worse(worse)
    show_missing(missing, got, paths)
    for unit in every:
        show_tail(unit.program_log, "our program's output")
        show_tail(unit.wstest_log, "wstest's output")
    return passed, max(failed, 1)


def split(want: str) -> tuple[str, str]:
    behavior, _, closing = want.partition("/")
    return behavior, closing


def read_problems(paths: Paths) -> list[str]:
    try:
        problems = json.loads(paths.problems.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [str(problem) for problem in problems] if isinstance(problems, list) else []


def show_worse(worse: list[tuple[Case, str]]) -> None:
    """Each case worse than expected: the first ones with what their report says."""
    for case, want in worse[:EXPLAINED]:
        print(f"  case {case.id}: {case.result}, expected {want}")
        for key, text in wstest.explain(case).items():
            print(f"      {key}: {clip(text, 300)}")
    rest = [case.id for case, _ in worse[EXPLAINED:]]
    if rest:
        print(f"  {cases(len(rest))} more worse than expected: {', '.join(rest)}")


def show_missing(missing: list[str], got: dict[str, Case], paths: Paths) -> None:
    if not missing:
        return
    if not got:
        index = paths.report / "index.json"
        print(
            f"  no results at all: wstest wrote no report ({relative(index)});"
            f" all {len(missing)} cases expected are missing"
        )
        return
    ids = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
    print(f"  {cases(len(missing))} missing from wstest's report: {ids}")


def show_tail(log: Path, what: str) -> None:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        print(f"  {what}: no log ({relative(log)})")
        return
    if not lines:
        print(f"  {what}: nothing ({relative(log)} is empty)")
        return
    print(
        f"  {what}, the last {min(len(lines), LOG_TAIL)} of {len(lines)} lines of {relative(log)}:"
    )
    for line in lines[-LOG_TAIL:]:
        print(f"    | {clip(line, 200)}")


def cases(n: int) -> str:
    return f"{n} case" if n == 1 else f"{n} cases"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_roles(value: str) -> list[str]:
    roles = list(ROLES) if value == "all" else patterns(value)
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        raise argparse.ArgumentTypeError(f"roles are {', '.join(ROLES)} or all, not {value!r}")
    return roles


def run_roles(roles: list[str], args: argparse.Namespace) -> None:
    """Runs the roles (each in its parts, :func:`parts`), `args.jobs` wstest runs at a time,
    printing the progress as they go."""
    units: list[Unit] = [(role, part) for role in roles for part in parts(role, args)]
    for role in roles:
        # wstest writes its report only at the end (none if it is stopped): an earlier run's
        # must not be judged instead, nor a part of one that this run does not split off.
        for paths in all_paths(args.reports, role):
            shutil.rmtree(paths.folder, ignore_errors=True)
    progress = Progress(units, args.reports)
    pending = list(units)
    running: list[threading.Thread] = []
    last_report = started = time.monotonic()
    while pending or running:
        running = [thread for thread in running if thread.is_alive()]
        while pending and len(running) < (args.jobs or len(units)):
            unit = pending.pop(0)
            thread = threading.Thread(target=progress.run, args=(unit, args), daemon=True)
            thread.start()
            running.append(thread)
        if running and time.monotonic() - last_report >= args.progress:
            last_report = time.monotonic()
            print(f"compliance: {last_report - started:.0f} s: {progress.line()}", flush=True)
        if running:
            running[0].join(0.5)
    took = ", ".join(f"{role} {progress.role_took(role):.0f} s" for role in roles)
    print(f"compliance: ran in {time.monotonic() - started:.0f} s ({took})", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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
    parser.add_argument(
        "--no-split",
        action="store_true",
        help=f"one wstest run per role (by default the asyncio roles run {', '.join(SPLIT)} apart)",
    )
    parser.add_argument(
        "--jobs", type=int, default=0, help="wstest runs at a time (default: all at once)"
    )
    parser.add_argument("--progress", type=float, default=30, help="seconds between reports")
    parser.add_argument("--update", action="store_true", help="write the expectations")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds, for each role")
    parser.add_argument("--no-run", action="store_true", help="judge the reports of the last run")
    parser.add_argument(
        "--wstest",
        default=os.environ.get("WSTEST"),
        help="the wstest to run ($WSTEST; by default compliance/install.sh installs one)",
    )
    parser.add_argument(
        "--program", help="run this script instead of the roles' echo programs (tests the runner)"
    )
    parser.add_argument(
        "--reports", type=Path, default=HERE / "reports", help="where the reports go"
    )
    parser.add_argument(
        "--expected", type=Path, default=HERE / "expected", help="the expectations' folder"
    )
    args = parser.parse_args(argv)
    if args.jobs < 0:
        parser.error("--jobs must be at least 1 (or 0: all at once)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    roles: list[str] = args.role
    args.reports.mkdir(parents=True, exist_ok=True)
    if not args.no_run:
        if args.wstest is None:
            print("compliance: installing wstest if needed (about a minute the first time)")
            args.wstest = wstest.install()
        print(f"compliance: wstest is {args.wstest}", flush=True)
        run_roles(roles, args)
    verdicts = [judge(role, args) for role in roles]
    passed, failed = (sum(column) for column in zip(*verdicts, strict=True))
    print(f"autobahn: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
