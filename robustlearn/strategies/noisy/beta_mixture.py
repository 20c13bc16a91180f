"""A two-component beta mixture on [0, 1], fitted by EM with a weighted method-of-moments M-step.

Arazo, Ortego, Albert, O'Connor & McGuinness, "Unsupervised Label Noise Modeling and Loss Correction", ICML 2019
(arXiv 1904.11238), Section 3.1:

    p(l) = Σ_k λ_k Beta(l; α_k, β_k)
    E-step:  r_ik = λ_k Beta(l_i; α_k, β_k) / Σ_j λ_j Beta(l_i; α_j, β_j)
    M-step:  m_k = Σ_i r_ik l_i / Σ_i r_ik,   s²_k = Σ_i r_ik (l_i − m_k)² / Σ_i r_ik
             α_k = m_k (m_k (1 − m_k) / s²_k − 1),   β_k = α_k (1 − m_k) / m_k,   λ_k = Σ_i r_ik / N

The M-step matches each component's weighted mean and variance instead of maximising the likelihood (which has no
closed form for a beta); this is the paper's choice and the official code's (`BetaMixture1D` in
github.com/PaulAlbert31/LabelNoiseCorrection, utils.py). Written here because neither scikit-learn nor scipy has a
beta mixture (scikit-learn's mixtures are Gaussian only).

Defaults from the official code: 10 EM iterations; initial (α, β) = (1, 2) and (2, 1) (a low and a high component),
weights 0.5 / 0.5; data clipped to [1e-4, 1 − 1e-4] before fitting (the beta density is unbounded at 0 and 1);
responsibilities floored at 1e-12 before normalising. One guard the official code lacks: a component whose weighted
variance is not below m (1 − m) (no beta has it) or that lost all its mass gets its shape parameters floored at
`MIN_SHAPE` instead of turning NaN or negative.

Float64 NumPy on the host: the fit runs once per epoch on N losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import betaln, logsumexp

CLIP = 1e-4  # data clipped to [CLIP, 1 - CLIP] before fitting (official)
FLOOR = 1e-12  # responsibilities floored here before normalising (official eps_nan)
MIN_SHAPE = 1e-2  # floor of α and β where the moments admit no beta


def beta_log_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    return (a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) - betaln(a, b)


def weighted_beta_moments(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(α, β) of the beta with the weighted mean and variance of `x` (weights `w`): the paper's M-step."""
    total = w.sum()
    if not total > 0:
        return MIN_SHAPE, MIN_SHAPE
    m = float((w * x).sum() / total)
    s2 = float((w * (x - m) ** 2).sum() / total)
    m = min(max(m, CLIP), 1.0 - CLIP)
    common = m * (1.0 - m) / s2 - 1.0 if s2 > 0 else float("inf")
    if not np.isfinite(common):  # all mass on one value: a very peaked beta at m
        common = 1e6
    a = max(m * common, MIN_SHAPE)
    b = max(a * (1.0 - m) / m, MIN_SHAPE)
    return a, b


@dataclass
class BetaMixture:
    """Two beta components; `fit(x)` runs EM from the stored parameters (the official initialisation by default)."""

    alphas: np.ndarray = field(default_factory=lambda: np.array([1.0, 2.0]))
    betas: np.ndarray = field(default_factory=lambda: np.array([2.0, 1.0]))
    weights: np.ndarray = field(default_factory=lambda: np.array([0.5, 0.5]))

    def __post_init__(self):
        self.alphas = np.asarray(self.alphas, dtype=np.float64).copy()
        self.betas = np.asarray(self.betas, dtype=np.float64).copy()
        self.weights = np.asarray(self.weights, dtype=np.float64).copy()

    @property
    def means(self) -> np.ndarray:
        return self.alphas / (self.alphas + self.betas)

    def log_weighted_likelihood(self, x: np.ndarray) -> np.ndarray:
        """log(λ_k Beta(x; α_k, β_k)), shape (2, N); x clipped to [CLIP, 1 − CLIP]."""
        x = np.clip(np.asarray(x, dtype=np.float64), CLIP, 1.0 - CLIP)
        with np.errstate(divide="ignore"):  # a component with weight 0 has log-weight −inf
            log_w = np.log(self.weights)
        return np.stack([log_w[k] + beta_log_pdf(x, self.alphas[k], self.betas[k]) for k in (0, 1)])

    def responsibilities(self, x: np.ndarray) -> np.ndarray:
        """r_ik: λ_k Beta(x_i; α_k, β_k) floored at FLOOR, normalised over k (the official E-step, in log space so
        that peaked components cannot overflow)."""
        log_r = np.maximum(self.log_weighted_likelihood(x), np.log(FLOOR))
        return np.exp(log_r - logsumexp(log_r, axis=0, keepdims=True))

    def fit(self, x: np.ndarray, max_iters: int = 10) -> BetaMixture:
        x = np.clip(np.asarray(x, dtype=np.float64), CLIP, 1.0 - CLIP)
        for _ in range(max_iters):
            r = self.responsibilities(x)  # E-step
            for k in (0, 1):  # M-step
                self.alphas[k], self.betas[k] = weighted_beta_moments(x, r[k])
            self.weights = r.sum(1) / r.sum()
        return self

    def posterior(self, x: np.ndarray, k: int) -> np.ndarray:
        """P(component k | x)."""
        log_lik = self.log_weighted_likelihood(x)
        return np.exp(log_lik[k] - logsumexp(log_lik, axis=0))

    def high_component(self) -> int:
        """The component with the larger mean (the high-loss one)."""
        return int(np.argmax(self.means))

    def state_dict(self) -> dict:
        return {"alphas": self.alphas.tolist(), "betas": self.betas.tolist(), "weights": self.weights.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> BetaMixture:
        return cls(state["alphas"], state["betas"], state["weights"])
