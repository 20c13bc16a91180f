"""Accuracy against wall-clock time: the comparison of samplers with uniform training at equal time.

From a results store, each completed run's `metrics.csv` gives test accuracy per epoch against `train_s_total`
(training time since the start, evaluation left out); `curves` groups the runs by method, with their seeds. The
statistics that compare methods — per-seed time to a target below the plateau, its ratio to the baseline with a
bootstrap interval, accuracy at fixed training times with paired differences — are in
`robustlearn.leaderboard.time_to_target` (`Curve.as_runs` hands a method's runs to it).

The plot (`plot`): thin lines per seed; the thick line is the mean curve, averaged on a common time grid (the union
of the method's evaluation times) by linear interpolation of each seed between its evaluations, over the seeds that
have reached that time (their first evaluation is at or before it; after its last evaluation a seed keeps its final
accuracy), so the mean line starts at the first evaluation of any seed instead of waiting for every seed. With a
target it draws the target as a horizontal line and each method's mean crossing time (over the seeds that reached
it) as a diamond on that line.

`compare` and `markdown` below are the older summary of the mean curve (time for the mean curve to reach the
baseline's final mean accuracy, a point on the plateau: mostly noise, no interval); `benchmarks/time_to_accuracy.py`
uses `time_to_target` instead. Their definitions:

- `acc_at_budget`: mean test accuracy at the baseline's time budget (the mean over its seeds of their total time),
  each seed at the last epoch finished by then (step interpolation, `Curve.at`);
- `time_to_baseline`: the first time the method's step mean curve reaches the baseline's final mean accuracy, and
  the share of the budget that saves (`saved`, negative where it needs longer, None where it never gets there).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from robustlearn.leaderboard.plots import figure_png
from robustlearn.leaderboard.time_to_target import accuracy_at, read_series


@dataclass
class Curve:
    method: str
    runs: list[list[tuple[float, float]]] = field(default_factory=list)  # per seed: (train_s_total, test acc)
    seeds: list[Hashable] = field(default_factory=list)  # the seed of each run; empty: its position in `runs`

    def seed_keys(self) -> list[Hashable]:
        if not self.seeds:
            return list(range(len(self.runs)))
        if len(self.seeds) != len(self.runs):
            raise ValueError(f"{self.method}: {len(self.seeds)} seeds for {len(self.runs)} runs")
        return list(self.seeds)

    def as_runs(self) -> list[dict]:
        """The runs as `time_to_target` takes them: [{"seed": seed, "series": run}, ...]."""
        return [{"seed": k, "series": run} for k, run in zip(self.seed_keys(), self.runs)]

    def mean_curve(self) -> tuple[list[float], list[float]]:
        """(grid, mean accuracy): on the union of the evaluation times, the mean over the seeds whose first
        evaluation is at or before each time of their linearly interpolated accuracy (held after their last)."""
        grid = self.times()
        means = []
        for t in grid:
            values = [a for a in (accuracy_at(run, t) for run in self.runs) if a is not None]
            means.append(math.fsum(values) / len(values))  # every grid time is some seed's evaluation: never empty
        return grid, means

    @property
    def end_time(self) -> float:
        return statistics.mean(r[-1][0] for r in self.runs)

    def at(self, t: float) -> float:
        """Mean over seeds of the accuracy of the last epoch finished by `t` (nan where a seed has none yet)."""
        values = []
        for run in self.runs:
            done = [acc for time, acc in run if time <= t + 1e-9]
            values.append(done[-1] if done else math.nan)
        return statistics.mean(values)

    def times(self) -> list[float]:
        return sorted({time for run in self.runs for time, _ in run})

    def final(self) -> float:
        return statistics.mean(r[-1][1] for r in self.runs)

    def first_reaching(self, acc: float) -> float | None:
        for t in self.times():
            value = self.at(t)
            if not math.isnan(value) and value >= acc:
                return t
        return None


def read_curve(run_dir: str | Path) -> list[tuple[float, float]]:
    """(train_s_total, test/acc) per epoch of one run; empty where the file or the columns are missing."""
    return read_series(run_dir)


def curves(rows: list[dict]) -> dict[str, Curve]:
    out: dict[str, Curve] = {}
    for row in rows:
        if row.get("status") != "completed":
            continue
        run = read_curve(row["run_dir"])
        if run:
            curve = out.setdefault(row["method"], Curve(row["method"]))
            seed = row.get("seed")
            curve.seeds.append(seed if seed is not None else ("no seed", row["method"], len(curve.runs)))
            curve.runs.append(run)
    return out


def compare(found: dict[str, Curve], baseline: str = "ce") -> list[dict]:
    """One row per method: seeds, final accuracy, accuracy at the baseline's budget, time to the baseline's final
    accuracy and the share of the budget saved."""
    if baseline not in found:
        raise ValueError(f"no completed runs of the baseline '{baseline}' with metrics.csv")
    base = found[baseline]
    budget, target = base.end_time, base.final()
    table = []
    for name, curve in sorted(found.items(), key=lambda kv: (kv[0] != baseline, kv[0])):
        reach = curve.first_reaching(target)
        table.append({"method": name, "seeds": len(curve.runs), "end_time_s": curve.end_time,
                      "final_acc": curve.final(), "acc_at_budget": curve.at(budget), "budget_s": budget,
                      "time_to_baseline_s": reach, "saved": None if reach is None else 1.0 - reach / budget})
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| method | seeds | final test acc (%) | test acc at uniform's time (%) | time to uniform's final acc (s) "
             "| time saved |", "|---|---:|---:|---:|---:|---:|"]
    for r in table:
        reach = "never" if r["time_to_baseline_s"] is None else f"{r['time_to_baseline_s']:.1f}"
        saved = "–" if r["saved"] is None else f"{100 * r['saved']:+.0f} %"
        at = "–" if math.isnan(r["acc_at_budget"]) else f"{100 * r['acc_at_budget']:.2f}"
        lines.append(f"| {r['method']} | {r['seeds']} | {100 * r['final_acc']:.2f} | {at} | {reach} | {saved} |")
    return "\n".join(lines)


def plot(found: dict[str, Curve], title: str, target: float | None = None,
         crossings: Mapping[str, float | None] | None = None,
         reached: Mapping[str, tuple[int, int]] | None = None) -> bytes:
    """Test accuracy against training time, one colour per method: thin lines per seed, the thick line their mean
    curve (`Curve.mean_curve`). With `target`, a dashed horizontal line at it and, from `crossings` (method -> mean
    crossing time over the seeds that reached the target), a diamond on that line per method; `reached` (method ->
    (seeds that reached, seeds)) adds "k of n seeds" to the legend where k < n. PNG bytes."""
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    crossings, reached = crossings or {}, reached or {}
    for i, (name, curve) in enumerate(sorted(found.items())):
        colour = f"C{i % 10}"
        for run in curve.runs:
            ax.plot([t for t, _ in run], [100 * a for _, a in run], color=colour, alpha=0.25, linewidth=0.8)
        grid, means = curve.mean_curve()
        cross = crossings.get(name) if target is not None else None
        k, n = reached.get(name, (len(curve.runs), len(curve.runs)))
        label = name if cross is None else f"{name} (◆ mean crossing {cross:.1f} s" + (
            f", {k} of {n} seeds)" if k < n else ")")
        ax.plot(grid, [100 * a for a in means], color=colour, label=label)
        if cross is not None:
            ax.plot([cross], [100 * target], marker="D", markersize=6, color=colour, markeredgecolor="black",
                    linestyle="none", zorder=5)
    if target is not None:
        ax.axhline(100 * target, color="0.3", linestyle="--", linewidth=0.9, label=f"target {100 * target:.2f} %")
    ax.set_xlabel("training time (s, evaluation excluded)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)
