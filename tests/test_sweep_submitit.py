"""The cluster backend through submitit's LocalExecutor: four runs, skipping, parameter errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustlearn.errors import ConfigError
from robustlearn.sweep import expand, run_sweep
from tests.sweep_stub import rows, write_stub
from tests.sweep_stub import sweep_file as stub_sweep

pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")


def sweep_file(tmp_path: Path, cluster: dict, extra=()) -> Path:
    return stub_sweep(tmp_path, seeds=(0, 1), rates=(0.2, 0.4), extra=extra, name="cluster", cluster=cluster)


def test_four_runs_through_the_local_executor(tmp_path):
    stub = write_stub(tmp_path)
    path = sweep_file(tmp_path, {"executor": "local", "timeout_min": 5})
    summary = run_sweep(path, workers=2, backend="submitit", quiet=True, command=stub)
    assert summary.exit_code == 0, summary.failed
    assert sorted(summary.completed) == sorted(r.run_id for r in expand(path))
    assert len(rows(tmp_path)) == 4
    assert list((tmp_path / "runs" / ".sweep" / "cluster" / "submitit").iterdir())  # submitit's job folders
    again = run_sweep(path, backend="submitit", quiet=True, command=stub)
    assert len(again.skipped) == 4 and not again.completed


@pytest.mark.parametrize(
    ("cluster", "key"),
    [({"executor": "local", "gpus_per_nod": 1}, "cluster"), ({"executor": "kubernetes"}, "cluster.executor")],
)
def test_bad_cluster_parameters_stop_before_anything_runs(tmp_path, cluster, key):
    with pytest.raises(ConfigError) as err:
        run_sweep(sweep_file(tmp_path, cluster), backend="submitit", quiet=True, command=["false"])
    assert err.value.key == key
    assert not list((tmp_path / "runs").rglob("*.yaml")) and not (tmp_path / "runs" / "results.sqlite").exists()


@pytest.mark.slow
def test_four_real_runs_through_the_local_executor(tmp_path):
    extra = ["data.n_train=400", "data.n_test=200", "trainer.epochs=2"]
    path = sweep_file(tmp_path, {"executor": "local", "timeout_min": 10}, extra)
    summary = run_sweep(path, workers=4, backend="submitit", quiet=True)
    assert summary.exit_code == 0, summary.failed
    assert len(summary.completed) == 4
    assert len(rows(tmp_path)) == 4 and all(r["status"] == "completed" for r in rows(tmp_path))
