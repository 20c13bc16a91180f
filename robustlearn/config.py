"""Load an experiment: YAML (+ `defaults:` includes) + extra includes + `key=value` overrides -> validated config.

    defaults: [../base.yaml, ../datasets/fashion_mnist.yaml]   # merged first, in order, then this file
    noise: {kind: symmetric, rate: 0.4}

Paths in `defaults` are relative to the file that names them (`.yaml` may be left off). Overrides use dotted keys
(`noise.rate=0.2`, `strategies[0].q=0.7` or `strategies.0.q=0.7`) and YAML values. The result is validated against
`robustlearn.schema` before any work starts and returned as a read-only OmegaConf DictConfig.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from robustlearn.errors import ConfigError
from robustlearn.method_settings import TUNED_PREFIX, BadPath, apply_settings, set_dotted
from robustlearn.plugins import load_plugins
from robustlearn.schema import BOOKKEEPING
from robustlearn.validate import validate


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader that also reads `1e-3` and `1e30` as floats (as YAML 1.2 and OmegaConf do)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _resolve_path(name: str, base: Path, key: str) -> Path:
    path = (base / name).expanduser()
    for candidate in (path, path.with_name(path.name + ".yaml")):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{key}: config file '{name}' not found (looked for {path} and {path}.yaml).", key)


def _read_yaml(path: Path, key: str) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read config file '{path}': {exc.strerror}.", key) from exc
    try:
        data = _yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}.", str(path)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys, not {type(data).__name__}.", str(path))
    return data


def _load_tree(path: Path, key: str, seen: tuple[Path, ...] = ()) -> dict:
    """The merged content of `path` and everything its `defaults:` list names, depth first."""
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"defaults: the includes form a cycle: {chain}.", "defaults")
    data = _read_yaml(path, key)
    defaults = data.pop("defaults", []) or []
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise ConfigError(f"{path}: defaults: expected a list of YAML file paths, got {defaults!r}.", "defaults")
    merged: dict = {}
    for name in defaults:
        child = _resolve_path(name, path.parent, f"defaults (in {path})")
        merged = _merge(merged, _load_tree(child, f"defaults (in {path})", (*seen, path)))
    return _merge(merged, data)


def _merge(base: dict, top: dict) -> dict:
    """Deep merge of mappings; lists and scalars in `top` replace those in `base`."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_INDEX = re.compile(r"\[(\d+)\]")


def _apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value (e.g. noise.rate=0.4).", item)
    key, _, text = item.partition("=")
    key = _INDEX.sub(r".\1", key.strip()).lstrip("+")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}': '{key}' is not a dotted key.", key)
    try:
        value = _yaml(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': the value is not valid YAML.", key) from exc
    parts = key.split(".")
    try:
        set_dotted(data, parts, value)
    except BadPath as bad:
        if bad.length is not None:
            where = ".".join(parts[: bad.depth + 1])
            raise ConfigError(f"override '{item}': {where} is not an index of a list of {bad.length}.", key) from None
        raise ConfigError(f"override '{item}': {'.'.join(parts[: bad.depth])} is not a mapping.", key) from None


def load_config(
    path: str | Path, overrides: Sequence[str] = (), includes: Sequence[str | Path] = ()
) -> DictConfig:
    """Read, merge, override, resolve and validate an experiment config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found.", str(path))
    data = _load_tree(path.resolve(), str(path))
    for inc in includes:
        data = _merge(data, _load_tree(_resolve_path(str(inc), Path.cwd(), "includes"), "includes"))
    for item in overrides:
        _apply_override(data, item)
    tuned_for = [e.get("when") for e in data.get("settings") or [] if isinstance(e, dict)
                 and str(e.get("name", "")).startswith(TUNED_PREFIX)]
    apply_settings(data, overrides)
    check_tuned(data, tuned_for)
    return from_dict(data)


def check_tuned(data: dict, tuned_for: list) -> None:
    """A tuned method YAML (`robustlearn tune`) runs only on a protocol it was tuned on: otherwise its row would be
    labelled tuned while it ran the defaults."""
    if not data.get("tuned") or not tuned_for:  # not tuned, or a resolved config (its settings consumed)
        return
    if any(str(n).startswith(TUNED_PREFIX) for n in data.get("settings_applied") or []):
        return
    protocols = "; ".join(", ".join(f"{k}={v}" for k, v in (w or {}).items()) for w in tuned_for)
    raise ConfigError(f"method '{data.get('method')}' was tuned by `robustlearn tune` for other protocols than this "
                      f"run's ({protocols}): its tuned values would not apply, yet the run would be labelled tuned. "
                      "Run it on one of those protocols (the same data, noise and epochs), or tune it for this one.",
                      "tuned")


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The values a tuned and a default run differ in, by dotted key: `optim.lr`, `optim.weight_decay` and every
    strategy parameter (`strategies.0.q`). Recorded with the run's result (and exported with its bundle row)."""
    out: dict[str, Any] = {"optim.lr": cfg.optim.lr, "optim.weight_decay": cfg.optim.weight_decay}
    for i, entry in enumerate(OmegaConf.to_container(cfg.strategies, resolve=True) or []):
        out.update({f"strategies.{i}.{k}": v for k, v in entry.items() if k != "name"})
    return out


def method_label(data: dict) -> None:
    """A `method` left null becomes the strategies' names joined by "+" (`gce`, `gce+elr`), or `ce` with none, so that
    a run given strategies on the command line is not recorded as cross-entropy. An explicit `method` is kept."""
    if data.get("method") is not None:
        return
    entries = data.get("strategies")
    names = [s.get("name") for s in entries if isinstance(s, dict)] if isinstance(entries, list) else []
    data["method"] = "+".join(str(n) for n in names if n) or "ce"


def from_dict(data: dict) -> DictConfig:
    """Resolve interpolations, validate and freeze a config given as a plain dict."""
    load_plugins(data.get("plugins"))  # before validation, which looks the names up
    method_label(data)
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        raise ConfigError(f"{key or 'config'}: {str(exc).splitlines()[0]}", key) from exc
    cfg = OmegaConf.create(validate(resolved))
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def config_hash(cfg: DictConfig | dict) -> str:
    """Hash of everything that changes what a run computes (bookkeeping keys left out)."""
    data = cfg if isinstance(cfg, dict) else to_dict(cfg)
    data = {k: v for k, v in data.items() if k not in BOOKKEEPING}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_id(cfg: DictConfig) -> str:
    if cfg.output.run_id:
        return str(cfg.output.run_id)
    noise = "clean" if cfg.noise.kind == "none" else f"{cfg.noise.kind}{cfg.noise.rate:g}"
    return f"{cfg.method}-{cfg.data.name}-{noise}-s{cfg.seed}-{config_hash(cfg)[:8]}"
