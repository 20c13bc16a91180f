"""Resume: a run interrupted after epoch 2 of 4 and resumed ends exactly like an uninterrupted run (CPU)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl

from robustlearn.config import load_config
from robustlearn.runner import fit
from robustlearn.tracking.recorder import is_timing_column
from robustlearn.tracking.store import ResultsStore
from tests.conftest import SMOKE


class StopAtEpoch(pl.Callback):
    """Simulates Ctrl-C when epoch `epoch` starts (epochs 0..epoch-1 are done and checkpointed)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def comparable_rows(run_dir) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if not is_timing_column(k)} for row in csv.DictReader(f)]


KEYS = ("test_acc_last", "test_acc_at_best_val", "val_acc_best", "best_epoch", "epochs_done", "status")


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_resume_matches_uninterrupted(tmp_path, scheduler):
    over = ["trainer.epochs=4", "model.dropout=0.2", f"scheduler.name={scheduler}", "data.crop_padding=0"]
    straight = fit(load_config(SMOKE, [*over, f"output.root={tmp_path / 'a'}"]), quiet=True)
    cfg_b = load_config(SMOKE, [*over, f"output.root={tmp_path / 'b'}"])
    with pytest.raises(KeyboardInterrupt):
        fit(cfg_b, quiet=True, callbacks=[StopAtEpoch(2)])
    run_b = Path(tmp_path / "b" / straight["run_id"])
    stopped = json.loads((run_b / "result.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["epochs_done"] == 2
    assert len(comparable_rows(run_b)) == 2

    resumed = fit(load_config(SMOKE, [*over, f"output.root={tmp_path / 'b'}", "resume=true"]), quiet=True)
    assert {k: resumed[k] for k in KEYS} == {k: straight[k] for k in KEYS}
    assert comparable_rows(run_b) == comparable_rows(straight["run_dir"])
    rows = ResultsStore(tmp_path / "b" / "results.sqlite").rows()
    assert [r["status"] for r in rows] == ["completed"]  # the interrupted row was replaced
