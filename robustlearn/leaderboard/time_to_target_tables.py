"""The time-to-target report as Markdown: the time-to-target table, then accuracy at shares of the budget, each with
a note stating its rules (the definitions are in `time_to_target.py`)."""

from __future__ import annotations

from robustlearn.leaderboard.render import difference, interval
from robustlearn.leaderboard.time_to_target import TimeToTarget


def _interval(low: float | None, high: float | None, fmt: str) -> str:
    return "" if low is None or high is None else f" [{format(low, fmt)}, {format(high, fmt)}]"


def markdown(report: TimeToTarget) -> str:
    """The time-to-target table, then accuracy at shares of the budget, each with a note stating its rules."""
    b, pct = report.baseline, round(100 * report.level)
    lines = [
        f"Target: {100 * report.target_share:g} % of {b}'s mean final test accuracy ({100 * report.baseline_final:.2f}"
        f" %) = **{100 * report.target:.2f} %**. Budget: {b}'s median final training time, {report.budget:.1f} s.",
        "",
        f"| method | n | seeds reaching the target | median time to target (s) | time to target / {b}'s, geometric "
        f"mean [{pct} % bootstrap] (t [{pct} % t on log ratios]) | test acc at {b}'s final time (%) [{pct} % t] | "
        f"Δ vs {b} there (points) [{pct} % t] |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in report.methods:
        median = "–" if m.median_crossing is None else f"{m.median_crossing:.1f}"
        r = m.ratio
        ratio = "–" if r.geomean is None else f"{r.geomean:.2f}{_interval(r.low, r.high, '.2f')}"
        if r.t_low is not None:
            ratio += f" (t{_interval(r.t_low, r.t_high, '.2f')})"
        if r.geomean is not None and r.n < m.n:
            ratio += f" (over {r.n} of {m.n} seeds)"
        end = m.at_share(1.0)
        lines.append(f"| {m.method} | {m.n} | {m.reached} of {m.n} | {median} | {ratio} | {interval(end.acc)} | "
                     f"{difference(end.delta, False, m.method == b)} |")
    lines += [
        "",
        f"Crossing time: the training time (`train_s_total`, evaluation excluded) at which a seed's test accuracy "
        f"first reaches the target, linearly interpolated between the two evaluations that bracket it. Ratio: per "
        f"seed, the method's crossing time over {b}'s on the same seed, over the seeds where both reached the target "
        f"(seeds that never reached are counted in the third column, not in the ratio); geometric mean, {pct} % "
        f"percentile bootstrap over seeds (B = {report.draws}, numpy Generator seed {report.seed}), and the {pct} % t "
        f"interval of the log ratios, exponentiated (the bootstrap is too narrow with few seeds; a method is faster "
        f"or slower only where both intervals exclude 1). Accuracy at a "
        f"time: linear interpolation between evaluations, the final accuracy after a run's end; Δ: paired over the "
        f"seeds shared with {b}, mean difference with its {pct} % t interval.",
        "",
    ]
    shares = [a.share for a in report.methods[0].at]
    head = " | ".join(f"{100 * s:g} % ({s * report.budget:.1f} s)" for s in shares)
    lines += [f"Test accuracy (%) at shares of {b}'s budget, mean over the seeds with an evaluation by then (Δ vs "
              f"{b} in points [{pct} % t], paired over the seeds both have there):", "",
              f"| method | {head} |", "|---|" + "---:|" * len(shares)]
    for m in report.methods:
        cells = []
        for a in m.at:
            acc = "–" if a.acc is None else f"{100 * a.acc.mean:.2f}"
            if a.acc is not None and a.acc.n < m.n:
                acc += f" ({a.acc.n} of {m.n} seeds)"
            cells.append(acc if m.method == b or a.delta is None else f"{acc} ({difference(a.delta, False, False)})")
        lines.append(f"| {m.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
