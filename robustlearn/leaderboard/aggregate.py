"""From results-store rows to leaderboard tables: mean ± std and t intervals over seeds, paired differences against a
baseline with Holm's correction, ranks with bootstrap intervals, relative time per epoch.

Rules (docs/leaderboard.md says the same; the formulas are in stats.py):
- Only `completed` rows count. Rows with the same config hash are one run: the latest is kept.
- One table ("cell") per (dataset, noise_kind, noise_rate); its rows are methods. A method's label is its
  `method`, plus any `key=value` tags (set by sweeps from their grid) other than the cell's coordinates and
  seeds, so grid variants of a method (`gce [optim.lr=0.01]`) are not averaged together.
- mean and the sample standard deviation (ddof = 1) over the runs (seeds); with n = 1 there is no std (None,
  shown blank). Each metric also gets its 95 % t interval over the runs (none for n = 1).
- paired comparison with the baseline (the method labelled `ce` unless told), on test accuracy at best validation:
  runs matched by their `seed` column (a seed's value is the mean of the method's runs with that seed, normally
  one; runs without a seed are not paired); the mean difference method − baseline, its 95 % t interval and the
  paired t-test p. None for the baseline itself and with fewer than 2 shared seeds. Holm's correction over the
  methods compared with the baseline in the cell (oracle rows included); marked where the adjusted p < 0.05.
- rank: by mean test accuracy at the best validation epoch, highest first; equal means (to 12 decimals) share
  the best of their ranks ("1, 2, 2, 4"). A method without that metric, or an oracle row (label ending in " †"),
  has no rank and does not shift the others'. The rank interval: bootstrap over seeds among the ranked rows.
- rows sorted by rank (ties by label), then the unranked rows by mean (highest first), then by label.
- best per column (bold when rendered): the highest accuracy means, the lowest relative time, among the practical
  rows (oracle rows are never marked best).
- time per epoch: mean over runs of train_time_s / epochs_done; relative: divided by that of the method
  labelled `ce` in the same cell (None where the cell has no `ce`).
- summary: methods x cells, cell value = mean test accuracy at best validation; mean rank = the average of a
  method's ranks over the cells where it has one; rows sorted by mean rank (lowest first, none last), then label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from robustlearn.leaderboard.stats import (
    ALPHA,
    DIGITS,
    DRAWS,
    SEED,
    Interval,
    Paired,
    bootstrap_ranks,
    competition_ranks,
    finite,
    holm,
    mean_std,
    paired,
    t_interval,
)

METRICS = ("test_acc_at_best_val", "test_acc_last")
PRIMARY = "test_acc_at_best_val"  # what ranks, paired differences and the summary use
REFERENCE = "ce"  # default baseline; time per epoch is always relative to it
ORACLE = " †"  # label suffix of a run that read oracle information
# Tag keys that are cell coordinates or replicates, so not part of a method's label.
NOT_VARIANTS = ("data.name", "noise.kind", "noise.rate", "noise.seed", "seed", "method")


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # sample std (ddof=1); None when n == 1
    n: int


def stat(values: Iterable[Any]) -> Stat | None:
    """Mean and sample std of the finite numbers in `values`; None if there are none."""
    xs = finite(values)
    if not xs:
        return None
    return Stat(*mean_std(xs), len(xs))


@dataclass
class MethodRow:
    label: str
    method: str
    n: int
    stats: dict[str, Stat | None]  # metric -> Stat
    epoch_time_s: float | None
    time_rel: float | None = None
    rank: int | None = None  # competition rank of the PRIMARY mean; None for oracle rows and without the metric
    runs: list[dict] = field(default_factory=list)
    ci: dict[str, Interval | None] = field(default_factory=dict)  # metric -> mean with its 95 % t interval
    delta: Paired | None = None  # PRIMARY, this method − the baseline over shared seeds
    p_holm: float | None = None  # delta's p, Holm-adjusted over the cell's comparisons
    marked: bool = False  # p_holm < ALPHA
    rank_low: int | None = None  # bootstrap 2.5 % percentile of the rank
    rank_high: int | None = None  # bootstrap 97.5 % percentile of the rank

    def mean(self, metric: str) -> float | None:
        s = self.stats.get(metric)
        return s.mean if s is not None else None

    @property
    def oracle(self) -> bool:
        """Reads oracle information: listed, never ranked."""
        return self.label.endswith(ORACLE)


@dataclass
class Cell:
    dataset: str
    noise_kind: str
    noise_rate: float
    rows: list[MethodRow]
    best: dict[str, set[str]] = field(default_factory=dict)  # column -> labels marked best (oracle rows never)
    baseline: str = REFERENCE

    @property
    def title(self) -> str:
        noise = "no noise" if self.noise_kind == "none" else f"{self.noise_kind} {self.noise_rate:g}"
        return f"{self.dataset} · {noise}"

    @property
    def compared(self) -> int:
        """m: the methods compared with the baseline here (those with a paired difference), Holm's family."""
        return sum(r.delta is not None for r in self.rows)

    def row(self, label: str) -> MethodRow | None:
        return next((r for r in self.rows if r.label == label), None)


