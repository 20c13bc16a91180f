"""How the generated pages write numbers, intervals and tables, so every page says them the same way.

Accuracies are fractions in the bundle and percentages on the pages; differences are in percentage points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from robustlearn.leaderboard.stats import Interval, Paired


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage: 0.8812 -> "88.12"."""
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def pts(x: float | None, digits: int = 2) -> str:
    """A difference of fractions in signed percentage points: -0.0136 -> "−1.36"."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{100 * x:+.{digits}f}".replace("-", "−")


def num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}".replace("-", "−")


def acc_ci(iv: Interval | None, digits: int = 2) -> str:
    """"88.12 [87.60, 88.64]" (percent); n = 1: the mean alone."""
    if iv is None:
        return "–"
    if iv.low is None:
        return pct(iv.mean, digits)
    return f"{pct(iv.mean, digits)} [{pct(iv.low, digits)}, {pct(iv.high, digits)}]"


def delta_ci(d: Paired | None, digits: int = 2, mark: bool | None = None) -> str:
    """"−1.36 [−2.01, −0.71] *" (points): the paired difference, its 95 % interval, `*` where `mark`."""
    if d is None:
        return "–"
    star = " \\*" if mark else ""
    return f"{pts(d.delta, digits)} [{pts(d.low, digits)}, {pts(d.high, digits)}]{star}"


def value_ci(iv: Interval | Paired | None, digits: int = 2, scale: float = 1.0) -> str:
    """A plain number with its interval: "2.31 [1.90, 2.72]"."""
    if iv is None:
        return "–"
    mean = iv.delta if isinstance(iv, Paired) else iv.mean
    if iv.low is None:
        return num(scale * mean, digits)
    return f"{num(scale * mean, digits)} [{num(scale * iv.low, digits)}, {num(scale * iv.high, digits)}]"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; `align` one letter per column, l or r (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
