"""Strategies, datasets, models and noise kinds from outside the package, for the CLI, sweeps and Python alike.

Two routes, both loaded before a config is validated, so `robustlearn fit`, `robustlearn sweep` and every sweep
worker (which loads the run's resolved config.yaml) know the same names:

1. **Installed packages** declare entry points (the Python packaging standard) in one of the groups
   `robustlearn.strategies`, `robustlearn.datasets`, `robustlearn.models`, `robustlearn.noises`:

       [project.entry-points."robustlearn.strategies"]
       my_loss = "my_pkg.losses:MyLoss"          # a class: registered under the entry point's name
       my_pkg = "my_pkg.strategies"              # a module: importing it runs its @STRATEGIES.register decorators

   They are loaded the first time a registry is asked for a name.
2. **Code that is not installed** is named in the config: `plugins: [my_project.strategies, ./extra/my_loss.py]`,
   module names (imported with the working directory on the import path) or paths to `.py` files (relative to the
   working directory). `plugins` is a bookkeeping key: it says where code comes from, not what a run computes (the
   strategies' names and parameters, in the config hash, do).

A plugin that fails to import stops with a clear error naming it (exit code 2), before anything is written.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from robustlearn.errors import ConfigError

GROUPS = ("robustlearn.strategies", "robustlearn.datasets", "robustlearn.models", "robustlearn.noises")
_imported: dict[str, Any] = {}


def _registry(group: str):
    from robustlearn import registry

    return {"robustlearn.strategies": registry.STRATEGIES, "robustlearn.datasets": registry.DATASETS,
            "robustlearn.models": registry.MODELS, "robustlearn.noises": registry.NOISES}[group]


def load_entry_points() -> None:
    """Import every entry point of the four groups; a class that its import did not register is registered under
    the entry point's name."""
    for group in GROUPS:
        for ep in metadata.entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as exc:
                dist = getattr(getattr(ep, "dist", None), "name", "an installed package")
                raise ConfigError(f"plugin entry point '{ep.name} = {ep.value}' (group {group}, from {dist}) failed "
                                  f"to load: {type(exc).__name__}: {exc}.", "plugins") from exc
            reg = _registry(group)
            if isinstance(obj, type) and "registry_name" not in vars(obj):  # not registered by its own import
                reg.register(ep.name)(obj)


def _import_path(path: Path, item: str) -> Any:
    name = f"robustlearn_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugins: '{item}' cannot be imported as a Python file.", "plugins")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_plugins(items: Iterable[str] | None) -> None:
    """Import the config's `plugins` (module names or .py paths), once each per process."""
    if not items:
        return
    if isinstance(items, str) or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"plugins: expected a list of module names or .py paths, got {items!r}.", "plugins")
    from robustlearn.registry import load_builtins

    load_builtins()  # a plugin that subclasses or reuses a built-in entry finds it registered
    for item in items:
        if item in _imported:
            continue
        try:
            if item.endswith(".py"):
                path = Path(item).expanduser().resolve()
                if not path.is_file():
                    raise ConfigError(f"plugins: the file '{item}' does not exist (paths are relative to the working "
                                      f"directory, {Path.cwd()}).", "plugins")
                _imported[item] = _import_path(path, item)
            else:
                if "" not in sys.path and str(Path.cwd()) not in sys.path:
                    sys.path.insert(0, str(Path.cwd()))
                _imported[item] = importlib.import_module(item)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"plugins: '{item}' failed to import: {type(exc).__name__}: {exc}.", "plugins") from exc
