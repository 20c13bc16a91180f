"""docs/reproductions/byrd_lipton.md: Byrd & Lipton 2019 on Fashion-MNIST, from its results bundle.

The effect of the class weights is the **spread** between ratios: per seed and epoch, the largest minus the smallest
share of in-pair test images predicted as the up-weighted class across the ratios' runs (each curve first averaged
over a trailing window of `SMOOTH` epochs), with the epochs where some ratio's network predicts a single class for
99 % or more of the images left out (an untrained network does that whatever its weights). The claims compare
spreads over seeds: paired differences with 95 % t intervals, Holm's correction over the page's claims.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from matplotlib.figure import Figure

from robustlearn.leaderboard.curves import one_class_epochs, spread, tag_value
from robustlearn.leaderboard.plots import LINESTYLES, figure_png, styles
from robustlearn.leaderboard.stats import ALPHA, holm, paired, t_interval
from robustlearn.report.bundle import Bundle, Source
from robustlearn.report.numbers import delta_ci, num, table

SWEEP = "byrd_lipton_cpu"
SOURCES = [Source(f"runs/{SWEEP}/results.sqlite", {"sweep": SWEEP})]
KEY = "strategies[0].ratio"
SMOOTH = 5
EARLY = 10  # the epoch whose spread is "early" (past the one-class start)
CHECKPOINTS = (10, 25, 50, 100)
PLAIN = "byrd_lipton_plain"
VARIANTS = {"byrd_lipton_plain": "no regularisation", "byrd_lipton_l2": "L2 1e-3", "byrd_lipton_l2_strong": "L2 1e-2",
            "byrd_lipton_dropout": "dropout 0.5", "byrd_lipton_batchnorm": "batch norm"}
SETS = {"in_class_test": "in-pair test images", "other_classes": "other classes' test images",
        "noise": "noise images"}


class Runs:
    """variant -> seed -> ratio -> run, from the bundle."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.by: dict[str, dict[int, dict[float, dict]]] = {}
        for run in bundle.runs:
            ratio = tag_value(run.get("tags") or [], KEY)
            if run.get("sweep") == SWEEP and ratio is not None:
                self.by.setdefault(str(run["method"]), {}).setdefault(int(run["seed"]), {})[float(ratio)] = run

    def variants(self) -> list[str]:
        return [v for v in VARIANTS if v in self.by] + sorted(v for v in self.by if v not in VARIANTS)

    def curves(self, variant: str, seed: int, column: str) -> list[list[tuple[int, float]]]:
        runs = self.by[variant][seed]
        return [self.bundle.series(runs[r]["run_id"], column) for r in sorted(runs)]

    def spread(self, variant: str, seed: int, image_set: str = "in_class_test") -> dict[int, float]:
        """Epoch -> spread across ratios on `image_set`, one-class epochs (judged on the in-pair images) left out."""
        skip = one_class_epochs(self.curves(variant, seed, "predicted_share/in_class_test"))
        return dict(spread(self.curves(variant, seed, f"predicted_share/{image_set}"), SMOOTH, skip))

    def at(self, variant: str, epoch: int | None, image_set: str = "in_class_test") -> dict[int, float]:
        """seed -> spread at `epoch`, or at the first epoch after it that is not left out (None: the last epoch)."""
        out = {}
        for seed in self.by.get(variant, {}):
            s = self.spread(variant, seed, image_set)
            later = [e for e in s if epoch is None or e >= epoch]
            if later:
                out[seed] = s[max(later) if epoch is None else min(later)]
        return out

    def fitted(self, variant: str) -> list[int | None]:
        """Per seed, the first epoch where every ratio's training accuracy is 100 % (None: never)."""
        out = []
        for seed in sorted(self.by[variant]):
            firsts = [next((e for e, v in c if v >= 0.9995), None) for c in self.curves(variant, seed, "train/acc")]
            out.append(None if None in firsts else max(firsts))
        return out


def spread_text(values: dict[int, float]) -> str:
    iv = t_interval(values.values())
    if iv is None:
        return "–"
    return num(iv.mean, 3) if iv.low is None else f"{num(iv.mean, 3)} [{num(iv.low, 3)}, {num(iv.high, 3)}]"


