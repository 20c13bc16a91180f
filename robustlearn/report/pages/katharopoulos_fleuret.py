"""docs/reproductions/katharopoulos_fleuret.md: importance sampling against uniform at equal training time, and the
two samplers against each other (the paper's "upper bound better than loss"), paired by seed."""

from __future__ import annotations

from pathlib import Path

from robustlearn.report.bundle import Bundle, Source
from robustlearn.report.pages import wallclock

SWEEP = "katharopoulos_fleuret_cpu"
SOURCES = [Source(f"runs/{SWEEP}/results.sqlite", {"sweep": SWEEP})]


def context(bundle: Bundle, figures: Path) -> dict:
    return wallclock.context(bundle, figures, pairs={"upper_vs_loss": ("presample_upper_bound", "presample_loss")})
