"""Leaderboard plots as PNG bytes (matplotlib's Agg canvas; no display, no pyplot state).

- accuracy against noise rate, one figure per (dataset, noise kind): a line per method through the mean test
  accuracy at best validation, error bars ± one sample std over seeds; the noise-free cell of the same
  dataset, if any, is drawn at rate 0.
- gain over the baseline (`ce` unless told), one figure per cell that has it: each method's paired mean difference
  of test accuracy at best validation to the baseline, in points, with its 95 % t interval over the shared seeds
  (the leaderboard's Δ column; `*` after the name where the Holm-adjusted p < 0.05). A method sharing fewer than 2
  seeds with the baseline is drawn hollow, grey, without error bar, at the difference of the two means.
- training curves, one figure per cell: test/acc and train/memorized per epoch, mean over the seeds of each
  method, read from `<run_dir>/metrics.csv` (runs whose file is missing are left out).

Every method keeps one style (colour, marker, line style) in all plots: `styles` gives distinct styles to up to
720 labels (20 tab20 colours × 4 line styles make 80 pairs; 9 markers, coprime with 80, make 720 triples).
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

from robustlearn.leaderboard.aggregate import PRIMARY, Cell, Leaderboard

CURVES = (("test/acc", "test accuracy (%)", 100.0), ("train/memorized", "memorized noisy labels (%)", 100.0))
# tab20's 10 dark colours, then its 10 light ones: the first ten series get the strong ones.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5")  # fmt: skip
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str

    def kwargs(self) -> dict[str, str]:
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


def style(i: int) -> Style:
    """The i-th series' style: colour i mod 20, line style ⌊i / 20⌋ mod 4, marker i mod 9 (distinct for i < 720)."""
    return Style(COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)],
                 LINESTYLES[(i // len(COLOURS)) % len(LINESTYLES)])  # fmt: skip


def styles(labels: list[str]) -> dict[str, Style]:
    """One style per label, by its position in `labels` (the same order gives the same styles)."""
    return {label: style(i) for i, label in enumerate(labels)}


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


def accuracy_vs_noise(lb: Leaderboard, dataset: str, kind: str) -> Plot | None:
    cells = [c for c in lb.cells if c.dataset == dataset and (c.noise_kind == kind or c.noise_kind == "none")]
    if not any(c.noise_kind == kind for c in cells) or len(cells) < 2:  # one rate: the gain plot says it better
        return None
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    palette = styles(lb.summary.labels)
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
            ax.errorbar(xs, ys, yerr=es, capsize=3, label=label, **palette[label].kwargs())
    ax.set_xlabel(f"{kind} noise rate")
    ax.set_ylabel("test accuracy at best val (%)")
    ax.set_title(f"{dataset}: accuracy against {kind} noise")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside: hides no line
    title = f"{dataset}: accuracy against {kind} noise"
    return Plot(_slug("accuracy_vs_noise", dataset, kind), title, figure_png(fig))


def gain_over_reference(cell: Cell) -> Plot | None:
    """The paired gain of every method over the cell's baseline, with its 95 % t interval; None without the baseline
    or without another method."""
    reference = cell.baseline
    ref = cell.row(reference)
    ref_stat = ref.stats.get(PRIMARY) if ref else None
    if ref is None or ref_stat is None:
        return None
    gain = lambda r: r.delta.delta if r.delta is not None else r.stats[PRIMARY].mean - ref_stat.mean
    rows = sorted((r for r in cell.rows if r is not ref and r.stats.get(PRIMARY) is not None), key=gain)
    if not rows:
        return None
    fig = Figure(figsize=(6.4, 0.9 + 0.32 * len(rows)))
    ax = fig.add_subplot()
    ax.axvline(0.0, color="0.3", lw=1)
    pairs = [(y, r.delta) for y, r in enumerate(rows) if r.delta is not None]
    if pairs:
        xs = [100 * d.delta for _, d in pairs]
        err = [[100 * (d.delta - d.low) for _, d in pairs], [100 * (d.high - d.delta) for _, d in pairs]]
        ax.errorbar(xs, [y for y, _ in pairs], xerr=err, fmt="o", capsize=3, color="C0",
                    label="paired mean difference, 95 % t interval (* Holm-adjusted p < 0.05)")  # fmt: skip
    alone = [(y, r) for y, r in enumerate(rows) if r.delta is None]
    if alone:
        ax.plot([100 * gain(r) for _, r in alone], [y for y, _ in alone], "o", mfc="none", color="0.45",
                label="difference of means (< 2 shared seeds)")  # fmt: skip
    names = [f"{r.label} (n={r.delta.n} paired){' *' if r.marked else ''}" if r.delta else f"{r.label} (n={r.n})"
             for r in rows]  # fmt: skip
    ax.set_yticks(list(range(len(rows))), names, fontsize="small")
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


def training_curves(cell: Cell, palette: dict[str, Style] | None = None) -> Plot | None:
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, len(CURVES))
    drawn = False
    for r in cell.rows:
        metrics = [read_metrics(run.get("run_dir") or "") for run in r.runs]
        for ax, (key, _, scale) in zip(axes, CURVES):
            curves = [m[key] for m in metrics if m.get(key)]
            if curves:
                epochs, values = mean_curve(curves)
                st = (palette or {}).get(r.label)
                ax.plot(epochs, [scale * v for v in values], label=f"{r.label} (n={len(curves)})",
                        **(st.kwargs() if st else {"marker": "."}), markersize=4,
                        markevery=max(1, len(epochs) // 12))  # fmt: skip
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
    """Accuracy against noise for each (dataset, noise kind), then the gain over the baseline and the training curves
    of each cell."""
    plots = []
    for dataset, kind in sorted({(c.dataset, c.noise_kind) for c in lb.cells if c.noise_kind != "none"}):
        plot = accuracy_vs_noise(lb, dataset, kind)
        if plot is not None:
            plots.append(plot)
    for cell in lb.cells:
        for plot in (gain_over_reference(cell), training_curves(cell, styles(lb.summary.labels))):
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
