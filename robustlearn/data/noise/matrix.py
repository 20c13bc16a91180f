"""Label noise from an explicit transition matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustlearn.data.base import Noise
from robustlearn.data.noise.common import largest_remainder
from robustlearn.errors import ConfigError
from robustlearn.registry import NOISES

ROW_SUM_TOL = 1e-6


def check_matrix(matrix, num_classes: int) -> np.ndarray:
    """`matrix` as a K×K row-stochastic float array, else ConfigError naming `noise.matrix`."""
    key = "noise.matrix"
    if matrix is None:
        raise ConfigError(
            f"noise.kind=matrix needs noise.matrix: a {num_classes}×{num_classes} list of rows, each "
            "non-negative and summing to 1.",
            key=key,
        )
    try:
        rows = [[float(v) for v in row] for row in matrix]
        t = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"noise.matrix must be a list of lists of numbers ({e}).", key=key) from e
    if t.shape != (num_classes, num_classes):
        raise ConfigError(
            f"noise.matrix must be {num_classes}×{num_classes} for this dataset (got shape "
            f"{'×'.join(map(str, t.shape)) if t.ndim == 2 else 'ragged'}).",
            key=key,
        )
    if not np.isfinite(t).all() or (t < 0).any():
        raise ConfigError("noise.matrix entries must be finite and non-negative.", key=key)
    sums = t.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOL)
    if bad.size:
        raise ConfigError(
            f"noise.matrix rows must sum to 1: row {bad[0]} sums to {sums[bad[0]]:.6g}.", key=key
        )
    return t / sums[:, None]


@NOISES.register("matrix")
class Matrix(Noise):
    """Noise drawn from an explicit row-stochastic K×K matrix T (`noise.matrix`), T[i, j] =
    P(observed j | true i). `noise.rate` is ignored; the implied rate Σ_c (n_c / n)(1 - T[c, c]) is
    recorded as `rate_nominal`.

    Exact counts: class c (n_c samples) sends exactly m_cj samples to class j, where m_c = largest-remainder
    rounding of n_c · T[c] (ties to the lower class index); which samples go where is a uniform shuffle.
    """

    @dataclass
    class Params:
        matrix: list[list[float]] | None = None

    def transition_and_labels(self, labels, num_classes, rate, rng, features, dataset):
        t = check_matrix(self.params.matrix, num_classes)
        noisy = labels.copy()
        for c in range(num_classes):
            members = rng.permutation(np.flatnonzero(labels == c))
            counts = largest_remainder(len(members), t[c])
            noisy[members] = np.repeat(np.arange(num_classes), counts)
        prior = np.bincount(labels, minlength=num_classes) / max(len(labels), 1)
        self.extra = {"rate_nominal": float(np.sum(prior * (1.0 - np.diag(t))))}
        return noisy, t
