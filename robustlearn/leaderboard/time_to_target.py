"""Time to a target accuracy, per seed, and accuracy at fixed training times: samplers against uniform training.

A run's series is its (train_s_total, test/acc) per evaluation, time ascending: training seconds since the start
(evaluation left out) and the test accuracy after that epoch. A run is given as a dict with `run_dir` (its
`metrics.csv` is read) or `series`, or as the series itself. Definitions (docs/leaderboard.md, "Time to a target
accuracy", says the same):

- **Target.** a* = `target_share` · (mean over the baseline's seeds of their final test accuracy), 0.99 by default:
  below the plateau, so that the baseline's own runs cross it before their end and the crossing is not decided by
  noise on the plateau.
- **Crossing time** of a run: with evaluations (tᵢ, aᵢ), the first i with aᵢ ≥ a*; then, linearly interpolated
  between the two evaluations that bracket the target, T = tᵢ₋₁ + (a* − aᵢ₋₁) / (aᵢ − aᵢ₋₁) · (tᵢ − tᵢ₋₁). If
  already the first evaluation reaches a*, T = t₀ (no earlier evaluation to interpolate from). None (never
  reached) if no evaluation reaches a*.
- **Accuracy at time t** of a run: linear interpolation between the evaluations that bracket t; the final accuracy
  after the last evaluation (the run stopped there: that is the model it has); None before the first evaluation.
- **Seeds.** A run's seed is its dict's `seed`, or its position in the list for a bare series; a run without a seed
  gets a key of its own and is never paired. Several runs with one seed (normally there is one) give the seed the
  mean of their values; for crossing times, the seed never reached if one of them never did.
- **Ratio to the baseline**, paired by seed: rₛ = Tₛ(method) / Tₛ(baseline) over the seeds both have where both
  reached a*. Summary: the geometric mean exp(mean log rₛ) (kept within [min rₛ, max rₛ], which it is
  mathematically, so that equal ratios give exactly that value) and a **percentile bootstrap** 95 % interval: B =
  2000 draws, each resampling the method's ratios with replacement (as many as it has) and taking their geometric
  mean; the interval is the 2.5 % and 97.5 % quantiles of the B means (numpy's default linear interpolation). A
  numpy Generator seeded with `seed` (0) per method makes the draws: the same input gives the same output, and a
  method's interval does not depend on the other methods. With one ratio: no interval. The baseline against
  itself gives rₛ = 1 on every seed that reached, hence exactly 1 [1, 1]. With 2 or 3 seeds the interval is (nearly
  always) the range of the ratios: 1/27 of the resamples of 3 seeds take the smallest three times. A percentile
  bootstrap is too narrow with few seeds (it cannot reach beyond the observed ratios), so the **t interval of the log
  ratios** is given beside it: exp(mean ± t₀.₉₇₅,ₙ₋₁ · s / √n) over log rₛ (`stats.t_interval`). A method is faster
  (slower) than the baseline where **both** intervals lie below (above) 1 (`Ratio.below_one`, `above_one`).
- **Never reached.** Seeds that never reach a* are counted and reported ("k of n reached"), not dropped silently:
  the ratio and its interval are over the seeds that reached (and whose baseline seed reached), which is stated
  beside it whenever that is fewer than the method's seeds. Leaving them out favours the method: read the count
  with the ratio.
- **Accuracy at fixed times.** At tⱼ = shareⱼ · budget, the budget being the baseline's median final training time
  (shares 0.25, 0.5, 0.75, 1 by default; 1 is always included): per seed the accuracy at tⱼ, its mean with the 95 %
  t interval over seeds (`stats.t_interval`) and, over the seeds shared with the baseline, the paired difference
  method − baseline with its 95 % t interval and paired t-test (`stats.paired`, ≥ 2 shared seeds).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustlearn.leaderboard.stats import DRAWS, LEVEL, SEED, Interval, Paired, paired, t_interval

TARGET_SHARE = 0.99  # target = this share of the baseline's mean final accuracy
SHARES = (0.25, 0.5, 0.75, 1.0)  # of the budget, the times at which accuracy is compared

Series = list[tuple[float, float]]  # (train_s_total, test acc) per evaluation, time ascending


def read_series(run_dir: str | Path) -> Series:
    """(train_s_total, test/acc) per epoch of one run from `<run_dir>/metrics.csv`, sorted by time; empty where the
    file or the columns are missing (rows without both values are left out)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    out = [(float(r["train_s_total"]), float(r["test/acc"])) for r in rows
           if r.get("train_s_total") not in (None, "") and r.get("test/acc") not in (None, "")]
    return sorted(out, key=lambda p: p[0])


def series(run: Any) -> Series:
    """The series of a run: a dict with `series` or with `run_dir` (its metrics.csv), or the series itself."""
    if isinstance(run, Mapping):
        if run.get("series") is not None:
            return sorted(((float(t), float(a)) for t, a in run["series"]), key=lambda p: p[0])
        if run.get("run_dir") is not None:
            return read_series(run["run_dir"])
        raise ValueError("a run dict needs 'series' or 'run_dir'")
    return sorted(((float(t), float(a)) for t, a in run), key=lambda p: p[0])


