"""The GPU suite's CPU mode: every part runs for a few seconds and lands in suite.json and suite.md.

Slow tier (`make test-slow`): the dry run takes about 100 s on 2 cores, a third of the default tier's budget. How long
it takes is the machine's business, not a test's: `benchmarks/gpu_suite.py` prints its own timings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_gpu_suite_dry_run(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "--out", str(tmp_path), "--dry-run",
                           "--budget-s", "300"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads((tmp_path / "suite.json").read_text())
    parts = r["parts"]
    assert [row["compiled"] for row in parts["throughput"]] == [False, True]
    assert all(row["status"] == "completed" and row["ratio"] > 0 for row in parts["throughput"])
    assert [row["workers"] for row in parts["sweep_throughput"]] == [1, 2]
    assert all(row["runs_per_min"] > 0 for row in parts["sweep_throughput"])
    assert parts["sweep_throughput"][0]["speedup"] == 1.0
    for key in ("methods", "leaderboard"):
        assert not parts[key]["stopped_by_budget"] and "| ce |" in parts[key]["leaderboard"]
    assert "| elr |" in parts["leaderboard"]["leaderboard"]
    md = (tmp_path / "suite.md").read_text()
    assert "## Throughput" in md and "## Sweep throughput" in md and "## Leaderboard" in md
