"""Pages that compare samplers with uniform training at equal training time (katharopoulos_fleuret.md), from their
bundles: time to a target below the plateau per seed with its ratio to uniform (bootstrap interval), accuracy at
fixed shares of the budget with paired intervals, the budget each method actually trained, the presampling switch's
diagnostics, and the accuracy-against-time figure.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from robustlearn.leaderboard.stats import Paired, holm, paired
from robustlearn.leaderboard.time_to_target import TARGET_SHARE, Ratio, ratio_to_baseline, time_to_target
from robustlearn.leaderboard.time_to_target_tables import markdown as time_tables
from robustlearn.leaderboard.wallclock import Curve, plot
from robustlearn.report.bundle import Bundle
from robustlearn.report.numbers import delta_ci, num, pct, table

BASELINE = "ce"


def runs_by_method(bundle: Bundle) -> dict[str, list[dict]]:
    """method -> [{"seed", "series": [(train_s_total, test/acc)], "run"}] for every run with evaluations."""
    out: dict[str, list[dict]] = {}
    for run in bundle.runs:
        times = dict(bundle.series(run["run_id"], "train_s_total"))
        accs = bundle.series(run["run_id"], "test/acc")
        points = [(times[e], a) for e, a in accs if e in times]
        if points:
            out.setdefault(str(run["method"]), []).append({"seed": run["seed"], "series": points, "run": run})
    return out


def span(values, digits=0, scale=1.0) -> str:
    """min–max of the values that are not None, or the one value where both round alike; "–" for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    lo, hi = scale * min(values), scale * max(values)
    return num(lo, digits) if num(lo, digits) == num(hi, digits) else f"{num(lo, digits)}–{num(hi, digits)}"


def last_tau(bundle: Bundle, runs: list[dict]) -> list[float | None]:
    """τ̄ (`presample/tau`) of each run's last epoch; None for a run that logs none."""
    taus = [bundle.series(r["run"]["run_id"], "presample/tau") for r in runs]
    return [t[-1][1] if t else None for t in taus]


def switch_rows(bundle: Bundle, found: dict[str, list[dict]]) -> str:
    """Per method: training seconds actually used, epochs finished, share of epochs' steps sampled, first epoch with
    sampling on, τ̄ in the last epoch (ranges over seeds)."""
    rows = []
    for method, runs in sorted(found.items(), key=lambda kv: (kv[0] != BASELINE, kv[0])):
        trained, epochs, sampled, first, samples = [], [], [], [], []
        for r in runs:
            rid = r["run"]["run_id"]
            trained.append(r["series"][-1][0])
            epochs.append(r["run"].get("epochs_done"))
            per_epoch = [v for _, v in bundle.series(rid, "samples")]
            samples.append(statistics.mean(per_epoch) if per_epoch else None)
            active = bundle.series(rid, "presample/active")
            if active:
                sampled.append(statistics.mean(v for _, v in active))
                first.append(next((e for e, v in active if v > 0), None))
        rows.append([method, len(runs), span(trained, 1), span(epochs), span(samples),
                     span(sampled, 0, 100) + (" %" if sampled else ""), span(first), span(last_tau(bundle, runs), 2)])
    header = ["method", "seeds", "training time used (s)", "epochs finished", "samples trained per epoch (mean)",
              "steps sampled", "switch first on (epoch)", "τ̄ in the last epoch"]
    return table(header, rows)


def ratio_values(r: Ratio) -> dict:
    """A ratio of crossing times for a template: the geometric mean, both intervals, and the verdict flags."""
    return {
        "ratio": num(r.geomean, 2), "ratio_low": num(r.low, 2), "ratio_high": num(r.high, 2),
        "t_low": num(r.t_low, 2), "t_high": num(r.t_high, 2), "seeds": r.n,
        "slower": r.above_one, "faster": r.below_one,
        "bootstrap_only": ((r.high is not None and r.high < 1.0 or r.low is not None and r.low > 1.0)
                           and not (r.below_one or r.above_one)),
        "untimed": r.low is None,  # fewer than two seeds reached the target on both sides
    }


def delta_values(d: Paired | None, adjusted: tuple[float, bool] | None) -> dict:
    """A paired end-of-budget difference for a template, judged with its Holm-adjusted p (`adjusted`)."""
    rejected = bool(adjusted and adjusted[1])
    return {"delta": delta_ci(d), "p_holm": "–" if adjusted is None else num(adjusted[0], 3),
            "better": bool(d and d.low > 0 and rejected), "worse": bool(d and d.high < 0 and rejected)}


def context(bundle: Bundle, figures: Path, pairs: dict[str, tuple[str, str]] | None = None) -> dict:
    """The page's values. `pairs` (name -> (method a, method b)) adds head-to-head comparisons of two methods, paired
    by seed: a's crossing time of the target over b's, and a − b at the baseline's budget. End-of-budget differences
    are judged with Holm's correction over the page's family: every method against the baseline, and the pairs."""
    found = runs_by_method(bundle)
    report = time_to_target({m: [{"seed": r["seed"], "series": r["series"]} for r in runs]
                             for m, runs in found.items()}, baseline=BASELINE, target_share=TARGET_SHARE)
    curves = {m: Curve(m, [r["series"] for r in runs], [r["seed"] for r in runs]) for m, runs in found.items()}
    crossings = {m.method: m.mean_crossing for m in report.methods}
    reached = {m.method: (m.reached, m.n) for m in report.methods}
    (figures / "time.png").write_bytes(plot(curves, "test accuracy against training time (evaluation excluded)",
                                            target=report.target, crossings=crossings, reached=reached))
    rows = {m.method: m for m in report.methods}
    heads = {key: (ratio_to_baseline(rows[a].crossing, rows[b].crossing),
                   paired(rows[a].at_share(1.0).by_seed, rows[b].at_share(1.0).by_seed))
             for key, (a, b) in (pairs or {}).items()}
    family = {name: m.at_share(1.0).delta for name, m in rows.items() if name != BASELINE}
    family.update({key: d for key, (_, d) in heads.items()})
    adjusted = holm({k: d.p for k, d in family.items() if d is not None})

    def method(name: str) -> dict:
        m = rows[name]
        at_end = m.at_share(1.0)
        return {
            "name": name, "present": True, "tau": span(last_tau(bundle, found[name]), 2),
            "final": pct(at_end.acc.mean) if at_end.acc else "–",  # at the baseline's budget, as `delta`
            "reached": f"{m.reached} of {m.n}", **ratio_values(m.ratio),
            **delta_values(at_end.delta, adjusted.get(name)),
        }

    seeds = sorted({int(r["seed"]) for r in bundle.runs})
    methods = {name: method(name) for name in found}
    return {
        "tables": time_tables(report), "switch": switch_rows(bundle, found),
        "target": pct(report.target), "target_share": f"{100 * report.target_share:g}",
        "budget": num(report.budget, 1), "baseline_final": pct(report.baseline_final),
        "seeds": len(seeds), "seed_list": ", ".join(map(str, seeds)), "runs": len(bundle.runs),
        "exported": bundle.manifest.get("exported", ""),
        "methods": methods,
        "others": [methods[name] for name in sorted(found) if name != BASELINE],
        **{key: {**ratio_values(r), **delta_values(d, adjusted.get(key))} for key, (r, d) in heads.items()},
        "holm": {k: {"p": num(p, 3), "rejected": r} for k, (p, r) in adjusted.items()},
        "family": len(adjusted),
    }
