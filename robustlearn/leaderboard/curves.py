"""Per-epoch curves of the runs of a sweep, grouped by method and by the value of one varied key.

The reproductions compare curves rather than final numbers: the share of images predicted as the up-weighted class
against the epoch, one curve per class-weight ratio (Byrd & Lipton), or the Fisher trace against the epoch, one
curve per deficit length (Achille et al.). A sweep labels every run with one `key=value` tag per grid or case key;
`group` reads those tags back, `read_columns` reads a run's `metrics.csv`.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

Series = list[tuple[int, float]]  # (epoch, value), epochs where the column is empty left out


def tag_value(tags: Iterable[str], key: str):
    """The value of the `key=value` tag a sweep set for `key` (read back as YAML), or None."""
    for tag in tags:
        name, sep, text = tag.partition("=")
        if sep and name == key:
            return yaml.safe_load(text)
    return None


def read_columns(run_dir: str | Path, columns: Sequence[str]) -> dict[str, Series]:
    """`columns` of `<run_dir>/metrics.csv` as (epoch, value) series; a missing file or column gives empty series."""
    out: dict[str, Series] = {c: [] for c in columns}
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return out
    with path.open() as f:
        for row in csv.DictReader(f):
            for c in columns:
                text = row.get(c)
                if text not in (None, "") and row.get("epoch") not in (None, ""):
                    out[c].append((int(float(row["epoch"])), float(text)))
    return out


def group(rows: Iterable[dict], *keys: str) -> dict[tuple, list[str]]:
    """Completed runs by (method, value of each `keys` tag, None where a run lacks it): their run folders, in the
    store's order."""
    out: dict[tuple, list[str]] = {}
    for row in rows:
        if row.get("status") != "completed":
            continue
        values = tuple(tag_value(row.get("tags") or [], key) for key in keys)
        out.setdefault((row["method"], *values), []).append(row["run_dir"])
    return out


def mean_series(runs: Sequence[Series]) -> Series:
    """The mean over runs at each epoch that every run has."""
    if not runs:
        return []
    common = set.intersection(*({e for e, _ in r} for r in runs))
    by_run = [dict(r) for r in runs]
    return [(e, statistics.mean(r[e] for r in by_run)) for e in sorted(common)]


def one_class_epochs(curves: Sequence[Series], limit: float = 0.99) -> set[int]:
    """Epochs where some curve of predicted shares is at or beyond `limit` or 1 − `limit`: a network that predicts
    (nearly) a single class for every image. An untrained network does that, whatever its weights, so a spread
    between such curves measures the initialisation, not the weighting."""
    return {e for c in curves for e, v in c if v >= limit or v <= 1.0 - limit}


def spread(curves: Sequence[Series], smooth: int = 1, skip: Iterable[int] = ()) -> Series:
    """Per epoch, the largest minus the smallest value across `curves` (epochs all curves have), each curve first
    averaged over a trailing window of `smooth` epochs (1: as logged); epochs in `skip` (e.g. `one_class_epochs`)
    are removed from every curve before the smoothing."""
    if not curves:
        return []
    skip = set(skip)
    smoothed = [dict(trailing_mean([(e, v) for e, v in c if e not in skip], smooth)) for c in curves]
    common = sorted(set.intersection(*(set(c) for c in smoothed)))
    return [(e, max(c[e] for c in smoothed) - min(c[e] for c in smoothed)) for e in common]


def trailing_mean(series: Series, window: int) -> Series:
    """Each value replaced by the mean of itself and the window - 1 values before it (fewer at the start)."""
    if window < 1:
        raise ValueError(f"window = {window} must be >= 1")
    values = [v for _, v in series]
    return [(e, statistics.mean(values[max(0, i - window + 1): i + 1])) for i, (e, _) in enumerate(series)]


def peak_and_end(series: Series) -> dict[str, float]:
    """The largest value, its epoch, and the last value of a series (nan where it is empty)."""
    if not series:
        return {"peak": math.nan, "peak_epoch": math.nan, "end": math.nan, "end_epoch": math.nan}
    epoch, value = max(series, key=lambda ev: ev[1])
    return {"peak": value, "peak_epoch": epoch, "end": series[-1][1], "end_epoch": series[-1][0]}
