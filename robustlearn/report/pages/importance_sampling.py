"""docs/benchmarks/importance_sampling.md: samplers and data selection against uniform at equal training time."""

from __future__ import annotations

from robustlearn.report.bundle import Source
from robustlearn.report.pages.wallclock import context  # noqa: F401  (the page's values and figures)

SWEEP = "fmnist_sampling"
SOURCES = [Source("runs/sampling/results.sqlite", {"sweep": SWEEP})]
