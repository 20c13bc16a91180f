"""Byrd & Lipton 2019 from a sweep's runs: the share of images predicted as the up-weighted class, per epoch and ratio.

    robustlearn sweep configs/sweeps/byrd_lipton_cpu.yaml --workers 2
    python benchmarks/byrd_lipton.py --results runs/byrd_lipton_cpu/results.sqlite \
        --out docs/reproductions/byrd_lipton_cpu

writes `<out>.png` (one row per variant, one column per image set: in-pair test images, the other classes' test
images, noise images; one line per class-weight ratio, the mean over seeds) and `<out>.md`, the table of the spread
between ratios: per variant, the largest minus the smallest share across ratios after a trailing mean over `--smooth`
epochs, at its peak and at the last epoch, with the training accuracy reached (the paper's claim needs the training
set fitted). Without regularisation the paper finds the spread peaks early and shrinks; L2 and batch norm keep it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from matplotlib import colormaps  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from robustlearn.leaderboard.curves import (  # noqa: E402
    group,
    mean_series,
    one_class_epochs,
    peak_and_end,
    read_columns,
    spread,
)
from robustlearn.leaderboard.plots import figure_png  # noqa: E402
from robustlearn.tracking.store import ResultsStore  # noqa: E402

SETS = {"in_class_test": "in-pair test images", "other_classes": "other classes' test images",
        "noise": "noise images"}
COLUMNS = [f"predicted_share/{s}" for s in SETS] + ["train/acc", "test/acc"]


def curves(rows: list[dict], key: str) -> dict[str, dict[float, dict[str, list]]]:
    """variant -> ratio -> column -> mean (epoch, value) series over the seeds."""
    out: dict[str, dict[float, dict[str, list]]] = {}
    for (method, ratio), dirs in group(rows, key).items():
        if ratio is None:
            continue
        per_run = [read_columns(d, COLUMNS) for d in dirs]
        out.setdefault(method, {})[float(ratio)] = {c: mean_series([r[c] for r in per_run]) for c in COLUMNS}
    return out


CHECKPOINTS = (10, 25, 50, 100)  # epochs where the table reads the spread


def summary(found: dict[str, dict[float, dict[str, list]]], smooth: int) -> list[dict]:
    """Per variant: the in-pair spread between ratios at its peak, at a few epochs and at the end, the first epoch
    where every ratio's training accuracy is 100 %, and the accuracies at the end."""
    table = []
    for method, by_ratio in found.items():
        shares = [c["predicted_share/in_class_test"] for c in by_ratio.values()]
        curve = spread(shares, smooth, skip=one_class_epochs(shares))  # an untrained net predicts one class
        s = peak_and_end(curve)
        at = dict(curve)
        other = spread([c["predicted_share/other_classes"] for c in by_ratio.values()], smooth)
        fitted = [next((e for e, v in c["train/acc"] if v >= 1.0), math.inf) for c in by_ratio.values()]
        last_train = [c["train/acc"][-1][1] for c in by_ratio.values() if c["train/acc"]]
        last_test = [c["test/acc"][-1][1] for c in by_ratio.values() if c["test/acc"]]
        table.append({"variant": method, "ratios": len(by_ratio), **s,
                      "at": {e: at.get(e, math.nan) for e in CHECKPOINTS},
                      "fitted_epoch": max(fitted, default=math.inf), "other_end": other[-1][1] if other else math.nan,
                      "min_train_acc": min(last_train, default=math.nan),
                      "mean_test_acc": sum(last_test) / len(last_test) if last_test else math.nan})
    return table


def markdown(table: list[dict], smooth: int) -> str:
    at = " | ".join(f"epoch {e}" for e in CHECKPOINTS)
    lines = [f"| variant | ratios | peak spread (epoch) | {at} | end (epoch) | end / peak | end, other classes "
             "| training set fitted at epoch | lowest final train acc | mean final test acc |",
             "|---|---:|---:|" + "---:|" * len(CHECKPOINTS) + "---:|---:|---:|---:|---:|---:|"]
    for r in table:
        ratio = r["end"] / r["peak"] if r["peak"] else math.nan
        values = " | ".join(f"{r['at'][e]:.3f}" for e in CHECKPOINTS)
        fitted = "never" if math.isinf(r["fitted_epoch"]) else str(r["fitted_epoch"])
        lines.append(f"| {r['variant']} | {r['ratios']} | {r['peak']:.3f} ({r['peak_epoch']}) | {values} "
                     f"| {r['end']:.3f} ({r['end_epoch']}) | {ratio:.2f} | {r['other_end']:.3f} | {fitted} "
                     f"| {100 * r['min_train_acc']:.1f} % | {100 * r['mean_test_acc']:.1f} % |")
    lines.append(f"\nSpread: the largest minus the smallest share of in-pair test images (\"end, other classes\": of "
                 f"the other classes' test images) predicted as the up-weighted class, across ratios, each curve first "
                 f"averaged over a trailing window of {smooth} epochs; epochs where a ratio's network predicts one "
                 f"class for 99 % or more of the images are left out (an untrained network does that whatever its "
                 f"weights).")
    return "\n".join(lines)


def plot(found: dict[str, dict[float, dict[str, list]]], title: str) -> bytes:
    variants = sorted(found)
    fig = Figure(figsize=(4.2 * len(SETS), 3.0 * len(variants) + 0.6))
    axes = fig.subplots(len(variants), len(SETS), squeeze=False, sharex=True, sharey=True)
    ratios = sorted({r for v in found.values() for r in v})
    logs = [math.log(r) for r in ratios]
    span = max(max(abs(v) for v in logs), 1e-9)
    cmap = colormaps["coolwarm"]
    for i, variant in enumerate(variants):
        for j, (name, label) in enumerate(SETS.items()):
            ax = axes[i][j]
            for ratio in ratios:
                series = found[variant].get(ratio, {}).get(f"predicted_share/{name}", [])
                if series:
                    ax.plot([e for e, _ in series], [v for _, v in series], linewidth=1.0,
                            color=cmap(0.5 + 0.5 * math.log(ratio) / span), label=f"{ratio:g}")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(label, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{variant}\nshare predicted as class 0", fontsize=9)
            if i == len(variants) - 1:
                ax.set_xlabel("epoch")
    axes[0][-1].legend(title="weight ratio r", fontsize=7, title_fontsize=7, loc="best")
    fig.suptitle(title)
    return figure_png(fig, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, help="results.sqlite of the sweep")
    p.add_argument("--where", nargs="*", default=[], help="column=value filters, e.g. sweep=byrd_lipton_cpu")
    p.add_argument("--key", default="strategies[0].ratio", help="the swept ratio key (default: strategies[0].ratio)")
    p.add_argument("--smooth", type=int, default=5, help="trailing mean over this many epochs before the spread")
    p.add_argument("--out", required=True, help="path stem of the table (.md) and the plot (.png)")
    a = p.parse_args()
    if not Path(a.results).is_file():
        sys.exit(f"byrd_lipton: results file '{a.results}' not found.")
    where = dict(item.split("=", 1) for item in a.where)
    found = curves(ResultsStore(a.results).rows(where), a.key)
    if not found:
        sys.exit(f"byrd_lipton: no completed runs tagged {a.key}=... in '{a.results}' for {where or 'all rows'}.")
    text = markdown(summary(found, a.smooth), a.smooth)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".png").write_bytes(plot(found, "Byrd & Lipton on Fashion-MNIST: T-shirt/top (class 0) vs shirt"))
    print(text)


if __name__ == "__main__":
    main()
