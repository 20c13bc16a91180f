"""`trainer.max_time`: a budget of training time, evaluation left out.

Lightning's own `max_time` (its `Timer` callback) counts the whole fit, validation and the per-epoch test pass
included. Two methods compared "at equal wall-clock" under it do not train for equal times: a method that finishes
fewer epochs evaluates less and so trains longer, and a schedule that follows the budget anneals on a share of time
that includes evaluation. Here the budget counts the seconds of the fit outside the validation loop (which also runs
the per-epoch test pass): training steps, strategies' epoch-level work (full passes, scoring, refits), data loading
and checkpointing. It is checked after every training batch and every epoch; when it is spent the run stops through
`trainer.should_stop`, so Lightning still validates that last, shorter epoch. The seconds spent travel in the
checkpoint, so a resumed run continues the same budget.

The clock is read on the host only (`time.perf_counter`), never by waiting for the device.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl

clock = time.perf_counter  # module-level so that tests can substitute a clock that does not depend on the machine


class TrainingTimeBudget(pl.Callback):
    """Stops the fit once `seconds` of training time (evaluation excluded) are spent."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self._before = 0.0  # training seconds of earlier fits of this run (restored from a checkpoint)
        self._started: float | None = None
        self._eval_s = 0.0
        self._eval_started: float | None = None

    @property
    def state_key(self) -> str:
        return "TrainingTimeBudget"

    def elapsed(self) -> float:
        """Training seconds spent so far, in this fit and the ones it resumes."""
        if self._started is None:
            return self._before
        now = clock()
        in_eval = now - self._eval_started if self._eval_started is not None else 0.0
        return self._before + (now - self._started) - self._eval_s - in_eval

    def spent(self) -> float:
        """The share of the budget used, in [0, 1]."""
        return min(self.elapsed() / self.seconds, 1.0)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started, self._eval_s, self._eval_started = clock(), 0.0, None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._before, self._started = self.elapsed(), None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._started is not None:
            self._eval_started = clock()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._eval_started is not None:
            self._eval_s += clock() - self._eval_started
            self._eval_started = None

    def _check(self, trainer: pl.Trainer) -> None:
        if self.elapsed() >= self.seconds:
            trainer.should_stop = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"train_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._before = float(state_dict.get("train_s", 0.0))


def time_budget(trainer: pl.Trainer | None) -> TrainingTimeBudget | None:
    """The run's training-time budget callback, if it has one."""
    return next((cb for cb in getattr(trainer, "callbacks", ()) if isinstance(cb, TrainingTimeBudget)), None)
