"""Shared pieces of the noise kinds: validation, exact per-class flip counts, empirical transitions."""

from __future__ import annotations

import math

import numpy as np

from robustlearn.errors import ConfigError, DataError


def check_rate(rate: float) -> float:
    """`rate` as a float in [0, 1), else ConfigError naming `noise.rate`."""
    ok = isinstance(rate, (int, float, np.floating, np.integer)) and not isinstance(rate, bool)
    if not ok or not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"noise.rate must be a number in [0, 1) (got {rate!r}).", key="noise.rate")
    return float(rate)


def check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels as an int64 vector in [0, num_classes)."""
    if int(num_classes) < 2:
        raise DataError(f"Label noise needs at least 2 classes (got {num_classes}).")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"Labels must be a vector of integers (got {labels.dtype} {labels.shape}).")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"Labels must lie in 0..{num_classes - 1} (found {labels.min()}..{labels.max()}).")
    return labels.astype(np.int64)


def exact_count(rate: float, n: int) -> int:
    """round(rate · n), halves rounded up: the number of samples of a class of size n that flip."""
    return min(n, int(math.floor(rate * n + 0.5)))


def pick_exact(labels: np.ndarray, classes, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Mask choosing exactly `exact_count(rate, n_c)` samples of each class c in `classes`, uniformly."""
    mask = np.zeros(len(labels), dtype=bool)
    for c in classes:
        members = np.flatnonzero(labels == c)
        m = exact_count(rate, len(members))
        if m:
            mask[rng.choice(members, size=m, replace=False)] = True
    return mask


def largest_remainder(n: int, probs: np.ndarray) -> np.ndarray:
    """Integer counts summing to n, closest to n · probs (Hamilton's largest-remainder method).

    Each entry gets floor(n · p); the units left over go to the largest fractional parts, ties to the lower
    index.
    """
    probs = np.asarray(probs, dtype=np.float64)
    exact = n * probs / probs.sum()
    counts = np.floor(exact).astype(np.int64)
    left = n - int(counts.sum())
    if left > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:left]] += 1
    return counts


def empirical_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-stochastic matrix of observed frequencies P(noisy = j | clean = i); an absent class gets e_i."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (clean, noisy), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    out = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    empty = totals[:, 0] == 0
    out[empty, empty.nonzero()[0]] = 1.0
    return out
