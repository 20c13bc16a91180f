"""Leaderboard plots as PNG bytes (matplotlib's Agg canvas; no display, no pyplot state).

- accuracy against noise rate, one figure per (dataset, noise kind): a line per method through the mean test
  accuracy at best validation, error bars ± one sample std over seeds; the noise-free cell of the same
  dataset, if any, is drawn at rate 0.
- gain over CE, one figure per cell that has `ce`: each method's mean test accuracy at best validation minus CE's,
  in points, error bars ± the method's sample std over seeds, CE's own ± std shaded around zero: what beats CE by
  more than the seeds' spread, at a glance.
- training curves, one figure per cell: test/acc and train/memorized per epoch, mean over the seeds of each
  method, read from `<run_dir>/metrics.csv` (runs whose file is missing are left out).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from robustlearn.leaderboard.aggregate import Cell, Leaderboard

CURVES = (("test/acc", "test accuracy (%)", 100.0), ("train/memorized", "memorized noisy labels (%)", 100.0))


@dataclass
class Plot:
    name: str  # file stem
    title: str
    png: bytes


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (Agg canvas, tight bounding box)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _slug(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", "_".join(str(p) for p in parts)).strip("_")


def colors(lb: Leaderboard) -> dict[str, str]:
    """One colour per method label, the same in every plot."""
    return {label: f"C{i % 10}" for i, label in enumerate(lb.summary.labels)}


def accuracy_vs_noise(lb: Leaderboard, dataset: str, kind: str) -> Plot | None:
    cells = [c for c in lb.cells if c.dataset == dataset and (c.noise_kind == kind or c.noise_kind == "none")]
    if not any(c.noise_kind == kind for c in cells) or len(cells) < 2:  # one rate: the gain plot says it better
        return None
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for label in lb.summary.labels:
        xs, ys, es = [], [], []
        for cell in sorted(cells, key=lambda c: c.noise_rate):
            row = cell.row(label)
            s = row.stats["test_acc_at_best_val"] if row else None
            if s is not None:
                xs.append(cell.noise_rate)
                ys.append(100 * s.mean)
                es.append(100 * (s.std or 0.0))
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label, color=colors(lb)[label])
    ax.set_xlabel(f"{kind} noise rate")
    ax.set_ylabel("test accuracy at best val (%)")
    ax.set_title(f"{dataset}: accuracy against {kind} noise")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    title = f"{dataset}: accuracy against {kind} noise"
    return Plot(_slug("accuracy_vs_noise", dataset, kind), title, figure_png(fig))


def gain_over_reference(cell: Cell, reference: str = "ce") -> Plot | None:
    ref = cell.row(reference)
    ref_stat = ref.stats.get("test_acc_at_best_val") if ref else None
    if ref_stat is None:
        return None
    rows = [(r.label, r.stats.get("test_acc_at_best_val")) for r in cell.rows if r.label != reference]
    rows = sorted(((label, s) for label, s in rows if s is not None), key=lambda x: x[1].mean)
    if not rows:
        return None
    fig = Figure(figsize=(6.4, 0.9 + 0.32 * len(rows)))
    ax = fig.add_subplot()
    band = 100 * (ref_stat.std or 0.0)
    ax.axvspan(-band, band, color="0.85", label=f"{reference} ± std")
    ax.axvline(0.0, color="0.3", lw=1)
    ys = range(len(rows))
    gains = [100 * (s.mean - ref_stat.mean) for _, s in rows]
    ax.errorbar(gains, ys, xerr=[100 * (s.std or 0.0) for _, s in rows], fmt="o", capsize=3, color="C0")
    ax.set_yticks(list(ys), [f"{label} (n={s.n})" for label, s in rows], fontsize="small")
    ax.set_xlabel(f"test accuracy at best val minus {reference}'s (points; {reference}: {100 * ref_stat.mean:.2f} %)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    title = f"{cell.title}: gain over {reference}"
    ax.set_title(title)
    return Plot(_slug("gain", cell.dataset, cell.noise_kind, f"{cell.noise_rate:g}"), title, figure_png(fig))


def read_metrics(run_dir: str | Path) -> dict[str, dict[int, float]]:
    """`metrics.csv` of a run as column -> {epoch: value}; blanks and NaN left out; {} if there is no file."""
    path = Path(run_dir) / "metrics.csv"
    out: dict[str, dict[int, float]] = {}
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                epoch = int(float(row["epoch"]))
                for key, text in row.items():
                    try:
                        value = float(text)
                    except (TypeError, ValueError):
                        continue
                    if key != "epoch" and math.isfinite(value):
                        out.setdefault(key, {})[epoch] = value
    except (OSError, KeyError, ValueError):
        return {}
    return out


def mean_curve(curves: list[dict[int, float]]) -> tuple[list[int], list[float]]:
    """Per epoch, the mean over the runs that have that epoch."""
    epochs = sorted({e for c in curves for e in c})
    return epochs, [math.fsum(c[e] for c in curves if e in c) / sum(e in c for c in curves) for e in epochs]


def training_curves(cell: Cell, palette: dict[str, str] | None = None) -> Plot | None:
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, len(CURVES))
    drawn = False
    for r in cell.rows:
        metrics = [read_metrics(run.get("run_dir") or "") for run in r.runs]
        for ax, (key, _, scale) in zip(axes, CURVES):
            curves = [m[key] for m in metrics if m.get(key)]
            if curves:
                epochs, values = mean_curve(curves)
                ax.plot(epochs, [scale * v for v in values], marker=".", label=f"{r.label} (n={len(curves)})",
                        color=(palette or {}).get(r.label))
                drawn = True
    if not drawn:
        return None
    for ax, (_, name, _) in zip(axes, CURVES):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if axes[-1].has_data():  # one legend, beside the plots, so that it hides no curve
        axes[-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{cell.title}: training curves (mean over seeds)")
    title = f"{cell.title}: training curves"
    return Plot(_slug("curves", cell.dataset, cell.noise_kind, f"{cell.noise_rate:g}"), title, figure_png(fig))


def make_plots(lb: Leaderboard) -> list[Plot]:
    """Accuracy against noise for each (dataset, noise kind), then the gain over CE and the training curves of each
    cell."""
    plots = []
    for dataset, kind in sorted({(c.dataset, c.noise_kind) for c in lb.cells if c.noise_kind != "none"}):
        plot = accuracy_vs_noise(lb, dataset, kind)
        if plot is not None:
            plots.append(plot)
    for cell in lb.cells:
        for plot in (gain_over_reference(cell), training_curves(cell, colors(lb))):
            if plot is not None:
                plots.append(plot)
    return plots


def save_plots(plots: list[Plot], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for plot in plots:
        path = folder / f"{plot.name}.png"
        path.write_bytes(plot.png)
        paths.append(path)
    return paths