def claims(runs: Runs) -> dict[str, dict]:
    plain_end = runs.at(PLAIN, None)
    out = {"fades": paired(plain_end, runs.at(PLAIN, EARLY))}
    for key, variant in (("l2", "byrd_lipton_l2"), ("l2_strong", "byrd_lipton_l2_strong"),
                         ("dropout", "byrd_lipton_dropout"), ("batchnorm", "byrd_lipton_batchnorm")):
        out[key] = paired(runs.at(variant, None), plain_end)
    out["batchnorm_other"] = paired(runs.at("byrd_lipton_batchnorm", None, "other_classes"),
                                    runs.at(PLAIN, None, "other_classes"))
    adjusted = holm({k: v.p for k, v in out.items() if v is not None})
    return {k: {"text": delta_ci(v, digits=3).replace(" \\*", "") if v else "–",
                "text_pts": _plain(v), "p": num(adjusted.get(k, (math.nan, False))[0], 3),
                "holds": bool(adjusted.get(k, (1.0, False))[1]), "up": bool(v and v.delta > 0), "n": v.n if v else 0}
            for k, v in out.items()}


def _plain(d) -> str:
    """A difference of shares, not of percentages: "−0.85 [−0.93, −0.77]"."""
    if d is None:
        return "–"
    return f"{d.delta:+.3f} [{d.low:+.3f}, {d.high:+.3f}]".replace("-", "−")


def spread_table(runs: Runs) -> str:
    rows = []
    for v in runs.variants():
        fitted = runs.fitted(v)
        done = [f for f in fitted if f is not None]
        fit = "never" if not done else (f"{min(done)}–{max(done)}" if min(done) != max(done) else str(done[0]))
        if len(done) < len(fitted) and done:
            fit += f" ({len(done)} of {len(fitted)} seeds)"
        rows.append([f"{VARIANTS.get(v, v)} (`{v}`)", len(runs.by[v]), fit,
                     *[spread_text(runs.at(v, e)) for e in CHECKPOINTS], spread_text(runs.at(v, None)),
                     spread_text(runs.at(v, None, "other_classes"))])
    header = ["variant", "seeds", "training set fitted at epoch", *[f"spread at epoch {e}" for e in CHECKPOINTS],
              "spread at the end", "end, other classes' images"]
    return table(header, rows)


def figure(runs: Runs, path: Path) -> None:
    variants = runs.variants()
    fig = Figure(figsize=(4.4 * len(SETS), 2.9 * len(variants) + 0.8))
    axes = fig.subplots(len(variants), len(SETS), squeeze=False, sharex=True, sharey=True)
    ratios = sorted({r for v in runs.by.values() for s in v.values() for r in s})
    palette = styles([f"r = {r:g}" for r in ratios])
    for i, v in enumerate(variants):
        for j, (name, title) in enumerate(SETS.items()):
            ax = axes[i][j]
            for k, r in enumerate(ratios):
                per_seed = [dict(runs.bundle.series(s[r]["run_id"], f"predicted_share/{name}"))
                            for s in runs.by[v].values() if r in s]
                common = sorted(set.intersection(*(set(c) for c in per_seed))) if per_seed else []
                label = f"r = {r:g}"
                ax.plot(common, [statistics.mean(c[e] for c in per_seed) for e in common], label=label,
                        color=palette[label].color, linestyle=LINESTYLES[k % len(LINESTYLES)])
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(title, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{VARIANTS.get(v, v)}\nshare predicted as class 0", fontsize=9)
            if i == len(variants) - 1:
                ax.set_xlabel("epoch")
    axes[0][0].legend(title="class-0 weight ratio", fontsize=7, title_fontsize=7)
    fig.suptitle("T-shirt/top (class 0) against shirt: share predicted as class 0, mean over seeds")
    path.write_bytes(figure_png(fig, dpi=100))


def context(bundle: Bundle, figures: Path) -> dict:
    runs = Runs(bundle)
    figure(runs, figures / "byrd_lipton_cpu.png")
    seeds = sorted({s for v in runs.by.values() for s in v})
    ratios = sorted({r for v in runs.by.values() for s in v.values() for r in s})
    c = claims(runs)
    return {"table": spread_table(runs), "claims": c, "claims_count": len(c), "alpha": ALPHA, "smooth": SMOOTH,
            "early": EARLY, "seeds": len(seeds), "seed_list": ", ".join(map(str, seeds)), "runs": len(bundle.runs),
            "ratios": ", ".join(f"{r:g}" for r in ratios), "exported": bundle.manifest.get("exported", ""),
            "plain_early": spread_text(runs.at(PLAIN, EARLY)), "plain_end": spread_text(runs.at(PLAIN, None))}
