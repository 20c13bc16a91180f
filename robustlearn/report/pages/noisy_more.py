"""docs/benchmarks/noisy_more.md: peer loss, CORES², CAL, PES, VolMinNet, T-revision, SOP, ELR+, mixup and GJS against
CE (fmnist_noisy_more)."""

from __future__ import annotations

from robustlearn.report.bundle import Source
from robustlearn.report.pages.noisy import context  # noqa: F401  (the page's values and figures)

SWEEP = "fmnist_noisy_more"
SOURCES = [Source("runs/noisy_more/results.sqlite", {"sweep": SWEEP})]
