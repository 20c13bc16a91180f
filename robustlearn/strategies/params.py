"""Predicates for strategies' `Params.__post_init__` checks, written once: YAML booleans are ints to Python, and a
NaN or infinity passes no range check by accident only if it is refused first."""

from __future__ import annotations

import math


def is_number(value) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)
