"""The cluster backend through submitit's LocalExecutor: four runs, skipping, parameter errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from robustlearn.errors import ConfigError
from robustlearn.sweep import expand, run_sweep
from robustlearn.tracking.store import ResultsStore

pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Stand-in for `python -m robustlearn fit CONFIG --quiet`: records a completed row and exits 0.
STUB = """
import sys
from pathlib import Path
import yaml
from robustlearn.config import config_hash
from robustlearn.tracking.store import ResultsStore
path = Path(sys.argv[1])
cfg = yaml.safe_load(path.read_text())
ResultsStore(Path(cfg["output"]["root"]) / "results.sqlite").record(
    {"run_id": path.stem, "config_hash": config_hash(cfg), "method": cfg["method"], "status": "completed"})
"""


def sweep_file(tmp_path: Path, cluster: dict, extra=()) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cluster", "base": str(CONFIGS / "experiments" / "synthetic_smoke.yaml"), "methods": ["ce"],
        "grid": {"noise.rate": [0.2, 0.4]}, "seeds": [0, 1], "cluster": cluster,
        "overrides": ["trainer.accelerator=cpu", f"output.root={tmp_path / 'runs'}", *extra],
    }))  # fmt: skip
    return path


def rows(tmp_path: Path) -> list[dict]:
    return ResultsStore(tmp_path / "runs" / "results.sqlite").rows()


def test_four_runs_through_the_local_executor(tmp_path):
    (tmp_path / "stub.py").write_text(STUB)
    stub = [sys.executable, str(tmp_path / "stub.py")]
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
