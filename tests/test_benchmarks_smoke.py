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
