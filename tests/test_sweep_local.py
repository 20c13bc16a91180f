"""Sweep runners with a stand-in `fit` that records a row after a short sleep: concurrency, skipping,
failures, killed children, GPU assignment, Ctrl-C and resuming; and the same with the real `fit`."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from robustlearn.errors import ConfigError
from robustlearn.sweep import expand, run_sweep
from robustlearn.sweep.local import LocalRunner
from robustlearn.sweep.progress import SweepProgress
from robustlearn.sweep.run import config_paths, write_configs
from robustlearn.tracking.store import ResultsStore
from tests.sweep_stub import max_overlap, rows, sweep_file, write_stub


@pytest.fixture
def stub(tmp_path) -> list[str]:
    return write_stub(tmp_path)


def test_runs_everything_then_skips_it(tmp_path, stub, monkeypatch):
    # Runs long enough that two started together overlap even on a loaded machine.
    monkeypatch.setenv("STUB_SLEEP", "1.5")
    path = sweep_file(tmp_path)
    summary = run_sweep(path, workers=2, quiet=True, command=stub)
    assert summary.exit_code == 0, summary.failed
    assert sorted(summary.completed) == sorted(r.run_id for r in expand(path))
    timeline = (tmp_path / "runs" / "timeline.txt").read_text()
    assert 1 < max_overlap(tmp_path) <= 2, timeline
    for run in summary.runs:  # the resolved config went to `fit` from <root>/.sweep/<name>/
        written = tmp_path / "runs" / ".sweep" / "stubbed" / f"{run.run_id}.yaml"
        assert written.read_text() == run.config_yaml
    again = run_sweep(path, workers=2, quiet=True, command=stub)
    assert again.completed == [] and sorted(again.skipped) == sorted(summary.completed)
    assert len(rows(tmp_path)) == 4


def test_a_failed_run_is_reported_and_the_sweep_goes_on(tmp_path, stub, monkeypatch):
    monkeypatch.setenv("STUB_FAIL_SEED", "1")
    path = sweep_file(tmp_path, seeds=(0, 1, 2))
    summary = run_sweep(path, workers=1, quiet=True, command=stub)
    assert summary.exit_code == 1
    assert len(summary.completed) == 2 and len(summary.failed) == 1
    ((rid, why),) = summary.failed.items()
    assert "-s1-" in rid
    assert "stub failure" in why
    # a second invocation tries the failed run again (only it)
    monkeypatch.delenv("STUB_FAIL_SEED")
    again = run_sweep(path, workers=1, quiet=True, command=stub)
    assert again.completed == [rid] and len(again.skipped) == 2


def test_a_child_killed_without_a_row_counts_failed_and_is_rerun(tmp_path, stub, monkeypatch):
    path = sweep_file(tmp_path, seeds=(0, 1))
    runs = expand(path)
    paths = config_paths("stubbed", runs)
    write_configs(runs, paths)
    monkeypatch.setenv("STUB_HANG_SEED", "0")
    progress = SweepProgress("stubbed", 2, quiet=True)
    runner = LocalRunner(runs, paths, workers=2, progress=progress, command=stub)
    started = runner._start

    def start_and_kill(spec):  # the hanging run is SIGKILLed a moment after it starts
        proc, gpus, log = started(spec)
        if spec.seed == 0:
            subprocess.Popen(["sh", "-c", f"sleep 1.5; kill -9 {proc.pid}"])
        return proc, gpus, log

    runner._start = start_and_kill
    out = runner.run()
    assert out.completed == [runs[1].run_id]
    assert "killed by SIGKILL" in out.failed[runs[0].run_id]
    assert [r["run_id"] for r in rows(tmp_path)] == [runs[1].run_id]
    monkeypatch.delenv("STUB_HANG_SEED")
    again = run_sweep(path, workers=2, quiet=True, command=stub)
    assert again.completed == [runs[0].run_id] and again.skipped == [runs[1].run_id]


def test_runs_left_with_a_checkpoint_resume_failed_ones_start_again(tmp_path, stub, capsys):
    path = sweep_file(tmp_path, seeds=(0, 1, 2))
    runs = expand(path)
    for run in runs[:2]:
        ckpt = tmp_path / "runs" / run.run_id / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
    ResultsStore(tmp_path / "runs" / "results.sqlite").record(
        {"run_id": runs[1].run_id, "config_hash": runs[1].config_hash, "status": "failed"}
    )
    plan = run_sweep(path, dry_run=True)
    assert plan.resumed == [runs[0].run_id]
    assert "resume" in capsys.readouterr().out
    summary = run_sweep(path, workers=2, quiet=True, command=stub)
    assert summary.resumed == [runs[0].run_id] and len(summary.completed) == 3
    resumed = {r["run_id"]: r["resumed"] for r in rows(tmp_path)}
    assert resumed == {runs[0].run_id: True, runs[1].run_id: False, runs[2].run_id: False}


def test_gpus_are_shared_round_robin_least_busy_first(tmp_path, stub, monkeypatch):
    monkeypatch.setenv("STUB_SLEEP", "0.5")
    path = sweep_file(tmp_path, seeds=(0, 1, 2, 3, 4))
    runs = [replace(r, accelerator="gpu") for r in expand(path)]
    paths = config_paths("stubbed", runs)
    write_configs(runs, paths)
    runner = LocalRunner(
        runs, paths, workers=3, progress=SweepProgress("s", 5, quiet=True), command=stub, gpus=["0", "1"]
    )
    assert not runner.run().failed
    logs = [paths[r.run_id].with_suffix(".log").read_text().split()[1] for r in runs]
    assert logs[:3] == ["0", "1", "0"]  # three at once over two GPUs: one GPU holds two
    assert set(logs) == {"0", "1"}
    assert runner.load == {"0": 0, "1": 0}


def test_too_many_devices_for_the_visible_gpus_is_a_config_error(tmp_path, stub):
    runs = [replace(r, accelerator="gpu", devices=4) for r in expand(sweep_file(tmp_path))]
    with pytest.raises(ConfigError) as err:
        LocalRunner(runs, {}, workers=1, progress=SweepProgress("s", 1, quiet=True), gpus=["0", "1"])
    assert err.value.key == "trainer.devices"


def children(pid: int) -> list[int]:
    """Live (not zombie) child processes of `pid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def kill_one_then_interrupt(proc: subprocess.Popen, store: Path, timeout: float = 120) -> list[int]:
    """Once a run has completed: SIGKILL one running child of the sweep `proc`, then SIGINT the sweep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (store.exists() and ResultsStore(store).count() >= 1):
        time.sleep(0.1)
    killed = None
    while time.monotonic() < deadline and killed is None:
        for kid in children(proc.pid):
            try:
                os.kill(kid, signal.SIGKILL)
            except ProcessLookupError:  # it ended meanwhile: take another
                continue
            killed = kid
            break
        time.sleep(0.02)
    assert killed is not None, "no running fit child"
    time.sleep(0.5)
    kids = children(proc.pid)
    proc.send_signal(signal.SIGINT)
    return kids


def check_resumed(path: Path, tmp_path: Path, command) -> None:
    """The rows after an interruption are kept; a second invocation runs exactly the missing ones."""
    before = {r["run_id"]: r for r in rows(tmp_path)}
    done = {rid for rid, r in before.items() if r["status"] == "completed"}
    assert 1 <= len(done) < 6
    again = run_sweep(path, workers=2, quiet=True, command=command)
    assert again.exit_code == 0
    assert set(again.skipped) == done and len(again.completed) == 6 - len(done)
    after = rows(tmp_path)
    assert sorted(r["run_id"] for r in after) == sorted(r.run_id for r in expand(path))
    assert all(r["status"] == "completed" for r in after)
    unchanged = {r["run_id"] for r in after if r["finished_at"] == before.get(r["run_id"], {}).get("finished_at")}
    assert unchanged == done  # completed runs were not run again


FIT = [sys.executable, "-m", "robustlearn", "fit"]
REAL = ["data.n_train=400", "data.n_test=200", "trainer.epochs=2"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("real", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["stub", "fit"])
def test_kill_a_child_then_ctrl_c_then_resume(tmp_path, stub, real):
    path = sweep_file(tmp_path, seeds=(0, 1, 2), rates=(0.2, 0.4), extra=REAL if real else ())
    command = FIT if real else stub
    code = (
        "import sys; from robustlearn.sweep import run_sweep; "
        f"sys.exit(run_sweep(sys.argv[1], workers=2, quiet=True, command={command!r}, grace_s=20).exit_code)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env={**os.environ, "STUB_SLEEP": "1.5"})
    kids = kill_one_then_interrupt(proc, tmp_path / "runs" / "results.sqlite")
    assert proc.wait(timeout=60) == 130
    alive = [
        k
        for k in kids
        if Path(f"/proc/{k}/cmdline").exists() and str(tmp_path) in Path(f"/proc/{k}/cmdline").read_text()
    ]
    assert not alive, "children left running after Ctrl-C"
    check_resumed(path, tmp_path, command)


def test_sweep_with_the_real_fit(tmp_path):
    path = sweep_file(tmp_path, seeds=(0, 1), extra=REAL)
    summary = run_sweep(path, workers=2, quiet=True)
    assert summary.exit_code == 0, summary.failed
    got = rows(tmp_path)
    assert sorted(r["run_id"] for r in got) == sorted(summary.completed)
    for row in got:
        assert row["status"] == "completed" and row["sweep"] == "stubbed" and row["experiment"] == "stubbed"
        assert row["tags"] == ["noise.rate=0.2"] and row["epochs_done"] == 2
        assert (Path(row["run_dir"]) / "metrics.csv").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_killed_real_run_resumes_from_its_checkpoint(tmp_path):
    path = sweep_file(tmp_path, seeds=(0,), extra=["data.n_train=2000", "trainer.epochs=6"])
    (run,) = expand(path)
    code = "import sys; from robustlearn.sweep import run_sweep; sys.exit(run_sweep(sys.argv[1]).exit_code)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)])
    ckpt = tmp_path / "runs" / run.run_id / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ckpt.exists():
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint was written"
    (kid,) = children(proc.pid)
    os.kill(kid, signal.SIGKILL)
    assert proc.wait(timeout=60) == 1  # the run failed for this invocation
    assert rows(tmp_path) == []
    summary = run_sweep(path, quiet=True)
    assert summary.resumed == [run.run_id] and summary.completed == [run.run_id]
    (row,) = rows(tmp_path)
    assert row["status"] == "completed" and row["epochs_done"] == 6
    with (Path(row["run_dir"]) / "metrics.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 3, 4, 5]
