"""Accuracy against wall-clock time: the comparison of samplers with uniform training at equal time.

From a results store, each completed run's `metrics.csv` gives test accuracy per epoch against `train_s_total`
(training time since the start, evaluation left out). Per method the curves of its seeds are put on one time grid
(step interpolation: the accuracy at time t is that of the last epoch finished by t) and averaged. Against the
baseline (uniform training, `ce`) it reports, per method:

- `acc_at_budget`: mean test accuracy at the baseline's time budget (the mean over its seeds of their total time);
- `time_to_baseline`: the first time the method's mean curve reaches the baseline's final mean accuracy, and the
  share of the budget that saves (`saved`, negative where it needs longer, None where it never gets there).
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from robustlearn.leaderboard.plots import figure_png


@dataclass
class Curve:
    method: str
    runs: list[list[tuple[float, float]]] = field(default_factory=list)  # per seed: (train_s_total, test acc)

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
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return [(float(r["train_s_total"]), float(r["test/acc"])) for r in rows
            if r.get("train_s_total") not in (None, "") and r.get("test/acc") not in (None, "")]


def curves(rows: list[dict]) -> dict[str, Curve]:
    out: dict[str, Curve] = {}
    for row in rows:
        if row.get("status") != "completed":
            continue
        run = read_curve(row["run_dir"])
        if run:
            out.setdefault(row["method"], Curve(row["method"])).runs.append(run)
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


def plot(found: dict[str, Curve], title: str) -> bytes:
    """Mean test accuracy against training time, one line per method, thin lines per seed; PNG bytes."""
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    for i, (name, curve) in enumerate(sorted(found.items())):
        colour = f"C{i % 10}"
        for run in curve.runs:
            ax.plot([t for t, _ in run], [100 * a for _, a in run], color=colour, alpha=0.25, linewidth=0.8)
        grid = curve.times()
        ax.plot(grid, [100 * curve.at(t) for t in grid], color=colour, label=name, drawstyle="steps-post")
    ax.set_xlabel("training time (s, evaluation excluded)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)
