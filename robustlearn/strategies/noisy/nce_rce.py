"""Active-passive loss NCE+RCE.

Ma, Huang, Wang, Romano, Erfani & Bailey, "Normalized Loss Functions for Deep Learning with Noisy Labels", ICML 2020.

    L = alpha * NCE + beta * RCE
    NCE(p, y) = (-log p_y) / (-sum_k log p_k)                 in [0, 1]; 1/K for a uniform prediction
    RCE(p, y) = -sum_k p_k log e_y,k = -A (1 - p_y)           with log 0 taken as A (log_zero)

Normalising cross-entropy by its sum over all labels makes it robust (the normalised loss sums to 1 over the labels)
but, alone, it underfits. The paper pairs an "active" robust loss (NCE, which pushes p_y up) with a "passive" one
(RCE, which pushes the other classes down) and shows the sum is robust and fits well.

Defaults: alpha = beta = 1 are the paper's CIFAR-10 setting (its official configs use alpha = 10, beta = 0.1 on
CIFAR-100 and alpha = 1, beta = 10 on MNIST). log_zero = -4 is the value A = -4 of the RCE term in the paper (as in
symmetric cross-entropy). The official code instead clips the one-hot label to 1e-4, which is A = log 1e-4 ~ -9.21;
set log_zero: -9.2103 to match it.

Numerics: NCE is computed from `log_softmax` with no clamp (as the official code does; the denominator is at least
K log K, so it never vanishes). RCE is the closed form -A (1 - p_y) from the softmax. The official code clamps the
probabilities to [1e-7, 1] before the RCE sum; that changes the value by at most K * 1e-7 * |A| and stops the gradient
of classes below 1e-7, and is not done here.

Use it where labels are noisy and plain robust losses (MAE, NCE alone) underfit, especially with many classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.tuning.space import Float


@STRATEGIES.register("nce_rce")
class NCERCE(Strategy):
    """Active-passive loss (Ma et al. 2020): alpha NCE + beta RCE."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"alpha": Float(0.1, 10.0, log=True), "beta": Float(0.1, 10.0, log=True)}

    provides_loss = True

    @dataclass
    class Params:
        alpha: float = 1.0  # weight of normalised cross-entropy (>= 0)
        beta: float = 1.0  # weight of reverse cross-entropy (>= 0; not both 0)
        log_zero: float = -4.0  # A, the value of log 0 in the reverse term (< 0)

        def __post_init__(self):
            for key in ("alpha", "beta"):
                value = getattr(self, key)
                if not (math.isfinite(value) and value >= 0):
                    raise ConfigError(f"nce_rce: {key} = {value!r} must be a finite number >= 0.", key)
            if self.alpha == 0 and self.beta == 0:
                raise ConfigError("nce_rce: alpha and beta are both 0; at least one must be > 0.", "alpha")
            if not (math.isfinite(self.log_zero) and self.log_zero < 0):
                raise ConfigError(f"nce_rce: log_zero = {self.log_zero!r} must be a finite number < 0.", "log_zero")

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        log_p = torch.log_softmax(logits.float(), dim=1)
        log_p_y = log_p.gather(1, batch["y"][:, None]).squeeze(1)
        nce = log_p_y / log_p.sum(1)  # (-log p_y) / (-sum_k log p_k)
        rce = -self.params.log_zero * -torch.expm1(log_p_y)  # -A (1 - p_y)
        return self.params.alpha * nce + self.params.beta * rce
