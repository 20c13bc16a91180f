"""docs/benchmarks/noisy_labels.md: the robust losses and loss/target corrections against CE (fmnist_noisy_losses), and
some of them tuned on the noisy validation split beside their defaults (fmnist_noisy_tuned)."""

from __future__ import annotations

from pathlib import Path

from robustlearn.report.bundle import Bundle, Source
from robustlearn.report.pages import noisy, noisy_tuned

SWEEP = "fmnist_noisy_losses"
SOURCES = [Source("runs/noisy_losses/results.sqlite", {"sweep": SWEEP}),
           Source("runs/noisy_tuned/results.sqlite", {"sweep": "fmnist_noisy_tuned"})]


def context(bundle: Bundle, figures: Path) -> dict:
    default, tuned = noisy_tuned.split(bundle)
    values = noisy.context(default, figures)
    values["runs"] = len(bundle.runs)
    values["tuned"] = noisy_tuned.section(default, tuned, figures, noisy.slug) if tuned is not None else None
    return values
