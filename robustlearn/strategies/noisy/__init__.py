"""Noisy-label methods: robust losses, loss correction, target correction. One file each; see docs/methods/."""

from robustlearn.strategies.noisy import (
    backward_correction,
    bootstrap,
    elr,
    forward_correction,
    gce,
    imae,
    label_smoothing,
    mae,
    nce_rce,
    poly1,
    proselflc,
    sce,
    taylor_ce,
    truncated_gce,
)

__all__ = ["backward_correction", "bootstrap", "elr", "forward_correction", "gce", "imae", "label_smoothing", "mae",
           "nce_rce", "poly1", "proselflc", "sce", "taylor_ce", "truncated_gce"]
