"""Achille et al. 2019 from a sweep's runs: final test accuracy against the deficit window, and the Fisher trace.

    robustlearn sweep configs/sweeps/critical_periods_cpu.yaml --workers 2
    robustlearn fit configs/experiments/critical_periods_fmnist.yaml model.width=16 data.subset=5000 \
        "strategies[0].end=0" trainer.epochs=12 "strategies[1].every_n_steps=4" output.root=runs/critical_periods_fisher
    python benchmarks/critical_periods.py --results runs/critical_periods_cpu/results.sqlite \
        --out docs/reproductions/critical_periods_cpu --steps runs/critical_periods_fisher/deficit-*

Runs are told apart by the sweep's case tags `strategies[0].kind`, `.start`, `.end` and `trainer.epochs` (the
deficit's kind, its window [start, end) in epochs, the run's length; end = start is a run without deficit). Writes
`<out>.md`, one row per window and length: seeds, final test accuracy (last epoch, mean ± standard deviation over
seeds), its difference to the run without deficit of the same length (the learning rate decays every epoch, so only
runs of equal length end at the same rate), and the epoch where the mean Fisher trace peaks; and `<out>.png`: the
final accuracy against the end of the window (deficits from epoch 0 and the runs without deficit of the same length
as lines, late windows and other kinds as points) beside the Fisher trace over training per window.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from matplotlib.figure import Figure  # noqa: E402

from robustlearn.leaderboard.curves import group, mean_series, peak_and_end, read_columns  # noqa: E402
from robustlearn.leaderboard.plots import figure_png  # noqa: E402
from robustlearn.tracking.store import ResultsStore  # noqa: E402

KEYS = ("strategies[0].kind", "strategies[0].start", "strategies[0].end", "trainer.epochs")
CLEAN_AFTER = 20  # clean epochs after the deficit in the sweep: a run without deficit of E epochs sits at N = E - 20
COLUMNS = ("test/acc", "fisher_trace/total")


Window = tuple[str, int, int, int]  # kind, start, end, epochs


def windows(rows: list[dict]) -> dict[Window, list[dict[str, list]]]:
    """(kind, start, end, epochs) -> per completed run, its test accuracy and Fisher trace series."""
    out: dict[Window, list[dict[str, list]]] = {}
    for (_, kind, start, end, epochs), dirs in group(rows, *KEYS).items():
        if None in (kind, start, end, epochs):
            continue
        key = ("none" if start == end else str(kind), int(start), int(end), int(epochs))
        out.setdefault(key, []).extend(read_columns(d, COLUMNS) for d in dirs)
    return out


def label(kind: str, start: int, end: int, epochs: int) -> str:
    return f"no deficit, {epochs} epochs" if kind == "none" else f"{kind} [{start}, {end}), {epochs} epochs"


def summary(found: dict[Window, list[dict[str, list]]]) -> list[dict]:
    finals = {w: [r["test/acc"][-1][1] for r in runs if r["test/acc"]] for w, runs in found.items()}
    control = {w[3]: statistics.mean(v) for w, v in finals.items() if w[0] == "none" and v}
    table = []
    for w in sorted(found, key=lambda w: (w[0] != "none", w[0], w[1], w[2], w[3])):
        vals = finals[w]
        fisher = peak_and_end(mean_series([r["fisher_trace/total"] for r in found[w]]))
        mean = statistics.mean(vals) if vals else math.nan
        std = statistics.stdev(vals) if len(vals) > 1 else math.nan
        table.append({"window": label(*w), "kind": w[0], "start": w[1], "end": w[2], "epochs": w[3],
                      "seeds": len(vals), "final_acc": mean, "std": std,
                      "delta": mean - control.get(w[3], math.nan), "fisher_peak_epoch": fisher["peak_epoch"]})
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| deficit window, run length | seeds | final test acc (%) | vs no deficit of the same length (points) "
             "| Fisher trace peaks at epoch |", "|---|---:|---:|---:|---:|"]
    for r in table:
        std = "" if math.isnan(r["std"]) else f" ± {100 * r['std']:.2f}"
        delta = "–" if math.isnan(r["delta"]) else f"{100 * r['delta']:+.2f}"
        lines.append(f"| {r['window']} | {r['seeds']} | {100 * r['final_acc']:.2f}{std} | {delta} "
                     f"| {r['fisher_peak_epoch']} |")
    return "\n".join(lines)


def read_steps(run_dir: str | Path) -> list[tuple[int, float]]:
    """(step, total) from a run's fisher_trace.csv (every measurement, e.g. with every_n_steps)."""
    path = Path(run_dir) / "fisher_trace.csv"
    if not path.is_file():
        raise SystemExit(f"critical_periods: '{path}' not found (a run with fisher_trace writes it).")
    with path.open() as f:
        return [(int(r["step"]), float(r["total"])) for r in csv.DictReader(f)]


