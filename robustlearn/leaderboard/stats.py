"""Statistics over seeds for the leaderboard: t intervals, paired comparisons, Holm's correction, bootstrap ranks.

Formulas (docs/leaderboard.md says the same):

- **t interval** of n values x₁…xₙ: x̄ ± t_{0.975, n−1} · s / √n, with s the sample std (ddof = 1) and
  t_{0.975, n−1} the 97.5 % quantile of Student's t with n − 1 degrees of freedom (scipy.stats.t.ppf). n = 1: no
  interval.
- **Paired comparison** of a method with a baseline over the seeds both have, dᵢ = xᵢ − yᵢ: the mean difference
  d̄ with its t interval as above, and the two-sided paired t-test p = 2 · P(T_{n−1} ≥ |d̄| / (s_d / √n)). When all
  differences are equal (s_d = 0), p = 0 if d̄ ≠ 0 (|t| = ∞) and p = 1 if d̄ = 0. Fewer than 2 shared seeds: none.
- **Holm** over m p-values, step-down: sort ascending p_(1) ≤ … ≤ p_(m); reject H_(i) while p_(i) < α / (m − i + 1),
  stopping at the first failure. Adjusted p̃_(i) = min(1, max_{j ≤ i} (m − j + 1) · p_(j)), so that p̃ < α exactly
  for the rejected hypotheses.
- **Ranks**: competition ranks of the means, 1 = highest; means equal to `DIGITS` decimals share the lowest rank
  of their group ("1, 2, 2, 4"). Their uncertainty: B bootstrap draws, each resampling every method's seed values
  with replacement (as many as it has) and ranking the resampled means; the interval is the 2.5 % and 97.5 %
  percentiles of a method's B ranks, rounded outwards to whole ranks (numpy's "lower" and "higher" methods). A
  numpy Generator with a fixed seed makes the draws, methods taken in sorted label order: the same input gives the
  same output.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

LEVEL = 0.95  # of every interval
ALPHA = 0.05  # Holm-adjusted p below this: marked
DRAWS = 2000  # bootstrap draws B
SEED = 0  # of the bootstrap's generator
DIGITS = 12  # means equal to this many decimals tie


@dataclass(frozen=True)
class Interval:
    """Mean of n values with its t interval [low, high]; low = high = None when n = 1."""

    mean: float
    low: float | None
    high: float | None
    n: int


@dataclass(frozen=True)
class Paired:
    """A method minus the baseline over n shared seeds: mean difference, its t interval, paired t-test p."""

    delta: float
    low: float
    high: float
    p: float
    n: int


@dataclass(frozen=True)
class RankInterval:
    """Competition rank of the observed mean, and the bootstrap percentile interval [low, high] of the rank."""

    rank: int
    low: int
    high: int


def finite(values: Iterable[Any]) -> list[float]:
    """The finite numbers of `values` as floats (None and NaN left out)."""
    return [x for x in (float(v) for v in values if v is not None) if math.isfinite(x)]


def mean_std(xs: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample std (ddof = 1; None for n = 1) of a non-empty sequence."""
    mean = math.fsum(xs) / len(xs)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return mean, std


def t_quantile(n: int, level: float = LEVEL) -> float:
    """t_{(1 + level) / 2, n − 1}: 4.302653 for n = 3 at 95 %."""
    return float(sps.t.ppf(0.5 + level / 2, n - 1))


def t_interval(values: Iterable[Any], level: float = LEVEL) -> Interval | None:
    """x̄ ± t_{0.975, n−1} · s / √n over the finite `values`; None if there are none, no bounds if n = 1."""
    xs = finite(values)
    if not xs:
        return None
    mean, std = mean_std(xs)
    if std is None:
        return Interval(mean, None, None, 1)
    half = t_quantile(len(xs), level) * std / math.sqrt(len(xs))
    return Interval(mean, mean - half, mean + half, len(xs))


