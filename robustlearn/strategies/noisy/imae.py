"""IMAE / derivative manipulation: the logit gradient's magnitude is an emphasis chosen by p_y, its direction CE's.

X. Wang, Y. Hua, E. Kodirov & N. M. Robertson, "IMAE for Noise-Robust Learning: Mean Absolute Error Does Not Treat
Examples Equally and Gradient Magnitude's Variance Matters", arXiv:1903.12141, 2019; and X. Wang, E. Kodirov,
Y. Hua & N. M. Robertson, "Derivative Manipulation for General Example Weighting", arXiv:1905.11233, 2019.

The official code (the `dm_exp_pi` branch of the training step, XinshaoAmosWang/ProSelfLC-AT,
`src/proselflc/trainer/trainer_cnn_vision.py`, and XinshaoAmosWang/DeepCriticalLearning,
`trainer_cnn_vision_derivedgrad.py`) computes no loss: it hands the logits a gradient of its own,

    e_i = exp(β (1 − p_i) p_i^λ),      ∂L/∂z_i = e_i / Σ_j e_j · (p(z_i) − onehot(y_i)) / (2 (1 − p_i))

with p_i = p_{y_i} the softmax probability of the observed label. p − onehot is CE's logit gradient; its L1 norm is
2 (1 − p_i), so dividing by it leaves CE's direction at unit L1 norm, and the emphasis e_i, normalised to sum one over
the batch, is the whole magnitude. The gradient is a constant (`logits.backward(grad)`): nothing in it is
differentiated. Here the same gradient comes out of the step's loss Σ_i w_i ℓ_i / B with CE's ℓ_i and the detached
weights

    w_i = B e_i / Σ_j e_j / (2 (1 − p_i) + 1e-8)      (times the incoming weights)

The 1e-8 in the divisor, and p_i + 1e-8 in the power, are the official code's. Departures, on purpose: 1 − p_i is
computed as the sum of the other classes' probabilities, the same number without the cancellation of 1 − p_i when
p_i is near 1 (a fitted sample's weight stays finite, and as p_i → 1 its w_i ℓ_i tends to B e_i / (2 Σ e), since
ℓ_i ≈ 1 − p_i); the DeepCriticalLearning copy adds 1e-8 to each e_i too, which is below float precision (e_i ≥ 1)
and left out; and the derivative is reached through weights, so that the strategy composes (below).

λ sets where the emphasis peaks (p_i = λ / (1 + λ): λ = 1 gives IMAE's symmetric emphasis of p_i = 0.5, λ < 1 favours
harder, λ > 1 easier examples); β sets how strongly (the largest ratio of two samples' gradient magnitudes within a
batch is at most exp(β λ^λ / (1 + λ)^(1 + λ))); β = 0 gives every sample the same magnitude 1/B. Examples a network
finds implausible (p_i near 0, often wrong labels) and those already fitted (p_i near 1) get the least. The batch's
gradient has total L1 norm one, as with CE's mean over a batch of samples at p_i = 0.5, so the learning rate needs
no retuning. The weights are not mean one (they undo CE's 2 (1 − p_i)), so `train/loss_main` is Σ w_i ℓ_i / B, not
CE's mean.

It is a `weights()` strategy: it multiplies the incoming weights and composes with any loss provider (CE when none
is configured, as in the papers and the official code, where the manipulated derivative is CE's). The divisor is
always CE's 2 (1 − p_i), so with another loss ℓ the gradient is that loss's times e_i / Σ e / (2 (1 − p_i)): for a
loss of p_y alone (GCE, MAE, ...) its direction is CE's and its magnitude the emphasis times the loss's own factor
relative to CE (GCE: p_i^q), i.e. the loss still shapes the weighting; a per-loss normalisation would erase it.

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
from robustlearn.tuning.space import Float

EPS = 1e-8  # the official code's, in the power and in the divisor


def imae_weights(logits: torch.Tensor, y: torch.Tensor, beta: float, lam: float) -> torch.Tensor:
    """B e_i / Σ e / (2 (1 − p_y) + 1e-8), e_i = exp(β (1 − p_y) (p_y + 1e-8)^λ): the weights that turn CE's logit
    gradient into the official derivative-manipulation one. Detached; float32 (float64 for float64 logits)."""
    z = logits.detach()
    p = torch.softmax(z if z.dtype == torch.float64 else z.float(), dim=1)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    rest = p.scatter(1, y[:, None], 0.0).sum(1)  # 1 − p_y, without cancellation near p_y = 1
    emphasis = torch.exp(beta * rest * (p_y + EPS).pow(lam))
    return emphasis / emphasis.mean() / (2.0 * rest + EPS)


@STRATEGIES.register("imae")
class IMAE(Strategy):
    """IMAE / derivative manipulation (Wang et al. 2019): each sample's logit gradient is CE's direction at the
    magnitude exp(β(1 - p_y)p_y^λ), normalised to sum one over the batch (the official code's derivative)."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"beta": Float(0.5, 32.0, log=True), "lam": Float(0.25, 4.0, log=True)}

    @dataclass
    class Params:
        beta: float = 8.0  # emphasis strength β >= 0 (0: every sample's gradient has the same magnitude)
        lam: float = 1.0  # emphasis focus λ >= 0: the emphasis peaks at p_y = λ / (1 + λ)

        def __post_init__(self):
            for key in ("beta", "lam"):
                value = getattr(self, key)
                if not (is_number(value) and value >= 0):
                    raise ConfigError(f"imae: {key} = {value!r} must be a finite number >= 0.", key)

    def weights(self, per_sample, logits, batch, weights, module=None):
        return weights * imae_weights(logits, batch["y"], self.params.beta, self.params.lam)
