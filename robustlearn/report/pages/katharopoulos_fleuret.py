"""docs/reproductions/katharopoulos_fleuret.md: importance sampling against uniform at equal training time, and the
two samplers against each other (the paper's "upper bound better than loss"), paired by seed."""

from __future__ import annotations

from pathlib import Path

from robustlearn.leaderboard.stats import Paired, paired
from robustlearn.leaderboard.time_to_target import TARGET_SHARE, Ratio, ratio_to_baseline, time_to_target
from robustlearn.report.bundle import Bundle, Source
from robustlearn.report.numbers import num
from robustlearn.report.pages import wallclock

SWEEP = "katharopoulos_fleuret_cpu"
SOURCES = [Source(f"runs/{SWEEP}/results.sqlite", {"sweep": SWEEP})]
UPPER, LOSS = "presample_upper_bound", "presample_loss"


def head_to_head(bundle: Bundle) -> tuple[Ratio, Paired | None]:
    """Upper bound against loss sampling on the seeds both ran: the ratio of their crossing times of the page's target
    (uniform's), and the paired difference of their accuracy at uniform's budget."""
    found = wallclock.runs_by_method(bundle)
    report = time_to_target({m: [{"seed": r["seed"], "series": r["series"]} for r in runs]
                             for m, runs in found.items()}, baseline=wallclock.BASELINE, target_share=TARGET_SHARE)
    rows = {m.method: m for m in report.methods}
    upper, loss = rows[UPPER], rows[LOSS]
    return (ratio_to_baseline(upper.crossing, loss.crossing),
            paired(upper.at_share(1.0).by_seed, loss.at_share(1.0).by_seed))


def context(bundle: Bundle, figures: Path) -> dict:
    ratio, d = head_to_head(bundle)
    values = wallclock.context(bundle, figures, extra={"upper_vs_loss": d})
    held = values["holm"].get("upper_vs_loss", {"p": "–", "rejected": False})
    two = lambda v: "–" if v is None else num(v, 2)  # noqa: E731
    values["upper_vs_loss"] = {
        "ratio": two(ratio.geomean), "low": two(ratio.low), "high": two(ratio.high), "t_low": two(ratio.t_low),
        "t_high": two(ratio.t_high), "seeds": ratio.n, "faster": ratio.below_one, "slower": ratio.above_one,
        "delta": "–" if d is None else f"{100 * d.delta:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]".replace(
            "-", "−"),
        "p_holm": held["p"],
        "better": bool(d and d.low > 0 and held["rejected"]), "worse": bool(d and d.high < 0 and held["rejected"]),
    }
    return values
