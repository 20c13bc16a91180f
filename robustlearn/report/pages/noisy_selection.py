"""docs/benchmarks/noisy_selection.md: sample selection, two networks, abstention, mixtures and DivideMix against CE
(fmnist_noisy_selection)."""

from __future__ import annotations

from robustlearn.report.bundle import Source
from robustlearn.report.pages.noisy import context  # noqa: F401  (the page's values and figures)

SWEEP = "fmnist_noisy_selection"
SOURCES = [Source("runs/noisy_selection/results.sqlite", {"sweep": SWEEP})]
