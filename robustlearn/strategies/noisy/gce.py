"""Generalized cross-entropy (GCE).

Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels",
NeurIPS 2018.

    L_q(f(x), y) = (1 - f_y(x)^q) / q,      q in (0, 1]

f_y(x) is the softmax probability of the observed label. q -> 0 recovers cross-entropy (by L'Hôpital),
q = 1 is the mean absolute error (1 - f_y), which is noise-robust but underfits; the paper's default is q = 0.7.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.tuning.space import Float


@STRATEGIES.register("gce")
class GCE(Strategy):
    """Generalized cross-entropy (Zhang & Sabuncu 2018): (1 - p_y^q) / q."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"q": Float(0.1, 1.0)}

    provides_loss = True

    @dataclass
    class Params:
        q: float = 0.7  # 0 < q <= 1; -> 0: cross-entropy, 1: MAE

        def __post_init__(self):
            if not 0.0 < self.q <= 1.0:
                raise ConfigError(f"gce: q = {self.q!r} is out of range; it must be > 0 and <= 1.", "q")

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        log_p = torch.log_softmax(logits.float(), dim=1).gather(1, batch["y"][:, None]).squeeze(1)
        return -torch.expm1(self.params.q * log_p) / self.params.q  # (1 - p^q) / q, stable for small q
