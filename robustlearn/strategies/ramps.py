"""Warm-ups and ramps over epochs, written once for the methods that switch on or grow with training
(truncated GCE's start epoch, ProSelfLC's trust, small-loss forget rates, loss-correction warm-ups)."""

from __future__ import annotations

import math


def linear_ramp(epoch: float, start: float, length: float) -> float:
    """0 before `start`, rising linearly to 1 over `length` epochs, then 1 (a step at `start` when length is 0)."""
    if epoch < start:
        return 0.0
    if length <= 0:
        return 1.0
    return min(1.0, (epoch - start) / length)


def sigmoid_ramp(t: float, sharpness: float, midpoint: float) -> float:
    """1 / (1 + exp(-sharpness (t - midpoint))): ProSelfLC's g(t) with t the training progress in [0, 1]."""
    z = sharpness * (t - midpoint)
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)  # no overflow for large negative z
    return e / (1.0 + e)


def warmed_up(epoch: int, warmup_epochs: int) -> bool:
    """True from epoch `warmup_epochs` on (epochs count from 0)."""
    return epoch >= warmup_epochs


def epochs_done(trainer) -> float:
    """epoch + step / steps, the training progress in epochs as the official ramps count it (the current step's
    index within the epoch)."""
    steps = trainer.num_training_batches
    step = trainer.fit_loop.epoch_loop.batch_idx
    within = step / steps if isinstance(steps, int) and steps > 0 else 0.0
    return trainer.current_epoch + within


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - clip(current, 0, length) / length)^2), 1 for length 0: Laine & Aila's ramp, as ELR+'s official
    `utils.sigmoid_rampup`."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return float(math.exp(-5.0 * phase * phase))
