"""docs/reproductions/critical_periods.md: Achille et al. 2019 on Fashion-MNIST, from its results bundle.

Runs are told apart by the sweep's case tags (the deficit's kind, its window [start, end) in epochs, the run's length;
end = start is a run without deficit). Every deficit run is compared with the run without deficit **of the same
length** on the seeds both have (the learning rate decays every epoch, so only runs of equal length share a
schedule). The claims are tested by paired differences over seeds; a claim holds where the difference's 95 % t
interval excludes 0 after Holm's correction over the page's claims (Holm-adjusted p < 0.05).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from robustlearn.leaderboard.curves import tag_value
from robustlearn.leaderboard.plots import figure_png
from robustlearn.leaderboard.stats import ALPHA, holm, paired, t_interval
from robustlearn.report.bundle import Bundle, Source
from robustlearn.report.numbers import acc_ci, delta_ci, num, pct, pts, table

SWEEP = "critical_periods_cpu"
STEPS_SWEEP = "critical_periods_fisher_cpu"
SOURCES = [Source(f"runs/{SWEEP}/results.sqlite", {"sweep": SWEEP}),
           Source(f"runs/{STEPS_SWEEP}/results.sqlite", {"sweep": STEPS_SWEEP}, files=("fisher_trace.csv",))]
KEYS = ("strategies[0].kind", "strategies[0].start", "strategies[0].end", "trainer.epochs")
CLEAN_AFTER = 20  # clean epochs after each deficit in the sweep
EARLY = (4, 8, 16, 24)  # ends N of the deficits over [0, N)
FISHER_EARLY = range(2, 7)  # epochs whose mean trace is "early" in the fall test
FISHER_LATE = 5  # the last epochs whose mean trace is "late"

Window = tuple[str, int, int, int]  # kind ("none" without deficit), start, end, epochs
BySeed = dict[int, float]


def window_of(run: dict) -> Window | None:
    kind, start, end, epochs = (tag_value(run.get("tags") or [], k) for k in KEYS)
    if None in (kind, start, end, epochs):
        return None
    return ("none" if start == end else str(kind), int(start), int(end), int(epochs))


def label(w: Window) -> str:
    kind, start, end, epochs = w
    return f"no deficit, {epochs} epochs" if kind == "none" else f"{kind} [{start}, {end}), {epochs} epochs"


def minus(a: BySeed, b: BySeed) -> BySeed:
    return {s: a[s] - b[s] for s in a if s in b}


def logs(values: BySeed) -> BySeed:
    return {s: math.log(v) for s, v in values.items() if v > 0}


def mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    if not curves:
        return []
    common = sorted(set.intersection(*({e for e, _ in c} for c in curves)))
    by = [dict(c) for c in curves]
    return [(e, statistics.mean(c[e] for c in by)) for e in common]


class Runs:
    """The sweep's runs by window and seed, with the per-epoch Fisher trace."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.by: dict[Window, dict[int, dict]] = {}
        for run in bundle.runs:
            w = window_of(run) if run.get("sweep") == SWEEP else None
            if w is not None:
                self.by.setdefault(w, {})[int(run["seed"])] = run
        # Only seeds with a run in every window count, so that every comparison rests on the same seeds.
        seeds = [set(by) for by in self.by.values()]
        self.seeds = sorted(set.intersection(*seeds)) if seeds else []
        self.left_out = sum(len(by) for by in self.by.values()) - len(self.seeds) * len(self.by)
        self.by = {w: {s: r for s, r in by.items() if s in self.seeds} for w, by in self.by.items()}

    def final(self, w: Window) -> BySeed:
        return {s: r["test_acc_last"] for s, r in self.by.get(w, {}).items() if r.get("test_acc_last") is not None}

    def control(self, epochs: int) -> Window:
        return ("none", 0, 0, epochs)

    def cost(self, w: Window) -> BySeed:
        """Final accuracy minus that of the run without deficit of the same length, per shared seed."""
        return minus(self.final(w), self.final(self.control(w[3])))

    def fisher(self, w: Window, seed: int) -> list[tuple[int, float]]:
        return self.bundle.series(self.by[w][seed]["run_id"], "fisher_trace/total")

    def fisher_mean(self, w: Window, epochs: Callable[[int], bool]) -> BySeed:
        out = {}
        for seed in self.by.get(w, {}):
            vals = [v for e, v in self.fisher(w, seed) if epochs(e)]
            if vals:
                out[seed] = statistics.mean(vals)
        return out


def step_runs(bundle: Bundle) -> dict[int, list[dict]]:
    """Seed -> the per-step Fisher measurements of the step sweep's run."""
    ids = {r["run_id"]: int(r["seed"]) for r in bundle.runs if r.get("sweep") == STEPS_SWEEP}
    out: dict[int, list[dict]] = {}
    for row in bundle.tables.get("fisher_trace.csv", []):
        if row["run_id"] in ids:
            out.setdefault(ids[row["run_id"]], []).append(row)
    return out


