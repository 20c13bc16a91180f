"""The "tuned on noisy validation" section of a noisy-label page: tuned methods beside their defaults.

A tuned run is one of a `<method>-tuned` YAML written by `robustlearn tune` (its values chosen on the noisy
validation split at the tuning seed); it is compared, per noise setting:

- with the same method at its papers' defaults: the paired difference tuned − default over the reporting seeds both
  share, its 95 % t interval, Holm's correction over the tuned methods of the setting (how far off the defaults were);
- with tuned CE: the leaderboard table of the tuned rows, Holm over the tuned methods (does a method beat CE when both
  are tuned the same way);
- by rank: the methods ranked by mean test accuracy with default and with tuned values, and Kendall's τ between the
  two orders (scipy.stats.kendalltau, with its two-sided p), which says whether tuning changes the ranking.

The values tuning chose are read from the runs' recorded `hyperparameters` (those that differ from the default runs').
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import scipy.stats as sps
from matplotlib.figure import Figure

from robustlearn.leaderboard.aggregate import PRIMARY, Cell, MethodRow, aggregate, by_seed, label_of
from robustlearn.leaderboard.plots import figure_png
from robustlearn.leaderboard.render import cell_markdown
from robustlearn.leaderboard.stats import competition_ranks, holm, paired
from robustlearn.report.bundle import Bundle
from robustlearn.report.numbers import acc_ci, delta_ci, table

SUFFIX = "-tuned"


def split(bundle: Bundle) -> tuple[Bundle, Bundle | None]:
    """(the default runs, the tuned runs or None) of a bundle."""
    tuned = [r for r in bundle.runs if str(r["method"]).endswith(SUFFIX)]
    default = [r for r in bundle.runs if not str(r["method"]).endswith(SUFFIX)]
    return dataclasses.replace(bundle, runs=default), (dataclasses.replace(bundle, runs=tuned) if tuned else None)


def _key(cell: Cell) -> tuple[str, str, float]:
    return cell.dataset, cell.noise_kind, cell.noise_rate


def _values(runs: list[dict]) -> dict:
    """The hyperparameters the runs share (a tuned method's are the same on every seed)."""
    maps = [r.get("hyperparameters") or {} for r in runs]
    return {k: v for k, v in maps[0].items() if all(m.get(k) == v for m in maps)} if maps else {}


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def chosen(tuned: MethodRow, default: MethodRow | None) -> str:
    """`key default → tuned` for each value tuning changed."""
    new, old = _values(tuned.runs), _values(default.runs) if default else {}
    parts = [f"{k.replace('strategies.0.', '')} {_fmt(old[k]) + ' → ' if k in old else ''}{_fmt(v)}"
             for k, v in new.items() if old.get(k) != v]
    return ", ".join(parts) or "the defaults"


def gains_figure(title: str, rows: list[tuple[str, object, bool]], path: Path) -> None:
    """tuned − default per method, with its 95 % t interval (* Holm)."""
    rows = sorted(rows, key=lambda r: r[1].delta)
    fig = Figure(figsize=(6.4, 0.9 + 0.34 * len(rows)))
    ax = fig.add_subplot()
    ax.axvline(0.0, color="0.3", lw=1)
    ys = list(range(len(rows)))
    ax.errorbar([100 * d.delta for _, d, _ in rows], ys, fmt="o", capsize=3, color="C2",
                xerr=[[100 * (d.delta - d.low) for _, d, _ in rows], [100 * (d.high - d.delta) for _, d, _ in rows]],
                label="tuned − default, paired over seeds, 95 % t interval (* Holm)")
    ax.set_yticks(ys, [f"{m} (n={d.n}){' *' if marked else ''}" for m, d, marked in rows], fontsize="small")
    ax.set_xlabel("test accuracy at best val, tuned minus default (points)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    ax.set_title(f"{title}: what tuning on noisy validation changed")
    path.write_bytes(figure_png(fig))


def section(default: Bundle, tuned: Bundle, figures: Path, slug) -> dict:
    """The template values of the tuned section (`slug(cell)` names a setting's figure)."""
    ce = next((label_of(r) for r in tuned.runs if r["method"] == "ce" + SUFFIX), None)
    lb_tuned = aggregate(tuned.runs, baseline=ce or "ce" + SUFFIX)
    defaults = {_key(c): c for c in aggregate(default.runs).cells}
    cells = []
    for cell in lb_tuned.cells:
        dcell = defaults.get(_key(cell))
        pairs: dict[str, tuple[MethodRow, MethodRow | None, object]] = {}
        for r in cell.rows:
            base = dcell.row(r.method[: -len(SUFFIX)]) if dcell else None
            d = paired(by_seed(r.runs, PRIMARY), by_seed(base.runs, PRIMARY)) if base else None
            pairs[r.method[: -len(SUFFIX)]] = (r, base, d)
        adjusted = holm({m: d.p for m, (_, _, d) in pairs.items() if d is not None})
        both = {m: (b.mean(PRIMARY), r.mean(PRIMARY)) for m, (r, b, _) in pairs.items()
                if b is not None and b.mean(PRIMARY) is not None and r.mean(PRIMARY) is not None}
        rank_default = competition_ranks({m: v[0] for m, v in both.items()})
        rank_tuned = competition_ranks({m: v[1] for m, v in both.items()})
        tau = sps.kendalltau([v[0] for v in both.values()], [v[1] for v in both.values()]) if len(both) > 2 else None
        rows, plotted, furthest = [], [], []
        for m, (r, b, d) in sorted(pairs.items(), key=lambda kv: -(kv[1][2].delta if kv[1][2] else -1e9)):
            marked = m in adjusted and adjusted[m][1]
            rows.append([f"`{m}`", acc_ci(b.ci.get(PRIMARY)) if b else "–", acc_ci(r.ci.get(PRIMARY)),
                         delta_ci(d, mark=marked) if d else "–",
                         f"{rank_default.get(m, '–')} → {rank_tuned.get(m, '–')}", chosen(r, b)])
            if d is not None:
                plotted.append((m, d, marked))
                if marked:
                    furthest.append(f"`{m}` ({100 * d.delta:+.2f} points)".replace("-", "−"))
        name = slug(cell)
        if plotted:
            gains_figure(cell.title, plotted, figures / f"tuned_{name}.png")
        cells.append({
            "title": cell.title, "slug": name, "table": cell_markdown(cell, lb_tuned.draws),
            "comparison": table(["Method", "default [95 % CI]", "tuned [95 % CI]", "tuned − default (points)",
                                 "rank among these, default → tuned", "values tuning chose (default → tuned)"], rows,
                                align="llllcl"),
            "furthest": furthest, "methods": len(both), "figure": bool(plotted),
            "tau": f"{tau.statistic:.2f}" if tau is not None else "–",
            "tau_p": f"{tau.pvalue:.2g}" if tau is not None else "–",
            "ce_gain": next((delta_ci(d) for m, (_, _, d) in pairs.items() if m == "ce" and d), "–"),
        })
    trials = sorted({str(r.get("tuned")) for r in tuned.runs if r.get("tuned")})
    seeds = sorted({int(r["seed"]) for r in tuned.runs})
    return {"cells": cells, "runs": len(tuned.runs), "budget": ", ".join(trials) or "–",
            "seed_list": ", ".join(map(str, seeds)), "methods": len({r["method"] for r in tuned.runs})}
