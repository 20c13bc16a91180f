"""RunRecorder: one `metrics.csv` row per epoch and `checkpoints/last.ckpt`, kept consistent with each other.

An epoch's metrics are complete only once Lightning has reduced them, which is after every `on_train_epoch_end`
hook; so epoch e is recorded (and the checkpoint written) when epoch e+1 starts, and the last epoch when training
ends. Lightning resumes such a checkpoint at the start of epoch e+1. The rows travel in the checkpoint too, so a
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


class RunRecorder(pl.Callback):
    def __init__(self, run_dir: Path, save_checkpoint: bool = True):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.csv"
        self.ckpt_path = self.run_dir / "checkpoints" / "last.ckpt"
        self.save = save_checkpoint
        self.rows: list[dict[str, Any]] = []
        self._epoch_started: float | None = None

    @property
    def state_key(self) -> str:
        return "RunRecorder"

    # ---- hooks ---------------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish_epoch(trainer, trainer.current_epoch - 1)
        self._epoch_started = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish_epoch(trainer, trainer.current_epoch - 1)

    def _finish_epoch(self, trainer: pl.Trainer, epoch: int) -> None:
        if epoch < 0 or self._epoch_started is None or any(r["epoch"] == epoch for r in self.rows):
            return
        row: dict[str, Any] = {"epoch": epoch, "time_s": time.perf_counter() - self._epoch_started}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.endswith("_step"):
                continue
            row[key.removesuffix("_epoch")] = float(value)
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else math.nan
        self.rows.append(row)
        if trainer.is_global_zero:
            self.write_csv()
        if self.save:
            self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.ckpt_path.with_suffix(".tmp")
            trainer.save_checkpoint(tmp)
            if trainer.is_global_zero:
                os.replace(tmp, self.ckpt_path)

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
            out.update(val_acc_best=best["val/acc"], best_epoch=best["epoch"], test_acc_at_best_val=best.get("test/acc"))
        return out
