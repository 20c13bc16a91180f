"""The noisy-label benchmark pages (docs/benchmarks/noisy_labels.md, noisy_selection.md) from their bundles.

One table per noise setting (the leaderboard's: mean with its 95 % t interval, the paired difference against CE over
shared seeds with Holm's correction, the bootstrap rank interval), the plain lists of what beats CE, what does worse
and what cannot be told apart from it, the share of flipped samples memorised at the last epoch, the settings each
method ran with, and two figures per setting (the paired gain over CE; test accuracy and memorisation per epoch).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from matplotlib.figure import Figure

from robustlearn.leaderboard.aggregate import Cell, MethodRow, aggregate
from robustlearn.leaderboard.plots import figure_png, gain_over_reference, styles
from robustlearn.leaderboard.render import cell_markdown
from robustlearn.leaderboard.stats import ALPHA, DRAWS, t_interval
from robustlearn.report.bundle import Bundle
from robustlearn.report.numbers import acc_ci, pct, table

BASELINE = "ce"


def last_value(bundle: Bundle, run_id: str, column: str) -> float | None:
    series = bundle.series(run_id, column)
    return series[-1][1] if series else None


def slug(cell: Cell) -> str:
    return f"{cell.dataset}_{cell.noise_kind}_{cell.noise_rate:g}"


def verdicts(cell: Cell) -> dict[str, list[str]]:
    """Practical methods better / worse than the baseline (Holm-marked), or not told apart; oracle rows apart."""
    out: dict[str, list[str]] = {"better": [], "worse": [], "same": [], "oracle": [], "untested": []}
    for r in cell.rows:
        if r.label == cell.baseline:
            continue
        if r.oracle:
            key = "oracle"
        elif r.delta is None:
            key = "untested"
        elif r.marked:
            key = "better" if r.delta.delta > 0 else "worse"
        else:
            key = "same"
        out[key].append(difference_text(r))
    return out


def difference_text(r: MethodRow) -> str:
    if r.delta is None:
        return f"`{r.label}`"
    d = r.delta
    return f"`{r.label}` ({100 * d.delta:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}])".replace("-", "−")


def memorised(bundle: Bundle, cell: Cell) -> str:
    """Last-epoch `train/memorized` (share of flipped samples predicted as their noisy label), mean [95 % CI]."""
    rows = []
    for r in cell.rows:
        values = [last_value(bundle, run["run_id"], "train/memorized") for run in r.runs]
        rows.append([r.label, acc_ci(t_interval(v for v in values if v is not None))])
    return table(["Method", "memorised at the last epoch (% of flipped samples) [95 % CI]"], rows)


def curves_figure(bundle: Bundle, cell: Cell, path: Path) -> None:
    labels = [r.label for r in cell.rows]
    palette = styles(labels)
    fig = Figure(figsize=(13, 5.2))
    left, right = fig.subplots(1, 2)
    for r in cell.rows:
        for ax, column, scale in ((left, "test/acc", 100), (right, "train/memorized", 100)):
            per_run = [dict(bundle.series(run["run_id"], column)) for run in r.runs]
            common = sorted(set.intersection(*(set(c) for c in per_run))) if per_run else []
            if common:
                ax.plot(common, [scale * statistics.mean(c[e] for c in per_run) for e in common], label=r.label,
                        **palette[r.label].kwargs())
    left.set_xlabel("epoch")
    left.set_ylabel("test accuracy (%), mean over seeds")
    right.set_xlabel("epoch")
    right.set_ylabel("flipped samples predicted as their noisy label (%)")
    left.set_title(f"{cell.title}: test accuracy")
    right.set_title(f"{cell.title}: memorisation")
    right.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    path.write_bytes(figure_png(fig))


def settings_table(bundle: Bundle) -> str:
    seen: dict[tuple[str, str], list[str]] = {}
    for run in bundle.runs:
        names = run.get("settings_applied") or []
        if names:
            seen.setdefault((str(run["method"]), f"{run['noise_kind']} {run['noise_rate']:g}"), names)
    if not seen:
        return "No method ran with a per-dataset setting."
    return table(["Method", "noise", "settings applied (its YAML names the source)"],
                 [[f"`{m}`", n, ", ".join(s)] for (m, n), s in sorted(seen.items())], align="lll")


def context(bundle: Bundle, figures: Path) -> dict:
    lb = aggregate(bundle.runs, baseline=BASELINE)
    cells = []
    for cell in lb.cells:
        name = slug(cell)
        gain = gain_over_reference(cell)
        if gain is not None:
            (figures / f"gain_{name}.png").write_bytes(gain.png)
        curves_figure(bundle, cell, figures / f"curves_{name}.png")
        base = cell.row(BASELINE)
        actual = [r["noise_rate_actual"] for r in bundle.runs if r["noise_kind"] == cell.noise_kind
                  and r.get("noise_rate_actual") is not None]
        cells.append({
            "title": cell.title, "slug": name, "table": cell_markdown(cell, lb.draws), "verdicts": verdicts(cell),
            "baseline": acc_ci(base.ci.get("test_acc_at_best_val")) if base else "–",
            "compared": cell.compared, "memorised": memorised(bundle, cell),
            "rate_actual": pct(statistics.mean(actual), 1) if actual else "–",
            "methods": len(cell.rows),
        })
    seeds = sorted({int(r["seed"]) for r in bundle.runs})
    return {
        "cells": cells, "runs": len(bundle.runs), "seeds": len(seeds), "seed_list": ", ".join(map(str, seeds)),
        "exported": bundle.manifest.get("exported", ""), "alpha": ALPHA, "draws": DRAWS, "baseline": BASELINE,
        "settings": settings_table(bundle),
        "methods": len({r["method"] for r in bundle.runs}),
    }
