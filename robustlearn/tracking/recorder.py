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

# Wall-clock columns of metrics.csv: the only ones that differ between two runs of one config (tests leave them out),
# with any strategy's column ending in "seconds" (e.g. fisher_trace/seconds).
TIMING_COLUMNS = ("time_s", "train_s", "train_s_total")


def is_timing_column(key: str) -> bool:
    return key in TIMING_COLUMNS or key.endswith("seconds")


class RunRecorder(Checkpoint):
    def __init__(self, run_dir: Path, save_checkpoint: bool = True):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.csv"
        self.ckpt_path = self.run_dir / "checkpoints" / "last.ckpt"
        self.save = save_checkpoint
        self.rows: list[dict[str, Any]] = []
        self._epoch_started: float | None = None
        self._lr = math.nan
        self._eval_s = 0.0  # this epoch's validation time, left out of train_s
        self._eval_started: float | None = None
        self._samples = 0  # samples trained on this epoch (host-side counts from the batches' shapes)

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
        self._eval_s, self._samples = 0.0, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        trained = outputs.get("batch", batch) if isinstance(outputs, dict) else batch
        self._samples += _batch_size(trained)
        if 0 < trainer.max_steps <= trainer.global_step:
            # The step budget ends the run inside an epoch: stopping through `should_stop` (as max_time does) makes
            # Lightning validate that last, shorter epoch, so the run ends with its test accuracy and a row.
            trainer.should_stop = True

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_started = time.perf_counter() if trainer.state.fn == "fit" else None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._eval_started is not None:
            self._eval_s += time.perf_counter() - self._eval_started
            self._eval_started = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self._epoch_started is None or any(r["epoch"] == epoch for r in self.rows):
            return
        elapsed = time.perf_counter() - self._epoch_started
        before = self.rows[-1] if self.rows else {}
        train_s = elapsed - self._eval_s
        # time_s: the epoch with its evaluation; train_s: without it (strategies' epoch-end work included);
        # *_total: since the start of training, carried through a resume (the rows travel in the checkpoint).
        row: dict[str, Any] = {"epoch": epoch, "time_s": elapsed, "train_s": train_s,
                               "train_s_total": before.get("train_s_total", 0.0) + train_s,
                               "samples": self._samples,
                               "samples_total": before.get("samples_total", 0) + self._samples}
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
        """Epoch-level results for result.json: last and best-validation test accuracy, time.

        A strategy that trains in stages with different networks (DAC retrains a fresh one on the samples it kept)
        logs `<name>/stage` every epoch; the best-validation epoch is then chosen among the epochs of the final stage,
        so the result is the network the method delivers, not an earlier stage's."""
        out: dict[str, Any] = {"epochs_done": len(self.rows), "train_time_s": sum(r["time_s"] for r in self.rows)}
        if not self.rows:
            return out
        last = self.rows[-1]
        out["test_acc_last"] = last.get("test/acc")
        stages = [k for k in last if k.endswith("/stage")]
        final = [r for r in self.rows if all(r.get(k) == last[k] for k in stages)]
        with_val = [r for r in final if r.get("val/acc") is not None]
        if with_val:
            best = max(with_val, key=lambda r: r["val/acc"])  # first epoch wins a tie
            out.update(val_acc_best=best["val/acc"], best_epoch=best["epoch"],
                       test_acc_at_best_val=best.get("test/acc"))
        return out


def _batch_size(batch: Any) -> int:
    """Samples in a training batch (a dict of tensors or an (x, y, index) sequence), from its shape."""
    if isinstance(batch, dict):
        for key in ("index", "y", "x"):
            if key in batch:
                return len(batch[key])
        return 0
    if isinstance(batch, (tuple, list)) and batch:
        return len(batch[0])
    return 0


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
