"""Check a plain config dict against the dataclass schema: unknown keys, types, allowed values and ranges.

Every problem raises `ConfigError` naming the dotted key, the value and what is allowed; unknown keys get the
closest known key suggested.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from robustlearn import registry
from robustlearn.composition import check_composition, run_check_config
from robustlearn.errors import ConfigError, did_you_mean
from robustlearn.schema import EXTENDED, Config, StrategyCfg, entry_params

_BOUNDS = {"gt": (lambda v, b: v > b, ">"), "ge": (lambda v, b: v >= b, ">="),
           "lt": (lambda v, b: v < b, "<"), "le": (lambda v, b: v <= b, "<=")}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(inner)}"
    if tp is type(None):
        return "null"
    if tp is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


def check_value(value: Any, tp: Any, key: str) -> Any:
    """Return `value` coerced to `tp` (int -> float only), or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}).", key)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {value!r} is not allowed.{did_you_mean(value, allowed)} "
                f"Allowed: {', '.join(str(a) for a in allowed)}.",
                key,
            )
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        (inner,) = typing.get_args(tp) or (Any,)
        return [check_value(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise bad
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of keys, got {value!r}.", key)
        return fill_dataclass(tp, value, key)
    raise TypeError(f"schema type {tp!r} of {key} is not supported")


def _check_bounds(value: Any, meta: Any, key: str) -> None:
    if value is None:
        return
    values = value if isinstance(value, list) else [value]
    for name, (ok, _sign) in _BOUNDS.items():
        if name in meta and not all(ok(v, meta[name]) for v in values):
            limits = " and ".join(f"{_BOUNDS[n][1]} {meta[n]}" for n in _BOUNDS if n in meta)
            raise ConfigError(f"{key}: {value!r} is out of range; it must be {limits}.", key)


def fill_dataclass(cls: type, data: dict, prefix: str, extra: tuple[type, ...] = ()) -> dict:
    """Validate `data` against dataclass `cls` (plus the fields of `extra` dataclasses); return it with defaults."""
    fields: dict[str, tuple[dataclasses.Field, Any]] = {}
    for c in (cls, *extra):
        hints = typing.get_type_hints(c)
        for f in dataclasses.fields(c):
            fields[f.name] = (f, hints[f.name])
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        dotted = f"{prefix}.{k}" if prefix else str(k)
        raise ConfigError(
            f"{dotted}: unknown key.{did_you_mean(k, fields)} "
            f"Keys allowed in {prefix or 'the top level'}: {', '.join(fields)}.",
            dotted,
        )
    out: dict[str, Any] = {}
    for name, (f, tp) in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = check_value(data[name], tp, dotted)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            value = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        else:
            raise ConfigError(f"{dotted}: this key is required.", dotted)
        _check_bounds(value, f.metadata, dotted)
        out[name] = value
    return out


def _params_of(entry: Any) -> tuple[type, ...]:
    params = getattr(entry, "Params", None)
    return (params,) if params is not None and dataclasses.is_dataclass(params) else ()


def _build_params(entry: Any, values: dict, base: type, prefix: str) -> None:
    """Construct the entry's Params with its own keys so that its own checks (__post_init__) run."""
    for params in _params_of(entry):
        try:
            params(**entry_params(values, base))
        except ConfigError as exc:
            if exc.key and not exc.key.startswith(prefix):  # an entry that names its key without the section
                raise ConfigError(f"{prefix}.{exc.key}: {exc}", f"{prefix}.{exc.key}") from exc
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{prefix}: {exc}", prefix) from exc


def validate(data: dict) -> dict:
    """Validate a whole config dict; return the complete dict with every default filled in."""
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping of keys at the top level.")
    top = {k: v for k, v in data.items() if k not in (*EXTENDED, "strategies")}
    out = fill_dataclass(Config, {**top}, "")
    hints = typing.get_type_hints(Config)
    for section, (reg_name, name_key) in EXTENDED.items():
        raw = data.get(section, {}) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{section}: expected a mapping of keys, got {raw!r}.", section)
        base = hints[section]
        name = raw.get(name_key, getattr(base(), name_key))
        name = check_value(name, str, f"{section}.{name_key}")
        entry = getattr(registry, reg_name).get(name, key=f"{section}.{name_key}")
        out[section] = fill_dataclass(base, raw, section, _params_of(entry))
        _build_params(entry, out[section], base, section)
    out["strategies"] = validate_strategies(data.get("strategies", []) or [])
    check_strategies_against_run(out)
    return out


def check_strategies_against_run(cfg: dict) -> None:
    """Each strategy's `check_config(params, cfg)` classmethod, where it has one: checks that need the rest of the
    config (e.g. a warm-up shorter than `trainer.epochs`), so that they are bad input (exit 2), not a failed run."""
    for i, values in enumerate(cfg["strategies"]):
        entry = registry.STRATEGIES.get(values["name"])
        check = getattr(entry, "check_config", None)
        if check is None:
            continue
        run_check_config(entry, entry.Params(**entry_params(values, StrategyCfg)), cfg, f"strategies[{i}]")


def validate_strategies(raw: Any) -> list[dict]:
    if not isinstance(raw, list):
        raise ConfigError(f"strategies: expected a list of {{name: ..., ...}} mappings, got {raw!r}.", "strategies")
    out, entries = [], []
    for i, item in enumerate(raw):
        key = f"strategies[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{key}: expected a mapping with a 'name' key, got {item!r}.", key)
        name = check_value(item["name"], str, f"{key}.name")
        entry = registry.STRATEGIES.get(name, key=f"{key}.name")
        values = fill_dataclass(StrategyCfg, item, key, _params_of(entry))
        _build_params(entry, values, StrategyCfg, key)
        entries.append((name, entry))
        out.append(values)
    check_composition(entries)
    return out
