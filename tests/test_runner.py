"""`robustlearn fit`: outputs, the results row, failure recording, logging modes, loaders."""

from __future__ import annotations

import csv
import json
import re
import sqlite3

import pytest

from robustlearn.cli import main
from robustlearn.config import load_config
from robustlearn.runner import fit
from robustlearn.tracking.store import ResultsStore
from tests.conftest import SMOKE

RESULT_KEYS = {
    "run_id", "method", "dataset", "model", "noise_kind", "noise_rate", "noise_rate_actual", "seed",
    "config_hash", "status", "error", "epochs", "test_acc_last", "test_acc_at_best_val", "val_acc_best",
    "best_epoch", "train_time_s", "samples_per_s",
}
METRICS = {"epoch", "train/loss", "train/acc", "train/acc_clean", "train/memorized", "val/acc", "test/acc"}


def test_fit_writes_every_output(tmp_path, capsys):
    rc = main(["fit", str(SMOKE), f"output.root={tmp_path}"])
    out = capsys.readouterr().out
    assert rc == 0 and "completed" in out
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert str(run_dir) in out
    for name in ("config.yaml", "metrics.csv", "result.json", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    result = json.loads((run_dir / "result.json").read_text())
    assert set(result) >= RESULT_KEYS
    assert result["status"] == "completed" and result["epochs_done"] == 2
    assert abs(result["noise_rate_actual"] - 0.2) < 0.01
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len(rows) == 2 and set(rows[0]) >= METRICS
    assert result["test_acc_last"] == pytest.approx(float(rows[-1]["test/acc"]))
    best = max(rows, key=lambda r: float(r["val/acc"]))
    assert result["test_acc_at_best_val"] == pytest.approx(float(best["test/acc"]))
    # The resolved config reproduces the run's hash.
    again = load_config(run_dir / "config.yaml")
    from robustlearn.config import config_hash

    assert config_hash(again) == result["config_hash"]
    db = sqlite3.connect(tmp_path / "results.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    (row,) = ResultsStore(tmp_path / "results.sqlite").rows()
    assert row["run_id"] == result["run_id"] and row["status"] == "completed"


def test_non_finite_loss_fails_with_reason(tmp_path, capsys):
    rc = main(["fit", str(SMOKE), f"output.root={tmp_path}", "optim.lr=1e30", "scheduler.name=none", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "non-finite" in err
    (row,) = ResultsStore(tmp_path / "results.sqlite").rows()
    assert row["status"] == "failed" and "non-finite training loss" in row["error"]
    # Where it first happened: read from the device every log_every_n_steps (50) steps, so well within epoch 0.
    assert re.search(r"at epoch 0, step \d+ \(first seen there\)", row["error"]), row["error"]
    assert int(re.search(r"step (\d+)", row["error"]).group(1)) < 5


def test_same_noise_seed_same_labels_whatever_the_seed(tmp_path):
    from robustlearn.data.datamodule import RobustDataModule

    def labels(*over):
        dm = RobustDataModule(load_config(SMOKE, list(over))).load()
        return dm.splits["train"]["y"], dm.noise_info

    y0, info0 = labels("seed=0", "noise.seed=3")
    y1, _ = labels("seed=1", "noise.seed=3")
    y2, _ = labels("seed=0", "noise.seed=4")
    assert (y0 == y1).all() and not (y0 == y2).all()
    assert info0.rate_actual == pytest.approx(0.2, abs=0.005)


def test_dataloader_path_matches_device_path_shapes(tmp_path):
    res = fit(load_config(SMOKE, [f"output.root={tmp_path}", "data.loader=dataloader", "trainer.epochs=1"]),
              quiet=True)
    assert res["status"] == "completed" and res["test_acc_last"] > 0.5


def test_subset_and_no_validation_split(tmp_path):
    cfg = load_config(SMOKE, [f"output.root={tmp_path}", "data.subset=300", "data.val_fraction=0",
                              "trainer.epochs=1"])
    res = fit(cfg, quiet=True)
    assert res["train_size"] == 300 and res["val_acc_best"] is None if "val_acc_best" in res else True
    assert res["status"] == "completed"


def test_wandb_offline_writes_a_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = load_config(SMOKE, [f"output.root={tmp_path}", "logger.wandb.mode=offline", "trainer.epochs=1",
                              "tags=[smoke]"])
    res = fit(cfg, quiet=True)
    assert res["status"] == "completed"
    offline = list((tmp_path / res["run_id"] / "wandb").glob("offline-run-*"))
    assert offline, "an offline W&B run directory is written"
