"""Soft targets, written once for every method that trains against a distribution instead of the observed label:
bootstrapping, label smoothing, ProSelfLC, ELR's targets, DivideMix's refined labels.

    soft_cross_entropy(z, t)_i = -sum_k t_ik log softmax(z_i)_k

computed from `log_softmax` in float32 (stable under mixed precision). Targets are not detached here: a method whose
target is built from the prediction (bootstrapping, ProSelfLC) decides itself whether gradient flows through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def one_hot(y: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return F.one_hot(y, num_classes).to(dtype)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against soft targets `(B, K)` (rows need not sum to one, e.g. negative smoothing)."""
    return -(targets.float() * torch.log_softmax(logits.float(), dim=1)).sum(1)
