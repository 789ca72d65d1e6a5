"""benchmarks/pubsub.py runs end to end, small: its native load generator opens the
subscribers, says which worker has each, and accounts the CPU of every process; every paced
message reaches every subscriber. No timing is checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TIMEOUT
from pubsub.brokers import missing

ROOT = Path(__file__).parent.parent
SUBSCRIBERS = 40


def test_the_benchmark_accounts_every_process_and_delivers_every_paced_message(
    tmp_path: Path,
) -> None:
    for name in ("redis-server", "nats-server"):
        if reason := missing(name):
            pytest.skip(reason)
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler for the load generator")
    out = tmp_path / "pubsub.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.pubsub",
        "--subscribers",
        str(SUBSCRIBERS),
        "--warmup",
        "0.2",
        "--duration",
        "0.6",
        "--window",
        "16",
        "--pause",
        "5",
        "--read-delay",
        "5",
        "--repeat",
        "2",
        "--out",
        str(out),
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=6 * TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert [run["run"] for run in record["runs"]] == [1, 2]
    assert "2 runs" in record["summary"]
    for run in record["runs"]:
        assert [r["setup"] for r in run["results"]] == ["local", "redis", "nats"]
        for result in run["results"]:
            workers = 1 if result["setup"] == "local" else 2
            saturation, paced = result["saturation"], result["paced"]
            assert not saturation["stalled"]
            assert saturation["deliveries"] > 0
            # paced: each message sent in the window reached every subscriber, and each
            # delivery has the kernel's receive time
            assert paced["deliveries"] == paced["expected"] > 0
            assert paced["stamped"] == paced["reads"] > 0
            assert 0 < paced["p50_us"] <= paced["p99_us"] <= paced["max_us"]
            assert paced["p99_us"] <= paced["read_p99_us"]
            for measured in (saturation, paced):
                servers = [p for p in measured["processes"] if p["role"].startswith("worker")]
                assert len(servers) == workers
                assert sum(p["subscribers"] for p in servers) == SUBSCRIBERS
                assert sum("(publisher)" in p["role"] for p in servers) == 1
                roles = [p["role"] for p in measured["processes"]]
                assert roles[-1] == "load generator"
                assert ("broker" in roles) == (workers == 2)
                assert all(p["cpu_share"] >= 0 for p in measured["processes"])
                assert measured["server_cpu_ms_per_1000"] > 0
                assert measured["other_cpu_share"] >= 0 and measured["steal_share"] >= 0