def crossing_time(run: Any, target: float) -> float | None:
    """Training time at which the run's test accuracy first reaches `target`, linearly interpolated between the two
    evaluations that bracket it: tᵢ₋₁ + (target − aᵢ₋₁) / (aᵢ − aᵢ₋₁) · (tᵢ − tᵢ₋₁) for the first i with aᵢ ≥
    target; t₀ if the first evaluation already reaches it; None if none does."""
    points = series(run)
    for i, (t, a) in enumerate(points):
        if a >= target:
            if i == 0:
                return t
            t0, a0 = points[i - 1]
            return t0 + (target - a0) / (a - a0) * (t - t0)  # a0 < target <= a: a - a0 > 0
    return None


def accuracy_at(run: Any, t: float) -> float | None:
    """Test accuracy of the run at training time `t`: linear interpolation between the evaluations that bracket
    `t`, the final accuracy after the last one, None before the first."""
    points = series(run)
    if not points or t < points[0][0]:
        return None
    for (t0, a0), (t1, a1) in zip(points, points[1:]):
        if t0 <= t < t1:
            return a0 + (t - t0) / (t1 - t0) * (a1 - a0)
    return points[-1][1]


def seeded(runs: Sequence[Any] | Mapping[Hashable, Any], method: str = "") -> list[tuple[Hashable, Series]]:
    """(seed, series) of each run with at least one evaluation. `runs`: a mapping seed -> run, or a list of runs
    whose seed is the dict's `seed` (a run without one gets the key ("no seed", method, i), never shared with another
    method) or, for a bare series, its position."""
    if isinstance(runs, Mapping):
        pairs = list(runs.items())
    else:
        pairs = []
        for i, run in enumerate(runs):
            if isinstance(run, Mapping):
                pairs.append((run["seed"] if run.get("seed") is not None else ("no seed", method, i), run))
            else:
                pairs.append((i, run))
    out = [(key, series(run)) for key, run in pairs]
    return [(key, s) for key, s in out if s]


def per_seed(runs: list[tuple[Hashable, Series]], value: Callable[[Series], float | None]) -> dict[Hashable, Any]:
    """seed -> the mean of `value` over the seed's runs; None if it is None for one of them."""
    grouped: dict[Hashable, list[float | None]] = {}
    for key, s in runs:
        grouped.setdefault(key, []).append(value(s))
    return {k: (None if any(v is None for v in vs) else math.fsum(vs) / len(vs)) for k, vs in grouped.items()}


def final_accuracy(run: Any) -> float:
    return series(run)[-1][1]


def final_time(run: Any) -> float:
    return series(run)[-1][0]


def target_accuracy(baseline_runs: Sequence[Any] | Mapping[Hashable, Any], share: float = TARGET_SHARE) -> float:
    """`share` · the mean over the baseline's seeds of their final test accuracy."""
    finals = per_seed(seeded(baseline_runs), final_accuracy)
    if not finals:
        raise ValueError("the baseline has no run with an evaluation")
    return share * math.fsum(finals.values()) / len(finals)


