"""docs/reproductions/katharopoulos_fleuret.md: importance sampling against uniform at equal training time."""

from __future__ import annotations

from robustlearn.report.bundle import Source
from robustlearn.report.pages.wallclock import context  # noqa: F401  (the page's values and figures)

SWEEP = "katharopoulos_fleuret_cpu"
SOURCES = [Source(f"runs/{SWEEP}/results.sqlite", {"sweep": SWEEP})]
