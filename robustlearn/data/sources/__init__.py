"""Registered dataset sources. Importing this package registers every built-in source in `DATASETS`."""

from __future__ import annotations

from robustlearn.data.sources import cifar, digits, idx, synthetic

__all__ = ["cifar", "digits", "idx", "synthetic"]
