"""The benchmark suite runs end to end and writes its files (never a timing check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("picows")
pytest.importorskip("matplotlib")
pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--sections",
        "echo",
        "--variants",
        "plain",
        "--sizes",
        "256",
        "--modes",
        "64",
        "--impls",
        "wschannel,picows",
        "--reps",
        "1",
        "--warmup",
        "0.05",
        "--duration",
        "0.1",
        "--out",
        str(out),
    ]
    subprocess.run(command, cwd=ROOT, check=True, timeout=60, capture_output=True)
    return out


def test_benchmarks_write_one_record_per_measurement(results: Path) -> None:
    records = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    sections = [record["section"] for record in records]
    assert sections == ["meta", "echo", "echo", "end"]
    meta = records[0]
    assert meta["nproc"] >= 1
    assert meta["versions"]["wschannel"]
    echoes = records[1:3]
    assert {record["impl"] for record in echoes} == {"wschannel", "picows"}
    for record in echoes:
        assert "error" not in record
        assert record["size"] == 256
        assert record["inflight"] == 64
        assert record["msgs_per_s"] > 0
        assert record["mb_per_s"] > 0


def test_benchmarks_write_a_table_of_medians_and_ratios(results: Path) -> None:
    table = (results / "table.md").read_text()
    assert "| cell | wschannel | picows |" in table
    assert "Ratio to picows:" in table
    row = next(line for line in table.splitlines() if line.startswith("| pipelined (64), 256 B"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[1].replace(",", "")) > 0
    assert "1.00\N{MULTIPLICATION SIGN}" in table
    assert "## Targets" in table


def test_benchmarks_draw_plots(results: Path) -> None:
    for name in ("echo_plain.png", "ratio_to_picows.png"):
        assert (results / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_script(module: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=ROOT,
        timeout=timeout,
        capture_output=True,
        text=True,
    )


def test_capacity_holds_every_connection_and_closes_them_with_1001(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    args = ("--connections", "200", "--idle-wait", "0.5", "--out", str(out))
    done = run_script("capacity", *args, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checks: all passed" in done.stdout
    assert "| 200 plain |" in done.stdout
    assert "| 200 permessage-deflate |" in done.stdout
    record = json.loads(out.read_text())
    assert record["date"] and "commit" in record
    runs = record["runs"]
    assert [run["compression"] for run in runs] == [False, True]
    for run in runs:
        assert run["problems"] == []
        assert run["opened"] == run["echo_answered"] == run["server_connections"] == 200
        assert run["client_close_codes"] == {"1001": 200}
        assert run["rss_with_all"] > run["rss_before"] > 0
        assert run["bytes_per_connection"] > 0


def test_soak_runs_every_kind_of_connection_and_judges_memory(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ("--minutes", "0.1", "--connections", "30", "--sample-interval", "1", "--out", str(out))
    done = run_script("soak", *args, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: too short to judge" in done.stdout
    assert "errors: none" in done.stdout
    assert "server after the load: 0 connections, 0 handlers" in done.stdout
    report = json.loads(out.read_text())
    assert report["date"] and "commit" in report
    assert len(report["samples"]) >= 4
    assert all(sample["rss"] > 0 for sample in report["samples"])
    counts = report["load"]["counts"]
    for kind in report["slots"]:  # a reset may happen in the upgrade request
        assert counts.get(f"opened {kind}", 0) + counts.get(f"{kind}: in the handshake", 0), kind
    assert counts["received"] > 0
    assert any(key.startswith("hostile ") for key in counts)
    assert report["problems"] == {}


# -- the native section's CPU figures (issue 15) ------------------------------------------

#: A child that, for each number it reads, spins until its own CPU time has grown by that
#: many seconds (or 30 s of wall time passed), then says so; between requests it waits,
#: idle, in the read.
SPINNER = """
import sys, time
print("ready", flush=True)
for line in sys.stdin:
    start, deadline = time.process_time(), time.monotonic() + 30
    while time.process_time() - start < float(line) and time.monotonic() < deadline:
        pass
    print(time.process_time() - start, flush=True)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the native section reads CPU times on Linux")
