"""Symmetric cross-entropy (SCE).

Wang, Ma, Chen, Luo, Yi & Bailey, "Symmetric Cross Entropy for Robust Learning with Noisy Labels", ICCV 2019.

    L = alpha * CE(p, y) + beta * RCE(p, y),      RCE(p, y) = -sum_k p_k log q_k = -A (1 - p_y)

q is the one-hot label with log 0 clipped to A (the paper uses A = -4), so the reverse term is a scaled MAE.
Defaults alpha = 0.1, beta = 1.0 are the paper's CIFAR-10 setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.tuning.space import Float


@STRATEGIES.register("sce")
class SCE(Strategy):
    """Symmetric cross-entropy (Wang et al. 2019): alpha CE + beta RCE."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"alpha": Float(0.01, 1.0, log=True), "beta": Float(0.1, 10.0, log=True)}

    provides_loss = True

    @dataclass
    class Params:
        alpha: float = 0.1  # weight of cross-entropy
        beta: float = 1.0  # weight of reverse cross-entropy
        log_zero: float = -4.0  # A, the value of log 0 in the reverse term (< 0)

        def __post_init__(self):
            if self.alpha < 0 or self.beta < 0 or self.alpha + self.beta == 0:
                msg = f"sce: alpha = {self.alpha!r}, beta = {self.beta!r}; both must be >= 0, not both 0."
                raise ConfigError(msg, "alpha")
            if self.log_zero >= 0:
                raise ConfigError(f"sce: log_zero = {self.log_zero!r} must be < 0.", "log_zero")

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, batch["y"], reduction="none")
        p_y = torch.softmax(logits, dim=1).gather(1, batch["y"][:, None]).squeeze(1)
        rce = -self.params.log_zero * (1.0 - p_y)
        return self.params.alpha * ce + self.params.beta * rce
