"""From results-store rows to leaderboard tables: mean ± std over seeds, ranks, relative time per epoch.

Rules (docs/leaderboard.md says the same):
- Only `completed` rows count. Rows with the same config hash are one run: the latest is kept.
- One table ("cell") per (dataset, noise_kind, noise_rate); its rows are methods. A method's label is its
  `method`, plus any `key=value` tags (set by sweeps from their grid) other than the cell's coordinates and
  seeds, so grid variants of a method (`gce [optim.lr=0.01]`) are not averaged together.
- mean and the sample standard deviation (ddof = 1) over the runs (seeds); with n = 1 there is no std (None,
  shown blank).
- rank: by mean test accuracy at the best validation epoch, highest first; equal means (to 12 decimals) share
  the best of their ranks ("1, 2, 2, 4"); a method without that metric has no rank.
- time per epoch: mean over runs of train_time_s / epochs_done; relative: divided by that of the method
  labelled `ce` in the same cell (None where the cell has no `ce`).
- summary: methods x cells, cell value = mean test accuracy at best validation; mean rank = the average of a
  method's ranks over the cells where it has one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

METRICS = ("test_acc_at_best_val", "test_acc_last")
REFERENCE = "ce"
# Tag keys that are cell coordinates or replicates, so not part of a method's label.
NOT_VARIANTS = ("data.name", "noise.kind", "noise.rate", "noise.seed", "seed", "method")
DIGITS = 12  # means equal to this many decimals tie


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # sample std (ddof=1); None when n == 1
    n: int


def stat(values: Iterable[Any]) -> Stat | None:
    """Mean and sample std of the finite numbers in `values`; None if there are none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None
    mean = math.fsum(xs) / len(xs)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return Stat(mean, std, len(xs))


@dataclass
class MethodRow:
    label: str
    method: str
    n: int
    stats: dict[str, Stat | None]  # metric -> Stat
    epoch_time_s: float | None
    time_rel: float | None = None
    rank: int | None = None
    runs: list[dict] = field(default_factory=list)

    def mean(self, metric: str) -> float | None:
        s = self.stats.get(metric)
        return s.mean if s is not None else None


@dataclass
class Cell:
    dataset: str
    noise_kind: str
    noise_rate: float
    rows: list[MethodRow]
    best: dict[str, set[str]] = field(default_factory=dict)  # column -> labels marked best

    @property
    def title(self) -> str:
        noise = "no noise" if self.noise_kind == "none" else f"{self.noise_kind} {self.noise_rate:g}"
        return f"{self.dataset} · {noise}"

    def row(self, label: str) -> MethodRow | None:
        return next((r for r in self.rows if r.label == label), None)


@dataclass
class Summary:
    labels: list[str]  # sorted by mean rank
    value: dict[tuple[str, int], float]  # (label, cell index) -> mean test_acc_at_best_val
    mean_rank: dict[str, float | None]
    best: dict[int, set[str]]  # cell index -> labels marked best


@dataclass
class Leaderboard:
    cells: list[Cell]
    summary: Summary
    n_runs: int


def variant(tags: Sequence[str] | None) -> list[str]:
    return [t for t in (tags or []) if "=" in t and t.split("=", 1)[0] not in NOT_VARIANTS]


def label_of(row: dict) -> str:
    """`method [grid variant] (oracle) †`: a run that read oracle information is never averaged with one that did
    not, and is marked."""
    extra = variant(row.get("tags"))
    label = f"{row['method']} [{', '.join(extra)}]" if extra else str(row["method"])
    oracle = row.get("oracle")
    return f"{label} ({oracle}) †" if oracle else label


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


def competition_ranks(values: dict[str, float | None]) -> dict[str, int | None]:
    """Rank 1 = highest; equal values share the lowest rank number of their group ("1, 2, 2, 4")."""
    ordered = sorted((round(v, DIGITS) for v in values.values() if v is not None), reverse=True)
    first = {}
    for i, v in enumerate(ordered, 1):
        first.setdefault(v, i)
    return {k: (first[round(v, DIGITS)] if v is not None else None) for k, v in values.items()}


def marks(values: dict[str, float | None], highest: bool) -> set[str]:
    present = {k: round(v, DIGITS) for k, v in values.items() if v is not None}
    if not present:
        return set()
    target = max(present.values()) if highest else min(present.values())
    return {k for k, v in present.items() if v == target}


def build_cell(dataset: str, kind: str, rate: float, rows: list[dict]) -> Cell:
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
            )
        )
    ref = next((r for r in out if r.label == REFERENCE), None)
    for r in out:
        if ref is not None and ref.epoch_time_s and r.epoch_time_s is not None:
            r.time_rel = r.epoch_time_s / ref.epoch_time_s
    ranks = competition_ranks({r.label: r.mean("test_acc_at_best_val") for r in out})
    for r in out:
        r.rank = ranks[r.label]
    out.sort(key=lambda r: (r.rank is None, r.rank or 0, r.label))
    best = {m: marks({r.label: r.mean(m) for r in out}, True) for m in METRICS}
    best["time_rel"] = marks({r.label: r.time_rel for r in out}, False)
    return Cell(dataset, kind, rate, out, best)


def summarize(cells: list[Cell]) -> Summary:
    value: dict[tuple[str, int], float] = {}
    ranks: dict[str, list[int]] = {}
    for i, cell in enumerate(cells):
        for r in cell.rows:
            s = r.stats["test_acc_at_best_val"]
            if s is not None:
                value[(r.label, i)] = s.mean
            ranks.setdefault(r.label, [])
            if r.rank is not None:
                ranks[r.label].append(r.rank)
    mean_rank = {k: (math.fsum(v) / len(v) if v else None) for k, v in ranks.items()}
    labels = sorted(ranks, key=lambda k: (mean_rank[k] is None, mean_rank[k] or 0.0, k))
    best = {i: marks({k: value.get((k, i)) for k in labels}, True) for i in range(len(cells))}
    return Summary(labels, value, mean_rank, best)


def aggregate(rows: Iterable[dict]) -> Leaderboard:
    """The leaderboard of store rows (any status; only completed ones are used)."""
    runs = dedupe(rows)
    groups: dict[tuple[str, str, float], list[dict]] = {}
    for row in runs:
        rate = round(float(row.get("noise_rate") or 0.0), 6)
        groups.setdefault((str(row.get("dataset")), str(row.get("noise_kind") or "none"), rate), []).append(
            row
        )
    cells = [build_cell(*key, groups[key]) for key in sorted(groups)]
    return Leaderboard(cells, summarize(cells), len(runs))
