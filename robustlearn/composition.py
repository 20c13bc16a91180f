"""Which strategies may run together: roles that at most one strategy of a run may take.

Kept free of torch and Lightning so that config validation (and every command that only reads configs) stays fast.
A strategy class declares its roles as class flags (`provides_loss`, `replaces_batch`, `sets_subset`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from robustlearn.errors import ConfigError

# class flag -> what the error says
EXCLUSIVE_ROLES = {
    "provides_loss": "provide the training loss",
    "replaces_batch": "replace the training batch",
    "sets_subset": "choose the training subset",
}


def run_check_config(entry: Any, params: Any, cfg: dict, prefix: str) -> None:
    """`entry.check_config(params, cfg)`, with the key of any ConfigError it raises prefixed by `prefix`
    (`strategies[i]`), as every other strategy parameter error is."""
    try:
        entry.check_config(params, cfg)
    except ConfigError as exc:
        if exc.key and not exc.key.startswith(prefix):
            raise ConfigError(f"{prefix}.{exc.key}: {exc}", f"{prefix}.{exc.key}") from exc
        raise


def check_composition(entries: Iterable[tuple[str, Any]]) -> None:
    """Raise ConfigError where two strategies (name, class or instance) take a role that only one may take."""
    entries = list(entries)
    for flag, role in EXCLUSIVE_ROLES.items():
        takers = [name for name, entry in entries if getattr(entry, flag, False)]
        if len(takers) > 1:
            raise ConfigError(f"strategies: {' and '.join(takers)} both {role}; keep one of them.", "strategies")