def claims(runs: Runs, steps: dict[int, list[dict]]) -> dict[str, dict]:
    """The page's claims: each a paired difference over seeds (or a one-sample test against 0), Holm over all."""
    blur = lambda a, b, e: ("blur", a, b, e)  # noqa: E731
    early_costs = [runs.cost(blur(0, n, n + CLEAN_AFTER)) for n in EARLY]
    shared = set.intersection(*(set(c) for c in early_costs)) if early_costs else set()
    pooled = {s: statistics.mean(c[s] for c in early_costs) for s in shared}
    zeros = {s: 0.0 for s in pooled}
    out = {
        "early_cost": paired(pooled, zeros),
        "early_vs_late": paired(runs.cost(blur(0, 8, 28)), runs.cost(blur(16, 24, 44))),
        "same_end": paired(runs.final(blur(0, 24, 44)), runs.final(blur(16, 24, 44))),
        "length": paired(runs.cost(blur(0, 24, 44)), runs.cost(blur(0, 4, 24))),
        "vflip": paired(runs.final(("vflip", 0, 24, 44)), runs.final(runs.control(44))),
    }
    control = runs.control(44)
    last = max((w[3] for w in runs.by), default=0)
    early_f = runs.fisher_mean(control, lambda e: e in FISHER_EARLY)
    late_f = runs.fisher_mean(control, lambda e: e >= last - FISHER_LATE)
    out["fisher_fall"] = paired(logs(late_f), logs(early_f))
    during = runs.fisher_mean(blur(0, 24, 44), lambda e: e < 24)
    out["fisher_blur"] = paired(logs(during), logs(runs.fisher_mean(control, lambda e: e < 24)))
    first = {s: rows[0]["total"] for s, rows in steps.items() if rows}
    second_epoch = {s: statistics.mean(r["total"] for r in rows if r["epoch"] == 1) for s, rows in steps.items()
                    if any(r["epoch"] == 1 for r in rows)}
    out["fisher_rise"] = paired(logs(second_epoch), logs(first))
    adjusted = holm({k: v.p for k, v in out.items() if v is not None})
    return {k: {"d": v, "p": adjusted.get(k, (math.nan, False))[0], "holds": adjusted.get(k, (1.0, False))[1]}
            for k, v in out.items()}


def window_table(runs: Runs) -> tuple[str, dict[Window, dict]]:
    order = sorted(runs.by, key=lambda w: (w[0] != "none", w[0] != "blur", w[0], w[1], w[2], w[3]))
    deltas = {w: paired(runs.final(w), runs.final(runs.control(w[3]))) for w in order if w[0] != "none"}
    adjusted = holm({w: d.p for w, d in deltas.items() if d is not None})
    rows, info = [], {}
    for w in order:
        acc = t_interval(runs.final(w).values())
        curve = mean_curve([runs.fisher(w, s) for s in runs.by[w]])
        peak = max(curve, key=lambda ev: ev[1])[0] if curve else None
        d = deltas.get(w)
        mark = adjusted.get(w, (1.0, False))[1]
        info[w] = {"acc": acc, "delta": d, "holds": mark}
        rows.append([label(w), acc.n if acc else 0, acc_ci(acc), "(control)" if w[0] == "none" else
                     delta_ci(d, mark=mark), "–" if peak is None else peak])
    header = ["deficit window, run length", "seeds", "final test acc (%) [95 % CI]",
              "vs no deficit of the same length (points) [95 % CI]", "mean Fisher trace peaks at epoch"]
    return table(header, rows), info


def deficit_rows(info: dict[Window, dict]) -> int:
    return sum(1 for w in info if w[0] != "none")


