"""Noisy-label methods: robust losses, loss correction, target correction. One file each; see docs/methods/."""

from robustlearn.strategies.noisy import (
    backward_correction,
    bootstrap,
    confident_learning,
    elr,
    forward_correction,
    gce,
    imae,
    label_smoothing,
    m_correction,
    mae,
    nce_rce,
    poly1,
    proselflc,
    sce,
    taylor_ce,
    truncated_gce,
)

__all__ = [
    "backward_correction",
    "bootstrap",
    "confident_learning",
    "elr",
    "forward_correction",
    "gce",
    "imae",
    "label_smoothing",
    "m_correction",
    "mae",
    "nce_rce",
    "poly1",
    "proselflc",
    "sce",
    "taylor_ce",
    "truncated_gce",
]
