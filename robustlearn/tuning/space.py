"""Search spaces: the ranges of each method's parameters worth tuning, declared beside its `Params`.

A strategy class sets `search_space = {"q": Float(0.1, 1.0), "lam": Float(0.1, 10.0, log=True), ...}`; the keys are
fields of its `Params`, and the paper's value (the default) lies inside each range (`check_space` enforces both).
The shared keys of every run have a default space (`SHARED`): the learning rate and the weight decay, so that a
method with nothing of its own to tune (cross-entropy) is tuned over the same budget as the others.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from robustlearn.errors import ConfigError


@dataclass(frozen=True)
class _Range:
    low: float
    high: float
    log: bool = False
    kind = "float"

    def problem(self) -> str | None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            return f"low = {self.low} must be below high = {self.high}"
        if self.log and self.low <= 0:
            return f"a log scale needs low > 0 (got {self.low})"
        return None

    def describe(self) -> str:
        return f"{self.kind} [{self.low:g}, {self.high:g}]{' log' if self.log else ''}"


class Float(_Range):
    """A real range; `log` samples it on a log scale."""

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high


class Int(_Range):
    """An integer range."""

    kind = "int"

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high


@dataclass(frozen=True)
class Choice:
    choices: tuple

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def problem(self) -> str | None:
        return None if len(self.choices) >= 2 else f"choices {list(self.choices)} need at least two values"

    def describe(self) -> str:
        return f"one of {list(self.choices)}"


Space = Float | Int | Choice

# The shared keys of every run (dotted config keys): the optimiser's learning rate and weight decay; the base
# config's values (lr 0.05, weight decay 5e-4, configs/base.yaml) lie inside.
SHARED: dict[str, Space] = {
    "optim.lr": Float(1e-3, 0.5, log=True),
    "optim.weight_decay": Float(1e-6, 1e-2, log=True),
}


def check_space(owner: str, space: Mapping[str, Space], params: Any = None) -> None:
    """ConfigError naming the first bad entry: a range that is empty or not a range, a key that is not a field of
    `params` (a dataclass type), or a default outside its range."""
    fields = {f.name: f for f in dataclasses.fields(params)} if params is not None else None
    for key, spec in space.items():
        if not isinstance(spec, (Float, Int, Choice)):
            raise ConfigError(f"{owner}: search space `{key}` is {spec!r}, not a Float, Int or Choice.", key)
        problem = spec.problem()
        if problem:
            raise ConfigError(f"{owner}: search space `{key}`: {problem}.", key)
        if fields is None:
            continue
        if key not in fields:
            raise ConfigError(f"{owner}: search space `{key}` is not a parameter; the parameters are "
                              f"{', '.join(fields) or 'none'}.", key)
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if default is not None and not spec.contains(default):
            raise ConfigError(f"{owner}: the default {key} = {default!r} lies outside its search space "
                              f"{spec.describe()}; the paper's value must be inside.", key)


def strategy_spaces(entries: Sequence[Mapping[str, Any]]) -> dict[str, Space]:
    """Dotted config keys (`strategies.<i>.<param>`) with their spaces, for a config's strategy entries."""
    from robustlearn.registry import STRATEGIES

    out: dict[str, Space] = {}
    for i, entry in enumerate(entries):
        cls = STRATEGIES.get(entry["name"])
        space = getattr(cls, "search_space", {}) or {}
        check_space(f"strategy {entry['name']}", space, getattr(cls, "Params", None))
        for key, spec in space.items():
            out[f"strategies.{i}.{key}"] = spec
    return out