def _geomean(ratios: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(mean log r) along `axis`, clipped to [min r, max r] (where it lies, up to rounding): equal ratios give
    exactly their value."""
    g = np.exp(np.log(ratios).mean(axis=axis))
    return np.clip(g, ratios.min(axis=axis), ratios.max(axis=axis))


def bootstrap_geomean(
    ratios: Sequence[float], draws: int = DRAWS, seed: int = SEED, level: float = LEVEL
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the geometric mean of positive `ratios`: `draws` resamples with replacement
    (as many as there are), the ((1 − level) / 2, (1 + level) / 2) quantiles of their geometric means (numpy's
    linear interpolation). numpy Generator seeded with `seed`: deterministic. None with fewer than 2 ratios."""
    if draws < 1:
        raise ValueError(f"draws = {draws} must be >= 1")
    r = np.asarray(ratios, dtype=float)
    if len(r) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = _geomean(r[rng.integers(0, len(r), size=(draws, len(r)))], axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Ratio:
    """Geometric mean of the per-seed ratios method / baseline with its bootstrap interval and the t interval of
    the log ratios, exponentiated (each None with < 2 ratios); `ratios` seed -> rₛ over the seeds where both reached
    the target."""

    geomean: float | None
    low: float | None
    high: float | None
    ratios: dict[Hashable, float]
    t_low: float | None = None
    t_high: float | None = None

    @property
    def below_one(self) -> bool:
        """Both intervals lie below 1: faster than the baseline by both."""
        return self.high is not None and self.t_high is not None and self.high < 1.0 and self.t_high < 1.0

    @property
    def above_one(self) -> bool:
        """Both intervals lie above 1: slower than the baseline by both."""
        return self.low is not None and self.t_low is not None and self.low > 1.0 and self.t_low > 1.0

    @property
    def n(self) -> int:
        return len(self.ratios)


def ratio_to_baseline(
    method_times: Mapping[Hashable, float | None],
    baseline_times: Mapping[Hashable, float | None],
    draws: int = DRAWS,
    seed: int = SEED,
    level: float = LEVEL,
) -> Ratio:
    """Per seed both have, rₛ = method time / baseline time where both are positive numbers (reached); their
    geometric mean, its percentile bootstrap interval (`bootstrap_geomean`) and exp of the t interval of log rₛ
    (`stats.t_interval`), which does not narrow with few seeds as the percentile bootstrap does."""
    ratios = {k: float(t) / float(baseline_times[k]) for k, t in method_times.items()
              if t is not None and t > 0 and baseline_times.get(k) is not None and baseline_times[k] > 0}
    if not ratios:
        return Ratio(None, None, None, {})
    values = np.asarray(list(ratios.values()))
    interval = bootstrap_geomean(values, draws, seed, level)
    low, high = interval if interval is not None else (None, None)
    logs = t_interval(np.log(values), level)
    t_low, t_high = (None, None) if logs.low is None else (math.exp(logs.low), math.exp(logs.high))
    return Ratio(float(_geomean(values)), low, high, ratios, t_low, t_high)


@dataclass(frozen=True)
class AtTime:
    """Accuracy at training time `time` = `share` · budget: per seed, its mean with the t interval, and the paired
    difference against the baseline (None for the baseline itself and with fewer than 2 shared seeds)."""

    share: float
    time: float
    by_seed: dict[Hashable, float]
    acc: Interval | None
    delta: Paired | None


@dataclass
class MethodTimes:
    method: str
    crossing: dict[Hashable, float | None]  # seed -> crossing time, None: never reached
    ratio: Ratio
    at: list[AtTime] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.crossing)

    @property
    def reached(self) -> int:
        return sum(t is not None for t in self.crossing.values())

    @property
    def median_crossing(self) -> float | None:
        """Median crossing time over the seeds that reached the target."""
        times = [t for t in self.crossing.values() if t is not None]
        return statistics.median(times) if times else None

    @property
    def mean_crossing(self) -> float | None:
        """Mean crossing time over the seeds that reached the target."""
        times = [t for t in self.crossing.values() if t is not None]
        return math.fsum(times) / len(times) if times else None

    def at_share(self, share: float) -> AtTime | None:
        return next((a for a in self.at if math.isclose(a.share, share)), None)


@dataclass
class TimeToTarget:
    baseline: str
    target_share: float
    baseline_final: float  # mean over the baseline's seeds of the final accuracy
    target: float
    budget: float  # median over the baseline's seeds of their final training time
    draws: int
    seed: int
    level: float
    methods: list[MethodTimes]

    def row(self, method: str) -> MethodTimes:
        return next(m for m in self.methods if m.method == method)


def time_to_target(
    methods: Mapping[str, Sequence[Any] | Mapping[Hashable, Any]],
    baseline: str = "ce",
    target_share: float = TARGET_SHARE,
    shares: Sequence[float] = SHARES,
    draws: int = DRAWS,
    seed: int = SEED,
    level: float = LEVEL,
) -> TimeToTarget:
    """Per method (baseline first, then by name): crossing times of the target per seed, the ratio to the
    baseline's crossing on the same seed (geometric mean, bootstrap interval), and the accuracy at `shares` of the
    budget with the paired difference against the baseline. `methods`: name -> runs (see `seeded`)."""
    runs = {name: seeded(r, name) for name, r in methods.items()}
    runs = {name: r for name, r in runs.items() if r}
    if baseline not in runs:
        raise ValueError(f"no runs of the baseline '{baseline}' with an evaluation")
    base = runs[baseline]
    finals = per_seed(base, final_accuracy)
    baseline_final = math.fsum(finals.values()) / len(finals)
    target = target_share * baseline_final
    budget = statistics.median(per_seed(base, final_time).values())
    times = sorted({*(float(s) for s in shares), 1.0})
    base_crossing = per_seed(base, lambda s: crossing_time(s, target))
    base_at = {share: _present(per_seed(base, lambda s, t=share * budget: accuracy_at(s, t))) for share in times}
    out = []
    for name in sorted(runs, key=lambda m: (m != baseline, m)):
        crossing = per_seed(runs[name], lambda s: crossing_time(s, target))
        at = []
        for share in times:
            values = _present(per_seed(runs[name], lambda s, t=share * budget: accuracy_at(s, t)))
            delta = None if name == baseline else paired(values, base_at[share], level)
            at.append(AtTime(share, share * budget, values, t_interval(values.values(), level), delta))
        out.append(MethodTimes(name, crossing, ratio_to_baseline(crossing, base_crossing, draws, seed, level), at))
    return TimeToTarget(baseline, target_share, baseline_final, target, budget, draws, seed, level, out)


def _present(values: Mapping[Hashable, float | None]) -> dict[Hashable, float]:
    return {k: v for k, v in values.items() if v is not None}