@dataclass
class Summary:
    labels: list[str]  # sorted by mean rank (lowest first, none last), then label
    value: dict[tuple[str, int], float]  # (label, cell index) -> mean test_acc_at_best_val
    mean_rank: dict[str, float | None]
    best: dict[int, set[str]]  # cell index -> labels marked best (oracle rows never)


@dataclass
class Leaderboard:
    cells: list[Cell]
    summary: Summary
    n_runs: int
    baseline: str = REFERENCE
    draws: int = DRAWS  # bootstrap draws B of the rank intervals

    def labels(self) -> set[str]:
        return {r.label for c in self.cells for r in c.rows}


def variant(tags: Sequence[str] | None) -> list[str]:
    return [t for t in (tags or []) if "=" in t and t.split("=", 1)[0] not in NOT_VARIANTS]


def label_of(row: dict) -> str:
    """`method [grid variant] (oracle) †`: a run that read oracle information is never averaged with one that did
    not, and is marked. A run of a tuned method YAML (`robustlearn tune`) shows its budget: `gce-tuned [20 trials]`."""
    extra = variant(row.get("tags"))
    if row.get("tuned"):
        extra = [*extra, str(row["tuned"])]
    label = f"{row['method']} [{', '.join(extra)}]" if extra else str(row["method"])
    oracle = row.get("oracle")
    return f"{label} ({oracle}){ORACLE}" if oracle else label


def dedupe(rows: Iterable[dict]) -> list[dict]:
    """Completed rows, one per config hash (the latest finished)."""
    latest: dict[Any, dict] = {}
    for i, row in enumerate(r for r in rows if r.get("status") == "completed"):
        key = row.get("config_hash") or ("row", i)
        old = latest.get(key)
        if old is None or (row.get("finished_at") or 0) >= (old.get("finished_at") or 0):
            latest[key] = row
    return list(latest.values())


def epoch_time(row: dict) -> float | None:
    t, e = row.get("train_time_s"), row.get("epochs_done")
    return float(t) / float(e) if t is not None and e else None


def by_seed(runs: Iterable[dict], metric: str) -> dict[Any, float]:
    """seed -> the mean of `metric` over the runs with that seed (finite values only; runs without a seed left
    out)."""
    values: dict[Any, list[float]] = {}
    for run in runs:
        xs = finite([run.get(metric)])
        if run.get("seed") is not None and xs:
            values.setdefault(run["seed"], []).append(xs[0])
    return {k: math.fsum(v) / len(v) for k, v in values.items()}


def marks(values: dict[str, float | None], highest: bool) -> set[str]:
    present = {k: round(v, DIGITS) for k, v in values.items() if v is not None}
    if not present:
        return set()
    target = max(present.values()) if highest else min(present.values())
    return {k for k, v in present.items() if v == target}


def _order(r: MethodRow) -> tuple:
    """Ranked rows by rank then label; unranked rows after them, by mean (highest first) then label."""
    if r.rank is not None:
        return (0, r.rank, 0.0, r.label)
    m = r.mean(PRIMARY)
    return (1, 0, math.inf if m is None else -m, r.label)


