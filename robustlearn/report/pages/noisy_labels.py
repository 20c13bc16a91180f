"""docs/benchmarks/noisy_labels.md: the robust losses and loss/target corrections against CE (fmnist_noisy_losses)."""

from __future__ import annotations

from robustlearn.report.bundle import Source
from robustlearn.report.pages.noisy import context  # noqa: F401  (the page's values and figures)

SWEEP = "fmnist_noisy_losses"
SOURCES = [Source("runs/noisy_losses/results.sqlite", {"sweep": SWEEP})]