def test_cpu_seconds_counts_a_busy_process_and_not_an_idle_one() -> None:
    from wschannel.bench.native import cpu_seconds

    child = subprocess.Popen(
        [sys.executable, "-c", SPINNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        before = cpu_seconds(child.pid)  # the child waits in its read
        child.stdin.write("0.3\n")
        child.stdin.flush()
        spun = float(child.stdout.readline())
        busy = cpu_seconds(child.pid)
        assert spun >= 0.3, "the child ran out of wall time"
        # What the child counted of its own CPU time, and a little for the two lines.
        assert spun <= busy - before <= spun + 0.05
        # Idle in its read for a while (the sleep is the window measured, not a wait for it).
        time.sleep(0.3)
        assert cpu_seconds(child.pid) - busy < 0.01
    finally:
        child.stdin.close()
        child.wait(10)


def test_native_records_with_cpu_figures_make_a_capacity_table() -> None:
    from wschannel.bench import report
    from wschannel.bench.native import cpu_figures

    records: list[dict[str, Any]] = [{"section": "meta"}]
    # The same rate from every server; their CPU differs. fastwebsockets costs least.
    for impl, server_cpu in (
        ("wschannel", 0.1),
        ("picows", 0.2),
        ("tokio-tungstenite", 0.125),
        ("fastwebsockets", 0.08),
    ):
        window = {"seconds": 0.5, "server_cpu_s": server_cpu, "loadgen_cpu_s": 0.45}
        for cell, connections in (("load 100", 100), ("plain pipelined 256 B", 1)):
            record: dict[str, Any] = {"section": "native", "impl": impl, "cell": cell}
            record |= {"connections": connections, "rate": 10_000.0, "msgs_per_s": 10_000.0}
            record |= cpu_figures(10_000.0, window)
            records.append(record)
    records.append({"section": "native", "impl": "picows", "cell": "load 1000", "rate": 5.0})
    figures = records[1]
    assert figures["server_busy"] == pytest.approx(0.2)
    assert figures["loadgen_busy"] == pytest.approx(0.9)
    assert figures["capacity"] == pytest.approx(50_000)  # rate / busy
    assert "capacity" not in cpu_figures(
        1.0, {"seconds": 0.5, "server_cpu_s": 0.0, "loadgen_cpu_s": 0}
    )

    table = report.markdown(report.Results(records))
    section = table[table.index("### Capacity") :]
    row = next(line for line in section.splitlines() if line.startswith("| load 100 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == [
        "load 100",
        "50,000 (20%)",
        "25,000 (40%)",
        "40,000 (25%)",
        "62,500 (16%)",
        "90%",
        "0.80\N{MULTIPLICATION SIGN}",
        "2.00\N{MULTIPLICATION SIGN}",
    ]
    assert "| load 1000 | " in section  # a record without CPU figures: dashes, no failure
    assert "the load generator is the cap" in section.replace("\n", " ")
    # The targets take the cells of many connections only (not the pipelined one).
    targets = {
        line.split("|")[1].strip(): line.split("|")[3].strip()
        for line in table[table.index("## Targets") :].splitlines()
        if line.startswith("| server capacity under the native load generator")
    }
    assert list(targets.values()) == ["0.80\N{MULTIPLICATION SIGN}", "2.00\N{MULTIPLICATION SIGN}"]


@pytest.mark.skipif(
    not os.environ.get("WSCHANNEL_NATIVE_BIN") or sys.platform != "linux",
    reason="WSCHANNEL_NATIVE_BIN names built native programs (benchmarks/native)",
)
def test_loadgen_reads_the_servers_cpu_time_over_its_window() -> None:
    from wschannel.bench import native
    from wschannel.bench.processes import Worker

    folder = Path(os.environ["WSCHANNEL_NATIVE_BIN"])
    server = Worker([str(folder / "anchor-server"), "--impl", "fastwebsockets", "--port", "0"])
    try:
        port = server.receive(timeout=30)["port"]
        settings = SimpleNamespace(warmup=0.2, duration=0.5, tls_dir="")
        cell = native.Cell("load 10", "echo", 10, 41, 1, False)
        answer = native.measure(folder, f"ws://127.0.0.1:{port}/", cell, settings, server.pid)
    finally:
        server.close()
    window = answer["window"]
    assert window["read_by"] == "loadgen"
    assert window["seconds"] == answer["seconds"] >= 0.5
    # The server echoed answer["count"] messages in the window: it was busy, within one core.
    assert answer["count"] > 0
    assert 0 < window["server_cpu_s"] <= window["seconds"] * 1.05
    assert 0 < window["loadgen_cpu_s"] <= window["seconds"] * 1.05
    figures = native.cpu_figures(answer["count"] / answer["seconds"], window)
    assert figures["capacity"] == pytest.approx(answer["count"] / window["server_cpu_s"])
