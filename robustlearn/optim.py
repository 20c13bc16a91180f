"""Optimisers (sgd, adam, adamw) and learning-rate schedules (none, cosine, onecycle, multistep)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from omegaconf import DictConfig

from robustlearn.schedules import CosineOnProgress, OneCycleOnProgress, has_budget, training_progress


def build_optimizer(cfg: DictConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: DictConfig, opt: torch.optim.Optimizer, epochs: int, trainer: Any) -> dict | None:
    """A Lightning lr_scheduler dict: cosine, multistep and exponential step per epoch, onecycle per batch on
    progress; under a step or time budget cosine also steps per batch on progress (it then follows the budget)."""
    if cfg.name == "none":
        return None
    if cfg.name == "cosine" and has_budget(trainer):  # follows the step / time budget, not only the epochs
        sched = CosineOnProgress(opt, cfg.min_lr, progress=lambda: training_progress(trainer))
        return {"scheduler": sched, "interval": "step"}
    if cfg.name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=cfg.min_lr)
        return {"scheduler": sched, "interval": "epoch"}
    if cfg.name == "exponential":  # lr *= gamma after every epoch (Achille et al.'s schedule: 0.97)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)
        return {"scheduler": sched, "interval": "epoch"}
    if cfg.name == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
        return {"scheduler": sched, "interval": "epoch"}
    # On training progress, not on a step count fixed at the start: epochs may change length (training subsets).
    sched = OneCycleOnProgress(opt, cfg.pct_start, progress=lambda: training_progress(trainer))
    return {"scheduler": sched, "interval": "step"}
