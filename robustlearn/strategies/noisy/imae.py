"""IMAE / derivative manipulation: example weights that emphasise examples by p_y.

X. Wang, Y. Hua, E. Kodirov & N. M. Robertson, "IMAE for Noise-Robust Learning: Mean Absolute Error Does Not Treat
Examples Equally and Gradient Magnitude's Variance Matters", arXiv:1903.12141, 2019; and X. Wang, E. Kodirov,
Y. Hua & N. M. Robertson, "Derivative Manipulation for General Example Weighting", arXiv:1905.11233, 2019.

    w_i = exp(β (1 - p_y) p_y^λ),      w_i ← w_i / mean_batch(w),      loss = Σ_i w_i ℓ_i / B

p_y is the softmax probability of the observed label; the weights are detached, so with ℓ = CE the gradient with
respect to sample i's logits is w_i (p_i - onehot(y_i)) / B: CE's direction with a magnitude chosen by the
weighting curve instead of by the loss. λ sets where the emphasis peaks (p_y = λ / (1 + λ): λ = 1 gives IMAE's
symmetric emphasis of p_y = 0.5, λ < 1 favours harder, λ > 1 easier examples); β sets how strongly (the largest
weight ratio within a batch is at most exp(β λ^λ / (1 + λ)^(1 + λ))). Examples a network finds implausible
(p_y near 0, often wrong labels) and those already fitted (p_y near 1) get the least weight. Normalising to mean one
keeps the batch's total gradient scale, so the learning rate needs no retuning.

It is a `weights()` strategy: it multiplies the incoming weights and composes with any loss provider (CE when none
is configured, as in the papers, where the manipulated derivative is CE's).

Defaults β = 8, λ = 1: the official IMAE code's CIFAR-100 runs at 20 % and 40 % symmetric noise (`scale: 8`,
`lamda_p: 1.0` in its Caffe prototxts, XinshaoAmosWang/Improving-Mean-Absolute-Error-against-CCE); the derivative
manipulation code also runs λ = 0.5 with β = 8 at 40 % and 60 % noise.

When to use it: symmetric noise of moderate rate, as a cheap, stateless reweighting on top of CE (or another loss).
It does not drop samples, so under heavy noise the flipped samples still count, with less weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number


def imae_weights(logits: torch.Tensor, y: torch.Tensor, beta: float, lam: float) -> torch.Tensor:
    """exp(β (1 - p_y) p_y^λ) normalised to mean one over the batch, detached, float32."""
    p_y = torch.softmax(logits.detach().float(), dim=1).gather(1, y[:, None]).squeeze(1)
    w = torch.exp(beta * (1.0 - p_y) * p_y.pow(lam))
    return w / w.mean()


@STRATEGIES.register("imae")
class IMAE(Strategy):
    """IMAE / derivative manipulation (Wang et al. 2019): weights exp(β(1 - p_y)p_y^λ), mean one per batch."""

    @dataclass
    class Params:
        beta: float = 8.0  # emphasis strength β >= 0 (0: uniform weights)
        lam: float = 1.0  # emphasis focus λ >= 0: weights peak at p_y = λ / (1 + λ)

        def __post_init__(self):
            for key in ("beta", "lam"):
                value = getattr(self, key)
                if not (is_number(value) and value >= 0):
                    raise ConfigError(f"imae: {key} = {value!r} must be a finite number >= 0.", key)

    def weights(self, per_sample, logits, batch, weights, module=None):
        return weights * imae_weights(logits, batch["y"], self.params.beta, self.params.lam)
