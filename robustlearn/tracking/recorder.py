"""RunRecorder: one `metrics.csv` row per epoch and `checkpoints/last.ckpt`, kept consistent with each other.

The recorder is a `Checkpoint` callback, so Lightning calls its `on_train_epoch_end` after the module's (as for
ModelCheckpoint): the epoch's training metrics, validation and test accuracy and every strategy's metrics are all
known there. It appends the row, rewrites `metrics.csv` and saves `last.ckpt` at that same point, which is where
Lightning's own end-of-epoch checkpoints are taken and resumed from. The rows travel in the checkpoint, so a
resumed run rewrites `metrics.csv` exactly as far as its checkpoint goes and continues from there.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint


class RunRecorder(Checkpoint):
    def __init__(self, run_dir: Path, save_checkpoint: bool = True):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.csv"
        self.ckpt_path = self.run_dir / "checkpoints" / "last.ckpt"
        self.save = save_checkpoint
        self.rows: list[dict[str, Any]] = []
        self._epoch_started: float | None = None
        self._lr = math.nan

    @property
    def state_key(self) -> str:
        return "RunRecorder"

    # ---- hooks ---------------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning keeps every metric ever logged in `callback_metrics`: one logged in an earlier epoch only would be
        # repeated in every later row (and not after a resume). Each row holds what its own epoch logged.
        trainer.callback_metrics.clear()
        self._epoch_started = time.perf_counter()
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else math.nan

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self._epoch_started is None or any(r["epoch"] == epoch for r in self.rows):
            return
        row: dict[str, Any] = {"epoch": epoch, "time_s": time.perf_counter() - self._epoch_started}
        for key, value in sorted(_epoch_metrics(trainer).items()):
            if key.endswith("_step"):
                continue
            row[key.removesuffix("_epoch")] = float(value)
        row["lr"] = self._lr  # the rate the epoch trained with (epoch-wise schedulers step before this hook)
        self.rows.append(row)
        if trainer.is_global_zero:
            self.write_csv()
        if self.save:
            self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.ckpt_path.with_suffix(".tmp")
            trainer.save_checkpoint(tmp)
            if trainer.is_global_zero:
                os.replace(tmp, self.ckpt_path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = None

    # ---- files and state -----------------------------------------------------------------------------------
    def write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        head = ["epoch"] + sorted(c for c in columns if c != "epoch")
        tmp = self.metrics_path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=head)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.metrics_path)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]
        self.write_csv()

    # ---- summary -------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Epoch-level results for result.json: last and best-validation test accuracy, time."""
        out: dict[str, Any] = {"epochs_done": len(self.rows), "train_time_s": sum(r["time_s"] for r in self.rows)}
        if not self.rows:
            return out
        last = self.rows[-1]
        out["test_acc_last"] = last.get("test/acc")
        with_val = [r for r in self.rows if r.get("val/acc") is not None]
        if with_val:
            best = max(with_val, key=lambda r: r["val/acc"])  # first epoch wins a tie
            out.update(val_acc_best=best["val/acc"], best_epoch=best["epoch"],
                       test_acc_at_best_val=best.get("test/acc"))
        return out


def _epoch_metrics(trainer: pl.Trainer) -> dict[str, Any]:
    """Validation/test metrics of this epoch plus the training metrics reduced over it.

    At `on_train_epoch_end` Lightning has marked the epoch's end but not yet copied the reduced training metrics
    into `callback_metrics`; its logger connector computes them on request.
    """
    metrics = dict(trainer.callback_metrics)
    connector = getattr(trainer, "_logger_connector", None)
    if connector is not None:
        metrics.update(connector.metrics.get("callback", {}))
    return metrics
