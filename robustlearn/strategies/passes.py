"""`train_pass`: one pass of plain cross-entropy training on given batches, outside the run's own steps.

Written once for the methods that train a network of their own, or part of the run's network, between or before the
run's epochs: confident learning's cross-validation folds, RHO-LOSS's irreducible-loss model and PES's refinements.
Each caller keeps its own random streams (which positions form a batch, and the generator of the augmented views),
so that this helper draws nothing itself: per step it augments the batch from `views`, runs the forward (under
`autocast` where given), takes cross-entropy on the first `classes` logits in float32, and steps the optimiser, after
clipping the gradient norm (`clip` > 0) and before stepping `schedule` (a per-step learning-rate schedule). Dropout
draws from the global stream, as it would in the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


def bf16_autocast(trainer: pl.Trainer, device: torch.device):
    """The autocast of the run's `trainer.precision` for a forward outside Lightning's steps (bf16 only)."""
    if str(trainer.precision).startswith("bf16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_pass(net: nn.Module, dm, x: torch.Tensor, y: torch.Tensor, batches: Iterable[torch.Tensor],
               views: torch.Generator, optimizer: torch.optim.Optimizer, device: torch.device, *,
               classes: int | None = None, schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
               clip: float = 0.0,
               autocast: Callable[[], contextlib.AbstractContextManager] | None = None) -> torch.Tensor:
    """Train `net` one step per entry of `batches` (positions into `x` and `y`); the pass's mean loss, a tensor on
    `device` (0 for no batch). The network's mode, and which of its parameters train, are the caller's to set."""
    total, steps = torch.zeros((), device=device), 0
    with torch.enable_grad():
        for pos in batches:
            xb = dm.augment(x[pos.to(x.device)].to(device, non_blocking=True), views)
            yb = y[pos.to(y.device)].to(device, non_blocking=True)
            with autocast() if autocast is not None else contextlib.nullcontext():
                logits = net(xb)
            loss = F.cross_entropy((logits if classes is None else logits[:, :classes]).float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), float(clip))
            optimizer.step()
            if schedule is not None:
                schedule.step()
            total, steps = total + loss.detach(), steps + 1
    return total / max(steps, 1)
