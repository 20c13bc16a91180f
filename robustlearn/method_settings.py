"""Per-dataset and per-noise settings of a method: the paper's values for the run's data, picked up by every run.

Papers give different hyperparameters per dataset and noise kind (SCE's α is 0.01 on MNIST and 0.1 on CIFAR-10; ELR
uses λ = 1, β = 0.9 for asymmetric noise). A method YAML keeps its main defaults in `strategies:` and lists the others
in a `settings:` block:

    settings:
      - name: mnist-like                              # recorded in the run (`settings_applied`)
        when: {data.name: [mnist, fashion_mnist]}      # dotted key -> value or list of values; all must match
        set: {strategies.0.alpha: 0.01}                # dotted key -> value, as an override would set it
        source: Wang et al. 2019, MNIST setting         # where the values come from

After the config is merged and its overrides are applied, every entry whose `when` matches the config sets its keys,
in order (a later entry wins). A key that an override set (on the command line, a sweep's grid, cases or overrides)
is never changed: what the user asks for wins over a paper's setting. The names of the entries applied are recorded
in the resolved config as `settings_applied` (a bookkeeping key: it does not enter the config hash, the values it
set do) and printed by `robustlearn fit` and `robustlearn config`; a resolved config (whose block is consumed) loads
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from robustlearn.errors import ConfigError

ENTRY_KEYS = ("name", "when", "set", "source")
TUNED_PREFIX = "tuned: "  # the name of a settings entry `robustlearn tune` wrote starts so


def dotted(key: str) -> str:
    """`strategies[0].alpha` and `strategies.0.alpha` alike, as `strategies.0.alpha`."""
    return key.replace("[", ".").replace("]", "").lstrip("+").strip()


def lookup(data: Any, key: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key in nested mappings and lists."""
    node = data
    for part in dotted(key).split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


class BadPath(Exception):
    """A dotted path that does not fit the config: at `depth`, a list of `length` items (an index out of range or
    not a number), or (length None) a value that is not a mapping."""

    def __init__(self, depth: int, length: int | None = None):
        super().__init__(depth, length)
        self.depth, self.length = depth, length


def set_dotted(data: dict, parts: list[str], value: Any) -> None:
    """Set `value` at the path `parts` (mapping keys and list indices), creating mappings on the way; the one walk
    behind command-line overrides and per-dataset settings. Raises BadPath where the path does not fit."""
    node: Any = data
    for depth, part in enumerate(parts):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise BadPath(depth, len(node))
            part = int(part)
        elif not isinstance(node, dict):
            raise BadPath(depth)
        if depth == len(parts) - 1:
            node[part] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]


def _assign(data: dict, key: str, value: Any, where: str) -> None:
    parts = dotted(key).split(".")
    try:
        set_dotted(data, parts, value)
    except BadPath as bad:
        at = ".".join(parts[: bad.depth])
        if bad.length is not None:
            raise ConfigError(f"{where}: '{key}' names no entry of the config (a list of {bad.length} at "
                              f"{at or 'the top'}).", where) from None
        raise ConfigError(f"{where}: '{key}': {at} is not a mapping.", where) from None


def _check_entry(entry: Any, i: int) -> dict:
    where = f"settings[{i}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(ENTRY_KEYS)}, got {entry!r}.", where)
    unknown = [k for k in entry if k not in ENTRY_KEYS]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; an entry of settings has {', '.join(ENTRY_KEYS)}.",
                          f"{where}.{unknown[0]}")
    if not isinstance(entry.get("name"), str) or not entry["name"]:
        raise ConfigError(f"{where}.name: a non-empty name is required (it is recorded in the run).", f"{where}.name")
    for key in ("when", "set"):
        if not isinstance(entry.get(key), dict) or not entry[key]:
            raise ConfigError(f"{where}.{key}: expected a non-empty mapping of dotted keys, got {entry.get(key)!r}.",
                              f"{where}.{key}")
    return entry


def _matches(data: dict, when: dict) -> bool:
    for key, wanted in when.items():
        found, value = lookup(data, key)
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if not found or value not in allowed:
            return False
    return True


def _overridden(key: str, overrides: Sequence[str]) -> bool:
    k = dotted(key)
    for item in overrides:
        o = dotted(item.partition("=")[0])
        if k == o or k.startswith(o + ".") or o.startswith(k + "."):
            return True
    return False


def apply_settings(data: dict, overrides: Sequence[str] = ()) -> dict:
    """Consume `data['settings']`: apply the matching entries' keys (those no override set) and record their names
    in `data['settings_applied']`. Returns `data`, changed in place."""
    entries = data.pop("settings", None)
    if entries is None:
        return data
    if not isinstance(entries, list):
        raise ConfigError(f"settings: expected a list of entries (name, when, set, source), got {entries!r}.",
                          "settings")
    applied = list(data.get("settings_applied") or [])
    for i, entry in enumerate(entries):
        entry = _check_entry(entry, i)
        if not _matches(data, entry["when"]):
            continue
        for key, value in entry["set"].items():
            if not _overridden(key, overrides):
                _assign(data, key, value, f"settings[{i}].set")
        applied.append(entry["name"])
    data["settings_applied"] = applied
    return data
