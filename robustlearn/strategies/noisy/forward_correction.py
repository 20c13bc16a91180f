"""Forward loss correction.

Patrini, Rozza, Menon, Nock & Qu, "Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach",
CVPR 2017.

    ℓ→(p, y) = -log( (Tᵀ p)_y ) = -log( Σ_i p_i T[i, y] ),      p = softmax(z), in float32

The network's clean-class posterior p is pushed through the noise, Tᵀp = P(observed | x), and compared with the
observed label; at the optimum p is the clean posterior (Theorem 2 of the paper). (Tᵀp)_y is clamped at 1e-7
(Keras' epsilon, as the official code clips) before the log. T = I is cross-entropy.

T (`matrix`): `true` reads the noise generator's matrix (oracle, marked "true T"); `estimated` (default) trains with
plain cross-entropy for `warmup_epochs` epochs and then estimates T from anchor points (97th percentile, the
official code's value); see `robustlearn.strategies.noisy.transition`. The official code estimates T from a
cross-entropy network trained for its whole schedule (40 epochs on MNIST, 120 on CIFAR-10) and then trains again
with the corrected loss; in one run the warm-up has to be shorter: the default, 5 epochs, is this repository's choice
for its 8–20 epoch schedules (use about a quarter to a half of the epochs).

When to use it: class-dependent noise (pair flips, asymmetric class maps), where T carries real structure. With
the true T it is an upper reference for what loss correction can do; with the estimated T it is as good as the
estimate, which needs a warm-up network that fits p(observed | x) well and classes with confident anchor samples.
"""

from __future__ import annotations

import torch

from robustlearn.registry import STRATEGIES
from robustlearn.strategies.noisy.transition import TransitionCorrection

FLOOR = 1e-7


def forward_corrected(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """-log((Tᵀ softmax(z))_y) per sample; `t` (K, K) float32 on the logits' device."""
    p = torch.softmax(logits.float(), dim=1)
    noisy_p_y = (p * t.t().index_select(0, y)).sum(1)  # Σ_i p_i T[i, y]
    return -torch.log(noisy_p_y.clamp_min(FLOOR))


@STRATEGIES.register("forward_correction")
class ForwardCorrection(TransitionCorrection):
    """Forward loss correction (Patrini et al. 2017): -log((Tᵀp)_y), T true or estimated from anchor points."""

    def prepare(self, t: torch.Tensor) -> torch.Tensor:
        return t.float()

    def corrected(self, logits: torch.Tensor, y: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        return forward_corrected(logits, y, prepared)