def plot(found: dict[Window, list[dict[str, list]]], table: list[dict], title: str,
         steps: list[tuple[int, float]] | None = None) -> bytes:
    fig = Figure(figsize=(18 if steps else 12, 4.4))
    axes = fig.subplots(1, 3 if steps else 2)
    left, right = axes[0], axes[1]
    early = sorted((r for r in table if r["kind"] == "blur" and r["start"] == 0), key=lambda r: r["end"])
    clean = sorted((r for r in table if r["kind"] == "none"), key=lambda r: r["epochs"])
    for rs, name, style in ((early, "blur from epoch 0 to N", "o-"), (clean, "no deficit, N + 20 epochs", "x--")):
        left.errorbar([r["epochs"] - CLEAN_AFTER for r in rs], [100 * r["final_acc"] for r in rs],
                      yerr=[0 if math.isnan(r["std"]) else 100 * r["std"] for r in rs], fmt=style, capsize=3,
                      label=name)
    for i, r in enumerate(x for x in table if x not in early and x not in clean):
        left.errorbar([r["end"]], [100 * r["final_acc"]], yerr=[0 if math.isnan(r["std"]) else 100 * r["std"]],
                      marker="s^Dv"[i % 4], capsize=3, linestyle="none", color=f"C{i + 2}", label=r["window"])
    left.set_xlabel("end of the deficit window N (epoch), then 20 clean epochs")
    left.set_ylabel("final test accuracy (%)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    shown = [w for w in sorted(found) if w[0] != "none" or w[3] == max(v[3] for v in found if v[0] == "none")]
    for i, w in enumerate(shown):  # one run without deficit: the longest
        series = mean_series([r["fisher_trace/total"] for r in found[w]])
        if series:
            right.plot([e for e, _ in series], [v for _, v in series], color=f"C{i % 10}", linewidth=1.0,
                       label=label(*w))
            if w[2] > w[1]:
                right.axvspan(w[1], w[2], color=f"C{i % 10}", alpha=0.06)
    right.set_yscale("log")
    right.set_xlabel("epoch")
    right.set_ylabel("trace of the Fisher information (clean probe)")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    if steps:
        axes[2].plot([t for t, _ in steps], [v for _, v in steps], marker=".", linewidth=0.8)
        axes[2].set_xlabel("optimiser step")
        axes[2].set_ylabel("trace of the Fisher information")
        axes[2].set_title("no deficit, measured every few steps", fontsize=10)
        axes[2].grid(alpha=0.3)
    fig.suptitle(title)
    return figure_png(fig, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, help="results.sqlite of the sweep")
    p.add_argument("--where", nargs="*", default=[], help="column=value filters, e.g. sweep=critical_periods_cpu")
    p.add_argument("--out", required=True, help="path stem of the table (.md) and the plot (.png)")
    p.add_argument("--steps", help="a run folder whose fisher_trace.csv (every_n_steps) gets a third panel")
    a = p.parse_args()
    if not Path(a.results).is_file():
        sys.exit(f"critical_periods: results file '{a.results}' not found.")
    steps = read_steps(a.steps) if a.steps else None
    where = dict(item.split("=", 1) for item in a.where)
    found = windows(ResultsStore(a.results).rows(where))
    if not found:
        sys.exit(f"critical_periods: no completed runs tagged {', '.join(KEYS)} in '{a.results}'.")
    table = summary(found)
    text = markdown(table)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".png").write_bytes(plot(found, table, "Critical periods on Fashion-MNIST: blur deficit", steps))
    print(text)


if __name__ == "__main__":
    main()
