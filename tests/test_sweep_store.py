"""Concurrent writers: sweep workers record into one results.sqlite at the same time and lose no row."""

from __future__ import annotations

import subprocess
import sys

from robustlearn.tracking.store import ResultsStore

WRITER = """
import sys, time
from robustlearn.tracking.store import ResultsStore
path, worker, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
store = ResultsStore(path)
while time.time() < start:  # all writers begin together
    time.sleep(0.001)
for i in range(n):
    store.record({"run_id": f"w{worker}-{i}", "config_hash": f"h{worker}-{i}", "status": "completed",
                  "method": "ce", "seed": i, "test_acc_last": worker + i / 1000})
"""


def test_four_processes_write_fifty_rows_each(tmp_path):
    import time

    path = tmp_path / "results.sqlite"
    ResultsStore(path)
    start = time.time() + 1.5
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), "50", str(start)])
        for w in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    store = ResultsStore(path)
    rows = store.rows()
    assert store.count() == 200 and len(rows) == 200
    assert {r["run_id"] for r in rows} == {f"w{w}-{i}" for w in range(4) for i in range(50)}
    assert all(r["test_acc_last"] == int(r["run_id"][1]) + r["seed"] / 1000 for r in rows)
    assert len(store.completed_hashes()) == 200


def test_recording_a_run_again_replaces_its_row(tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    store.record({"run_id": "a", "config_hash": "h", "status": "failed"})
    store.record({"run_id": "a", "config_hash": "h", "status": "completed"})
    assert [(r["run_id"], r["status"]) for r in store.rows()] == [("a", "completed")]
