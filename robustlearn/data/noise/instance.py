"""Instance-dependent label noise (Xia et al. 2020, "Part-dependent label noise: towards instance-dependent
label noise", NeurIPS; the "IDN" generator used in later work)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustlearn.data.base import Noise
from robustlearn.data.noise.common import empirical_transition
from robustlearn.errors import ConfigError
from robustlearn.registry import NOISES

CHUNK = 8192


def truncated_normal(mean: float, std: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws from N(mean, std²) truncated to [0, 1], by redrawing the values that fall outside."""
    q = rng.normal(mean, std, size) if std > 0 else np.full(size, mean)
    outside = (q < 0) | (q > 1)
    while outside.any():
        q[outside] = rng.normal(mean, std, int(outside.sum()))
        outside = (q < 0) | (q > 1)
    return q


@NOISES.register("instance")
class Instance(Noise):
    """Instance-dependent noise (Xia et al. 2020). Param `std` (default 0.1).

    For each sample i with flattened features x_i (L2-normalised) and label y_i:
    q_i ~ N(r, std²) truncated to [0, 1]; W ∈ R^{K×D×K} with entries ~ N(0, 1) (one D×K projection per
    class); s = x_i W[y_i], s[y_i] = -inf; p = q_i · softmax(s); p[y_i] = 1 - q_i; the noisy label is drawn
    from p. So the flip probability of sample i is q_i, the mean rate ≈ r (truncation pulls it towards 1/2
    when r is within a few std of 0 or 1), and the wrong class depends on the input. Rate 0 gives clean
    labels.
    The returned T is the empirical transition of the drawn labels.
    """

    @dataclass
    class Params:
        std: float = 0.1

    def probabilities(
        self, labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator, features
    ) -> tuple[np.ndarray, np.ndarray]:
        """(P, q): P[i, j] = probability that sample i is observed as j; q_i its flip probability."""
        std = self.params.std
        number = isinstance(std, (int, float)) and not isinstance(std, bool)
        if not number or not np.isfinite(std) or std < 0:
            raise ConfigError(f"noise.std must be a number >= 0 (got {std!r}).", key="noise.std")
        if features is None:
            raise ConfigError(
                "noise.kind=instance needs the training inputs (features) to draw instance-dependent flips.",
                key="noise.kind",
            )
        n, k = len(labels), num_classes
        x = np.asarray(features).reshape(n, -1)
        q = truncated_normal(rate, float(std), n, rng) if rate > 0 else np.zeros(n)
        w = rng.standard_normal((k, x.shape[1], k))
        probs = np.zeros((n, k))
        for start in range(0, n, CHUNK):
            rows = slice(start, start + CHUNK)
            xb = x[rows].astype(np.float64)
            norms = np.linalg.norm(xb, axis=1, keepdims=True)
            xb = np.divide(xb, norms, out=np.zeros_like(xb), where=norms > 0)
            yb = labels[rows]
            scores = np.empty((len(yb), k))
            for c in np.unique(yb):
                sel = yb == c
                scores[sel] = xb[sel] @ w[c]
            scores[np.arange(len(yb)), yb] = -np.inf
            scores -= scores.max(axis=1, keepdims=True)
            e = np.exp(scores)
            p = q[rows, None] * e / e.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] = 1.0 - q[rows]
            probs[rows] = p
        return probs, q

    def transition_and_labels(self, labels, num_classes, rate, rng, features, dataset):
        probs, q = self.probabilities(labels, num_classes, rate, rng, features)
        cdf = np.cumsum(probs, axis=1)
        cdf[:, -1] = 1.0
        u = rng.random(len(labels))
        noisy = (cdf <= u[:, None]).sum(axis=1).astype(np.int64)
        self.extra = {"flip_rate_mean": float(q.mean()) if len(q) else 0.0, "std": float(self.params.std)}
        return noisy, empirical_transition(labels, noisy, num_classes)