def paired(method: Mapping[Hashable, float], baseline: Mapping[Hashable, float], level: float = LEVEL) -> Paired | None:
    """method − baseline over the seeds (keys) both have finite values for; None with fewer than 2 shared seeds.

    Mean difference d̄, its t interval d̄ ± t_{0.975, n−1} · s_d / √n, and the two-sided paired t-test
    p = 2 · P(T_{n−1} ≥ |t|), t = d̄ / (s_d / √n) (scipy.stats.t.sf); s_d = 0 gives p = 0 if d̄ ≠ 0, else 1."""
    diffs = finite(float(method[k]) - float(baseline[k]) for k in method if k in baseline)
    if len(diffs) < 2:
        return None
    n = len(diffs)
    delta, sd = mean_std(diffs)
    se = sd / math.sqrt(n)
    half = t_quantile(n, level) * se
    degenerate = 0.0 if delta != 0 else 1.0  # s_d = 0: |t| = ∞, or no difference at all
    p = float(2 * sps.t.sf(abs(delta) / se, n - 1)) if se > 0 else degenerate
    return Paired(delta, delta - half, delta + half, min(1.0, p), n)


def holm(pvalues: Mapping[Hashable, float], alpha: float = ALPHA) -> dict[Hashable, tuple[float, bool]]:
    """Holm's step-down correction: key -> (adjusted p, rejected at `alpha`).

    Sorted ascending p_(1) ≤ … ≤ p_(m), H_(i) is rejected while p_(i) < α / (m − i + 1) (compared as
    (m − i + 1) · p_(i) < α), stopping at the first failure; p̃_(i) = min(1, max_{j ≤ i} (m − j + 1) · p_(j)). Rejected
    is the same as p̃ < α."""
    order = sorted(pvalues, key=lambda k: (pvalues[k], repr(k)))
    m = len(order)
    out: dict[Hashable, tuple[float, bool]] = {}
    running, going = 0.0, True
    for i, key in enumerate(order, 1):
        scaled = (m - i + 1) * float(pvalues[key])
        going = going and scaled < alpha
        running = max(running, min(1.0, scaled))
        out[key] = (running, going)
    return out


def competition_ranks(values: Mapping[Hashable, float | None]) -> dict[Hashable, int | None]:
    """Rank 1 = highest; equal values (to `DIGITS` decimals) share the lowest rank number of their group
    ("1, 2, 2, 4"); None stays None."""
    ordered = sorted((round(v, DIGITS) for v in values.values() if v is not None), reverse=True)
    first: dict[float, int] = {}
    for i, v in enumerate(ordered, 1):
        first.setdefault(v, i)
    return {k: (first[round(v, DIGITS)] if v is not None else None) for k, v in values.items()}


def bootstrap_ranks(
    samples: Mapping[Hashable, Sequence[float]], draws: int = DRAWS, seed: int = SEED, level: float = LEVEL
) -> dict[Hashable, RankInterval]:
    """Per method, the competition rank of its mean and the [2.5 %, 97.5 %] percentiles (for level 0.95) of its
    rank over `draws` bootstrap draws of the seeds: each draw resamples every method's values with replacement and
    ranks the resampled means (1 = highest, ties to `DIGITS` decimals share the lowest rank). Methods without any
    finite value are left out. Deterministic: numpy Generator seeded with `seed`, methods in sorted order."""
    if draws < 1:
        raise ValueError(f"draws = {draws} must be >= 1")
    values = {k: finite(v) for k, v in samples.items()}
    keys = sorted((k for k, v in values.items() if v), key=repr)
    if not keys:
        return {}
    observed = competition_ranks({k: math.fsum(values[k]) / len(values[k]) for k in keys})
    rng = np.random.default_rng(seed)
    means = np.empty((draws, len(keys)))
    for j, k in enumerate(keys):
        xs = np.asarray(values[k])
        means[:, j] = xs[rng.integers(0, len(xs), size=(draws, len(xs)))].mean(axis=1)
    means = np.round(means, DIGITS)
    ranks = 1 + (means[:, None, :] > means[:, :, None]).sum(axis=2)  # [draw, j]: methods with a higher mean, + 1
    tail = (1 - level) / 2
    low = np.quantile(ranks, tail, axis=0, method="lower")
    high = np.quantile(ranks, 1 - tail, axis=0, method="higher")
    return {k: RankInterval(int(observed[k]), int(low[j]), int(high[j])) for j, k in enumerate(keys)}