def figure(runs: Runs, steps: dict[int, list[dict]], path: Path) -> None:
    fig = Figure(figsize=(16, 4.8), layout="constrained")
    left, middle, right = fig.subplots(1, 3)

    def band(ax, xs, ws, style, name):
        ivs = [t_interval(runs.final(w).values()) for w in ws]
        pts_ = [(x, iv) for x, iv in zip(xs, ivs) if iv is not None]
        ax.plot([x for x, _ in pts_], [100 * iv.mean for _, iv in pts_], style, label=name)
        lo = [100 * (iv.low if iv.low is not None else iv.mean) for _, iv in pts_]
        hi = [100 * (iv.high if iv.high is not None else iv.mean) for _, iv in pts_]
        ax.fill_between([x for x, _ in pts_], lo, hi, alpha=0.15, color=ax.lines[-1].get_color())

    ns = [0, *EARLY]
    band(left, ns, [runs.control(CLEAN_AFTER), *[("blur", 0, n, n + CLEAN_AFTER) for n in EARLY]], "o-",
         "blur over [0, N), then 20 clean epochs")
    band(left, ns, [runs.control(n + CLEAN_AFTER) for n in ns], "s--", "no deficit, N + 20 epochs")
    for w, marker, name in ((("blur", 8, 16, 36), "^", "blur [8, 16)"), (("blur", 16, 24, 44), "v", "blur [16, 24)"),
                            (("vflip", 0, 24, 44), "D", "vflip [0, 24)")):
        iv = t_interval(runs.final(w).values())
        if iv is not None and iv.low is not None:
            left.errorbar([w[2]], [100 * iv.mean], yerr=[[100 * (iv.mean - iv.low)], [100 * (iv.high - iv.mean)]],
                          fmt=marker, capsize=3, label=name)
    left.set_xlabel("end of the deficit window N (epoch)")
    left.set_ylabel("final test accuracy (%)")
    left.set_title("final accuracy (mean, 95 % t interval over seeds)", fontsize=10)
    left.legend(fontsize=7)

    for w, style in ((runs.control(44), "-"), (("blur", 0, 24, 44), "--"), (("blur", 16, 24, 44), ":"),
                     (("blur", 0, 8, 28), "-.")):
        if w in runs.by:
            curve = mean_curve([runs.fisher(w, s) for s in runs.by[w]])
            middle.plot([e for e, _ in curve], [v for _, v in curve], style, label=label(w))
    middle.axvspan(0, 24, color="0.9", zorder=0)
    middle.set_yscale("log")
    middle.set_xlabel("epoch")
    middle.set_ylabel("Fisher trace (log scale)")
    middle.set_title("Fisher trace after each epoch, mean over seeds;\nblur window [0, 24) shaded", fontsize=10)
    middle.legend(fontsize=7)

    for seed, rows in sorted(steps.items()):
        right.plot([r["step"] for r in rows], [r["total"] for r in rows], lw=0.8, label=f"seed {seed}")
    right.set_xlabel("optimiser step")
    right.set_ylabel("Fisher trace")
    right.set_title("no deficit: the trace every 8 steps", fontsize=10)
    right.legend(fontsize=7)
    path.write_bytes(figure_png(fig))


def context(bundle: Bundle, figures: Path) -> dict:
    runs = Runs(bundle)
    steps = step_runs(bundle)
    text, info = window_table(runs)
    c = claims(runs, steps)
    figure(runs, steps, figures / "critical_periods_cpu.png")
    seeds = runs.seeds
    controls = {e: t_interval(runs.final(runs.control(e)).values()) for e in (20, 28)}

    def claim(key: str, scale: Callable[[float], str] = pts) -> dict:
        entry = c[key]
        d = entry["d"]
        return {"holds": bool(entry["holds"]), "p": num(entry["p"], 3), "n": d.n if d else 0,
                "text": delta_ci(d) if scale is pts else ratio_ci(d), "delta": scale(d.delta) if d else "–",
                "negative": bool(d and d.delta < 0)}

    early = {n: ("blur", 0, n, n + CLEAN_AFTER) for n in EARLY}
    costs = {n: info[w]["delta"] for n, w in early.items() if w in info}
    return {
        "seeds": len(seeds), "seed_list": ", ".join(str(s) for s in seeds), "runs": len(bundle.runs),
        "left_out": runs.left_out,
        "exported": bundle.manifest.get("exported", ""),
        "table": text, "alpha": ALPHA, "claims_count": len(c), "deficit_rows": deficit_rows(info),
        "early_cost": claim("early_cost"), "early_vs_late": claim("early_vs_late"), "same_end": claim("same_end"),
        "length": claim("length"), "vflip": claim("vflip"),
        "fisher_fall": claim("fisher_fall", ratio), "fisher_blur": claim("fisher_blur", ratio),
        "fisher_rise": claim("fisher_rise", ratio),
        "cost": {n: pts(d.delta) if d else "–" for n, d in costs.items()},
        "gain_20_28": pts(controls[28].mean - controls[20].mean) if controls[20] and controls[28] else "–",
        "acc20": pct(controls[20].mean) if controls[20] else "–",
        "acc28": pct(controls[28].mean) if controls[28] else "–",
        "lr_start_24": num(0.05 * 0.97 ** 24, 3), "lr_end_20": num(0.05 * 0.97 ** 19, 3),
        "lr_end_44": num(0.05 * 0.97 ** 43, 3),
    }


def ratio(x: float) -> str:
    """A difference of logs as a ratio: 0.69 -> "×2.00"."""
    return f"×{math.exp(x):.2f}"


def ratio_ci(d) -> str:
    if d is None:
        return "–"
    return f"{ratio(d.delta)} [{ratio(d.low)}, {ratio(d.high)}]"