def compare(rows: list[MethodRow], baseline: str) -> None:
    """Paired differences against the `baseline` row, Holm-adjusted over the rows compared."""
    base = next((r for r in rows if r.label == baseline), None)
    if base is None:
        return
    ref = by_seed(base.runs, PRIMARY)
    for r in rows:
        if r is not base:
            r.delta = paired(by_seed(r.runs, PRIMARY), ref)
    adjusted = holm({r.label: r.delta.p for r in rows if r.delta is not None}, ALPHA)
    for r in rows:
        if r.label in adjusted:
            r.p_holm, r.marked = adjusted[r.label]


def rank(rows: list[MethodRow], draws: int, seed: int) -> None:
    """Competition ranks and bootstrap rank intervals of the practical rows that have the PRIMARY metric."""
    ranked = [r for r in rows if not r.oracle and r.stats.get(PRIMARY) is not None]
    ranks = competition_ranks({r.label: r.mean(PRIMARY) for r in ranked})
    intervals = bootstrap_ranks({r.label: finite(run.get(PRIMARY) for run in r.runs) for r in ranked}, draws, seed)
    for r in ranked:
        r.rank = ranks[r.label]
        r.rank_low, r.rank_high = intervals[r.label].low, intervals[r.label].high


def build_cell(
    dataset: str, kind: str, rate: float, rows: list[dict], baseline: str = REFERENCE, draws: int = DRAWS,
    seed: int = SEED,
) -> Cell:  # fmt: skip
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(label_of(row), []).append(row)
    out = []
    for label, runs in by_label.items():
        times = stat(epoch_time(r) for r in runs)
        out.append(
            MethodRow(
                label,
                str(runs[0]["method"]),
                len(runs),
                {m: stat(r.get(m) for r in runs) for m in METRICS},
                times.mean if times else None,
                runs=runs,
                ci={m: t_interval(r.get(m) for r in runs) for m in METRICS},
            )
        )
    ref = next((r for r in out if r.label == REFERENCE), None)
    for r in out:
        if ref is not None and ref.epoch_time_s and r.epoch_time_s is not None:
            r.time_rel = r.epoch_time_s / ref.epoch_time_s
    compare(out, baseline)
    rank(out, draws, seed)
    out.sort(key=_order)
    practical = [r for r in out if not r.oracle]
    best = {m: marks({r.label: r.mean(m) for r in practical}, True) for m in METRICS}
    best["time_rel"] = marks({r.label: r.time_rel for r in practical}, False)
    return Cell(dataset, kind, rate, out, best, baseline)


def summarize(cells: list[Cell]) -> Summary:
    value: dict[tuple[str, int], float] = {}
    ranks: dict[str, list[int]] = {}
    for i, cell in enumerate(cells):
        for r in cell.rows:
            s = r.stats[PRIMARY]
            if s is not None:
                value[(r.label, i)] = s.mean
            ranks.setdefault(r.label, [])
            if r.rank is not None:
                ranks[r.label].append(r.rank)
    mean_rank = {k: (math.fsum(v) / len(v) if v else None) for k, v in ranks.items()}
    labels = sorted(ranks, key=lambda k: (mean_rank[k] is None, mean_rank[k] or 0.0, k))
    practical = [k for k in labels if not k.endswith(ORACLE)]
    best = {i: marks({k: value.get((k, i)) for k in practical}, True) for i in range(len(cells))}
    return Summary(labels, value, mean_rank, best)


def aggregate(rows: Iterable[dict], baseline: str = REFERENCE, draws: int = DRAWS, seed: int = SEED) -> Leaderboard:
    """The leaderboard of store rows (any status; only completed ones are used), each method compared with the one
    labelled `baseline` in its cell (cells without it get no comparisons); `draws` bootstrap draws of the seeds,
    from a generator seeded with `seed`, for the rank intervals."""
    runs = dedupe(rows)
    groups: dict[tuple[str, str, float], list[dict]] = {}
    for row in runs:
        rate = round(float(row.get("noise_rate") or 0.0), 6)
        groups.setdefault((str(row.get("dataset")), str(row.get("noise_kind") or "none"), rate), []).append(
            row
        )
    cells = [build_cell(*key, groups[key], baseline, draws, seed) for key in sorted(groups)]
    return Leaderboard(cells, summarize(cells), len(runs), baseline, draws)
