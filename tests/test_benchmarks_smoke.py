"""The benchmark suite runs end to end and writes its files (never a timing check)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
