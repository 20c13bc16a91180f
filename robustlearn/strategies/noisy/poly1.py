"""Poly-1 loss.

Leng, Tan, Liu, Cubuk, Shi, Cheng, Anguelov & Tan, "PolyLoss: A Polynomial Expansion Perspective of Classification
Loss Functions", ICLR 2022.

    L = CE(p, y) + epsilon (1 - p_y) = (1 + epsilon) (1 - p_y) + sum_{j>=2} (1 - p_y)^j / j,      epsilon >= -1

Cross-entropy is the series sum_{j>=1} (1 - p_y)^j / j; Poly-1 changes the weight of its first term by epsilon.
That term's gradient in p_y is constant while the higher terms' vanish as p_y -> 1, so epsilon > 0 keeps pushing
predictions that are already confident and epsilon < 0 relaxes that push; epsilon = 0 is cross-entropy. epsilon >= -1
keeps the first coefficient non-negative (the range the paper's code states), so the loss stays decreasing in p_y.

Default epsilon = 1 is a moderate setting chosen here, not the paper's: the paper finds the best epsilon depends on
the task and reports epsilon = 2 for ImageNet classification and epsilon = -1 for COCO detection and segmentation.
Computed from `log_softmax` in float32: CE is -log p_y and 1 - p_y is -expm1(log p_y), both against the hard
observed label (no smoothed targets).

PolyLoss is not a noise-robust loss (it is unbounded, like cross-entropy); it is here as a cross-entropy variant
to compare the robust losses with, and as a one-parameter tuning knob on clean or lightly noisy data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.tuning.space import Float


@STRATEGIES.register("poly1")
class Poly1(Strategy):
    """Poly-1 (Leng et al. 2022): CE + epsilon (1 - p_y)."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"epsilon": Float(-1.0, 5.0)}

    provides_loss = True

    @dataclass
    class Params:
        epsilon: float = 1.0  # weight added to the first polynomial term (>= -1); 0: cross-entropy

        def __post_init__(self):
            if not (math.isfinite(self.epsilon) and self.epsilon >= -1.0):
                raise ConfigError(f"poly1: epsilon = {self.epsilon!r} must be a finite number >= -1.", "epsilon")

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        log_p_y = torch.log_softmax(logits.float(), dim=1).gather(1, batch["y"][:, None]).squeeze(1)
        return -log_p_y - self.params.epsilon * torch.expm1(log_p_y)  # CE + epsilon (1 - p_y)
