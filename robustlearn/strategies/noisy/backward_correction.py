"""Backward loss correction.

Patrini, Rozza, Menon, Nock & Qu, "Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach",
CVPR 2017.

    ℓ←(p, y) = (T⁻¹ ℓ(p))_y = Σ_j T⁻¹[y, j] · (-log p_j),      ℓ(p)_j = -log p_j the CE loss of every class

In expectation over the noise the corrected loss equals the clean loss (Theorem 1 of the paper): it is unbiased,
but T⁻¹ has negative entries, so a sample's loss may be negative and is unbounded below without a floor. As the
official code (which clips p to [1e-7, 1 - 1e-7]), log p_j is clamped at log 1e-7 here, computed from log-softmax in
float32. T = I is cross-entropy. T must be invertible: a singular or nearly singular T (condition number above 1e6;
e.g. symmetric noise at rate (K-1)/K, where every row is the same) stops the run with the reason.

T (`matrix`): `true` reads the noise generator's matrix (oracle, marked "true T"); `estimated` (default) trains with
plain cross-entropy for `warmup_epochs` epochs (default 5, this repository's choice; the official code uses a whole
cross-entropy run) and then estimates T from anchor points (97th percentile, the official code's value); see
`robustlearn.strategies.noisy.transition`.

When to use it: as the unbiased counterpart of forward correction. The paper finds it clearly worse than forward
correction with deep networks (the negative, unbounded per-sample losses make training unstable), so it is here
mostly as a reference; prefer forward_correction.
"""

from __future__ import annotations

import math

import torch

from robustlearn.registry import STRATEGIES
from robustlearn.strategies.noisy.transition import TransitionCorrection, check_invertible

LOG_FLOOR = math.log(1e-7)


def backward_corrected(logits: torch.Tensor, y: torch.Tensor, t_inv: torch.Tensor) -> torch.Tensor:
    """Σ_j T⁻¹[y, j] (-log p_j) per sample, log p clamped at log 1e-7; `t_inv` (K, K) float32."""
    log_p = torch.log_softmax(logits.float(), dim=1).clamp_min(LOG_FLOOR)
    return -(t_inv.index_select(0, y) * log_p).sum(1)


@STRATEGIES.register("backward_correction")
class BackwardCorrection(TransitionCorrection):
    """Backward loss correction (Patrini et al. 2017): (T⁻¹ ℓ(p))_y, T true or estimated from anchor points."""

    def prepare(self, t: torch.Tensor) -> torch.Tensor:
        check_invertible(t, self.name, "true" if self.params.matrix == "true" else "estimated")
        return torch.linalg.inv(t.double()).float()

    def corrected(self, logits: torch.Tensor, y: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        return backward_corrected(logits, y, prepared)
