"""Name -> class registries for datasets, models, strategies and noise kinds.

YAML names registered entries only; it never imports code. Each entry may carry a `Params` dataclass that
describes the keys it accepts in its config section; the config validator checks them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from robustlearn.errors import ConfigError, did_you_mean

# Modules whose import registers the built-in entries.
_BUILTIN_MODULES = (
    "robustlearn.data.sources",
    "robustlearn.data.noise",
    "robustlearn.models",
    "robustlearn.strategies",
)


class Registry:
    """A named collection of classes (or factories), filled with the `register` decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def add(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            obj.registry_name = name
            return obj

        return add

    def get(self, name: str, key: str | None = None) -> Any:
        load_builtins()
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown {self.kind} '{name}'.{did_you_mean(name, self._entries)} "
                f"Allowed: {', '.join(sorted(self._entries))}.",
                key=key,
            )
        return self._entries[name]

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        load_builtins()
        return name in self._entries


DATASETS = Registry("dataset")
MODELS = Registry("model")
STRATEGIES = Registry("strategy")
NOISES = Registry("noise kind")

_loaded = False


def load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    from robustlearn.plugins import load_entry_points

    load_entry_points()  # installed packages' entries (robustlearn/plugins.py)
