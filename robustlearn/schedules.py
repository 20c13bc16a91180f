"""Step-wise learning-rate schedules defined on training progress, not on a step count fixed at the start.

A run whose epochs change length (a strategy trains some epochs on a subset: InfoBatch, online batch selection,
DivideMix's labelled set) has no step count known in advance: Lightning's `estimated_stepping_batches` assumes
full epochs, and a one-cycle schedule sized with it stops far from its floor. Here the rate is a function of
progress t in [0, 1],

    t = (epoch + steps done in this epoch / steps in this epoch) / epochs,

read from the trainer at every step, so the schedule ends at its floor whatever the epochs' lengths, and a resumed
run (whose progress is restored) continues on the same curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from robustlearn.budget import time_budget


def training_progress(trainer: pl.Trainer | None) -> float:
    """t after the step just taken (0 before training): the largest share used of the run's budgets, epochs and,
    where set, `trainer.max_steps` (optimiser steps) and `trainer.max_time` (training time, evaluation excluded)."""
    if trainer is None or not trainer.max_epochs:
        return 0.0
    steps = trainer.num_training_batches
    done = trainer.fit_loop.epoch_loop.batch_idx + 1
    within = done / steps if isinstance(steps, int) and steps > 0 else 0.0
    t = (trainer.current_epoch + within) / trainer.max_epochs
    max_steps = getattr(trainer, "max_steps", -1)
    if max_steps and max_steps > 0:
        t = max(t, trainer.global_step / max_steps)
    budget = time_budget(trainer)
    if budget is not None:
        t = max(t, budget.spent())
    return min(max(t, 0.0), 1.0)


def has_budget(trainer: pl.Trainer | None) -> bool:
    """Whether a step or time budget may end the run before its epochs."""
    return trainer is not None and ((getattr(trainer, "max_steps", -1) or -1) > 0 or time_budget(trainer) is not None)


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def one_cycle(t: float, peak: float, pct_start: float, low: float, high: float, div: float = 25.0,
              final_div: float = 1e4) -> tuple[float, float]:
    """(lr, momentum) of the one-cycle policy (Smith & Topin 2019) at progress t, as torch's `OneCycleLR` with cosine
    annealing: lr rises from peak/div to peak over `pct_start`, then falls to peak/div/final_div; momentum moves the
    other way between `high` and `low`."""
    if t < pct_start:
        pct = t / pct_start
        return _cos(peak / div, peak, pct), _cos(high, low, pct)
    pct = (t - pct_start) / (1.0 - pct_start)
    return _cos(peak, peak / div / final_div, pct), _cos(low, high, pct)


class OneCycleOnProgress(torch.optim.lr_scheduler.LRScheduler):
    """One-cycle on training progress; cycles SGD momentum (or Adam's beta1) between 0.85 and 0.95 as torch's
    `OneCycleLR` does."""

    def __init__(self, optimizer: torch.optim.Optimizer, pct_start: float, progress: Callable[[], float],
                 low_momentum: float = 0.85, high_momentum: float = 0.95):
        self.progress = progress
        self.pct_start = pct_start
        self.low_momentum, self.high_momentum = low_momentum, high_momentum
        self.peaks = [g["lr"] for g in optimizer.param_groups]
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        t = self.progress()
        out = []
        for group, peak in zip(self.optimizer.param_groups, self.peaks):
            lr, momentum = one_cycle(t, peak, self.pct_start, self.low_momentum, self.high_momentum)
            if "momentum" in group and group["momentum"] > 0:
                group["momentum"] = momentum
            elif "betas" in group:
                group["betas"] = (momentum, *group["betas"][1:])
            out.append(lr)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "progress")}


class CosineOnProgress(torch.optim.lr_scheduler.LRScheduler):
    """Cosine decay from the initial rate to `min_lr` on training progress, stepped every batch: the schedule of a run
    with a step or time budget, which follows whichever budget ends the run first."""

    def __init__(self, optimizer: torch.optim.Optimizer, min_lr: float, progress: Callable[[], float]):
        self.progress = progress
        self.min_lr = min_lr
        self.peaks = [g["lr"] for g in optimizer.param_groups]
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        t = self.progress()
        return [_cos(peak, self.min_lr, t) for peak in self.peaks]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "progress")}
