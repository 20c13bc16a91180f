"""The variance-reduction estimate τ of presampling (Katharopoulos & Fleuret 2018, eq. 29 and the official code's
`VarianceReductionCondition`), on the device.

For scores s_1..s_n with normalised g = s / Σ s and the uniform u = 1/n,

    τ = (1 − ‖g − u‖² / ‖g‖²)^(−1/2) = 1 / sqrt(1 − ‖g − u‖² / ‖g‖²),

the exponent −1/2 applying to the whole bracket. Since Σ g = 1, ‖g − u‖² = ‖g‖² − 1/n, so τ = sqrt(n ‖g‖²) =
sqrt(mean s²) / mean s ≥ 1: it is 1 for equal scores and grows as they spread (√n for one non-zero score). It
estimates how much importance sampling ∝ s reduces the variance of the gradient estimate, in units of batch size:
sampling is worth its cost while the smoothed τ̄ ← a τ̄ + (1 − a) τ exceeds τ_th = (B + 3b) / (3b), B the number of
candidates drawn and b the number trained (`threshold`).
"""

from __future__ import annotations

import torch


def variance_reduction(scores: torch.Tensor) -> torch.Tensor:
    """τ of the last dimension of `scores` (non-negative); 1 where they sum to zero (uniform). No host sync."""
    s = scores.float() if scores.dtype != torch.float64 else scores
    n = s.shape[-1]
    total = s.sum(-1, keepdim=True)
    g = torch.where(total > 0, s / total.clamp_min(torch.finfo(s.dtype).tiny), torch.full_like(s, 1.0 / n))
    ratio = (g - 1.0 / n).square().sum(-1) / g.square().sum(-1)
    return (1.0 - ratio).clamp_min(1.0 / n).pow(-0.5)


def smoothed(tau_bar: torch.Tensor, tau: torch.Tensor, a: float) -> torch.Tensor:
    """The exponential moving average a τ̄ + (1 − a) τ (official momentum a = 0.9, τ̄ starting at 0)."""
    return a * tau_bar + (1.0 - a) * tau


def threshold(candidates: int, b: int) -> float:
    """τ_th = (B + 3b) / (3b) (eq. 29) for B = `candidates` scored and b trained per step: the official
    `ImportanceTraining.sampler` takes B = int(presample · b), the number it draws, not presample · b."""
    return (candidates + 3.0 * b) / (3.0 * b)
