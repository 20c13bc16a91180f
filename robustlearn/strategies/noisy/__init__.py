"""Noisy-label methods: robust losses, loss correction, sample selection, label correction. One file each."""

from robustlearn.strategies.noisy import gce, sce

__all__ = ["gce", "sce"]
