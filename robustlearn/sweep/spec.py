"""Sweep files and their expansion into runs.

A sweep file names a base experiment, the methods to compare, a grid of config values and the seeds:

    name: noisy_synthetic                 # sweep name: W&B group, `experiment` and `sweep` of every run
    base: ../experiments/synthetic.yaml   # experiment YAML, relative to this file
    methods: [ce, gce]                    # each merges configs/methods/<m>.yaml into the base
    grid: {noise.rate: [0.2, 0.4]}        # dotted key -> values; the cartesian product is taken
    cases:                                # optional: points whose keys move together, crossed with the grid
      - {"strategies[0].end": 0, trainer.epochs: 40}
      - {"strategies[0].end": 20, trainer.epochs: 60}
    seeds: [0, 1, 2]
    overrides: [trainer.epochs=5]         # key=value applied to every run
    cluster: {timeout_min: 60}            # submitit parameters (backend=submitit only)

Runs = seeds x grid x cases x methods, in that nesting (all methods of seed 0 come first, so that a sweep stopped
early still holds comparable results). Each run's config is loaded and validated with `robustlearn.config`;
the whole sweep is checked before any run starts.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robustlearn.config import config_hash, from_dict, load_config, run_id, to_dict, to_yaml
from robustlearn.errors import ConfigError, did_you_mean

KEYS = ("name", "base", "methods", "grid", "cases", "seeds", "overrides", "cluster")
RESERVED = ("seed", "method", "sweep", "experiment", "tags")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: how it was made (overrides, includes) and what it resolves to."""

    run_id: str
    config_hash: str
    method: str
    seed: int
    labels: dict[str, Any]  # method, each grid and case key, and seed -> value
    overrides: tuple[str, ...]
    includes: tuple[str, ...]
    config_yaml: str  # the resolved, validated config that `fit` receives
    output_root: str
    accelerator: str
    devices: int

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.labels.items())


@dataclass
class SweepFile:
    """A parsed and checked sweep YAML."""

    path: Path
    name: str
    base: Path
    methods: list[str | None]
    grid: dict[str, list[Any]]
    seeds: list[int | None]
    overrides: list[str]
    cluster: dict[str, Any] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=lambda: [{}])  # [{}]: no cases

    @property
    def varied(self) -> set[str]:
        """The dotted keys the sweep sets per run (grid and cases)."""
        return set(self.grid) | set(self.cases[0])


def format_value(value: Any, key: str) -> str:
    """`value` written so that YAML reads it back as the same value (as `key=value` overrides are read)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("...").strip()
    back = yaml.safe_load(text)
    if "\n" in text or back != value or type(back) is not type(value):
        raise ConfigError(f"{key}: the value {value!r} cannot be written as a key=value override.", key)
    return text


def _flatten(grid: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in grid.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def _str_list(data: dict, key: str, path: Path) -> list[str]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} (in {path}): expected a list of strings, got {value!r}.", key)
    return value


def _no_duplicates(values: list, key: str, path: Path) -> None:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ConfigError(f"{key} (in {path}): {seen[0]!r} is listed twice.", key)


def load_sweep(path: str | Path) -> SweepFile:
    """Read and check a sweep file (not yet the run configs: see `expand`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file '{path}' not found.", str(path))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}.", str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a sweep file must hold a mapping of keys.", str(path))
    for key in data:
        if key not in KEYS:
            raise ConfigError(
                f"{key} (in {path}): unknown sweep key.{did_you_mean(key, KEYS)} Allowed: {', '.join(KEYS)}.",
                str(key),
            )
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"name (in {path}): expected a sweep name of letters, digits, '_', '.' or '-', got {name!r}.",
            "name",
        )
    if not isinstance(data.get("base"), str):
        raise ConfigError(f"base (in {path}): expected the path of an experiment YAML file.", "base")
    base = (path.parent / data["base"]).resolve()
    if not base.is_file():
        raise ConfigError(f"base (in {path}): experiment file '{base}' not found.", "base")
    methods: list[str | None] = _str_list(data, "methods", path) or [None]
    _no_duplicates(methods, "methods", path)
    raw_grid = data.get("grid") or {}
    if not isinstance(raw_grid, dict):
        raise ConfigError(f"grid (in {path}): expected a mapping of dotted key -> list of values.", "grid")
    grid = _flatten(raw_grid)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"grid.{key} (in {path}): expected a non-empty list of values, got {values!r}.", f"grid.{key}"
            )
        _no_duplicates(values, f"grid.{key}", path)
        _not_reserved(key, f"grid.{key}", path)
    cases = _cases(data.get("cases"), grid, path)
    seeds = data.get("seeds")
    if seeds is None:
        seeds = [None]
    elif (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ConfigError(
            f"seeds (in {path}): expected a non-empty list of integers, got {seeds!r}.", "seeds"
        )
    _no_duplicates(seeds, "seeds", path)
    cluster = data.get("cluster") or {}
    if not isinstance(cluster, dict):
        raise ConfigError(f"cluster (in {path}): expected a mapping of submitit parameters.", "cluster")
    return SweepFile(path, name, base, methods, grid, seeds, _str_list(data, "overrides", path), cluster, cases)


def _not_reserved(key: str, where: str, path: Path) -> None:
    if key in RESERVED:
        raise ConfigError(
            f"{where} (in {path}): '{key}' is set by the sweep itself; use `seeds`/`methods` instead.", where
        )


def _cases(raw: Any, grid: dict[str, list[Any]], path: Path) -> list[dict[str, Any]]:
    """`cases`: a list of mappings dotted key -> value, all with the same keys, none of them a grid key."""
    if raw is None:
        return [{}]
    if not isinstance(raw, list) or not raw or not all(isinstance(c, dict) and c for c in raw):
        raise ConfigError(
            f"cases (in {path}): expected a non-empty list of mappings dotted key -> value (one mapping per run "
            f"variant, e.g. [{{'strategies[0].end': 0, trainer.epochs: 40}}, ...]), got {raw!r}.",
            "cases",
        )
    cases = [_flatten(c) for c in raw]
    keys = list(cases[0])
    for i, case in enumerate(cases):
        if set(case) != set(keys):
            raise ConfigError(
                f"cases[{i}] (in {path}): sets {sorted(case)} but cases[0] sets {sorted(keys)}; every case must set "
                "the same keys (a key that only some cases change belongs in each case with its base value).",
                f"cases[{i}]",
            )
        for key, value in case.items():
            if isinstance(value, (list, dict)) and not value:
                raise ConfigError(f"cases[{i}].{key} (in {path}): empty value {value!r}.", f"cases[{i}].{key}")
    for key in keys:  # every case sets these keys
        _not_reserved(key, f"cases[0].{key}", path)
        if key in grid:
            raise ConfigError(
                f"cases (in {path}): {key} is also a grid key; a key is varied either by the grid or by the cases.",
                "cases",
            )
    _no_duplicates(cases, "cases", path)
    return cases


def configs_dir(base: Path) -> Path | None:
    """The nearest folder above `base` that holds a `methods/` folder."""
    for parent in base.parents:
        if (parent / "methods").is_dir():
            return parent
    return None


def method_file(sweep: SweepFile, method: str) -> Path:
    root = configs_dir(sweep.base)
    candidate = (root or sweep.base.parent) / "methods" / f"{method}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in candidate.parent.glob("*.yaml")) if candidate.parent.is_dir() else []
        raise ConfigError(
            f"methods (in {sweep.path}): method '{method}' has no config file {candidate}."
            f"{did_you_mean(method, known)} Known methods: {', '.join(known) or 'none'}.",
            "methods",
        )
    return candidate


def _override_key(item: str) -> str:
    return re.sub(r"\[(\d+)\]", r".\1", item.partition("=")[0].strip()).lstrip("+")


def expand_sweep(sweep: SweepFile, overrides: Sequence[str] = ()) -> list[RunSpec]:
    """All runs of `sweep`, each loaded and validated; raises ConfigError before anything runs."""
    for item in overrides:
        key = _override_key(item)
        if key in sweep.varied or (key == "seed" and sweep.seeds != [None]):
            raise ConfigError(
                f"override '{item}': {key} is varied by the sweep ({sweep.path}); change it there instead.",
                key,
            )
    includes = {m: str(method_file(sweep, m)) for m in sweep.methods if m is not None}
    keys = list(sweep.grid)
    specs: list[RunSpec] = []
    by_hash: dict[str, RunSpec] = {}
    for seed in sweep.seeds:
        for point, case in itertools.product(itertools.product(*(sweep.grid[k] for k in keys)), sweep.cases):
            grid_items = [f"{k}={format_value(v, f'grid.{k}')}" for k, v in zip(keys, point)]
            grid_items += [f"{k}={format_value(v, f'cases.{k}')}" for k, v in case.items()]
            for method in sweep.methods:
                run_overrides = [
                    *sweep.overrides,
                    *grid_items,
                    *([f"seed={seed}"] if seed is not None else []),
                    *overrides,
                ]
                run_includes = (includes[method],) if method is not None else ()
                cfg = load_config(sweep.base, run_overrides, run_includes)
                data = to_dict(cfg)
                data["sweep"] = sweep.name
                data["experiment"] = sweep.name
                data["tags"] = [*data.get("tags", []), *grid_items]
                cfg = from_dict(data)
                labels = {"method": cfg.method, **dict(zip(keys, point)), **case, "seed": cfg.seed}
                spec = RunSpec(
                    run_id=run_id(cfg),
                    config_hash=config_hash(cfg),
                    method=str(cfg.method),
                    seed=int(cfg.seed),
                    labels=labels,
                    overrides=tuple(run_overrides),
                    includes=run_includes,
                    config_yaml=to_yaml(cfg),
                    output_root=str(cfg.output.root),
                    accelerator=str(cfg.trainer.accelerator),
                    devices=int(cfg.trainer.devices),
                )
                if spec.config_hash in by_hash:
                    twin = by_hash[spec.config_hash]
                    raise ConfigError(
                        f"{sweep.path}: runs '{twin.label}' and '{spec.label}' resolve to the same config; "
                        "a grid key or method that changes nothing is listed.",
                        "grid",
                    )
                if any(s.run_id == spec.run_id for s in specs):
                    raise ConfigError(
                        f"output.run_id: every run of sweep {sweep.name} would be called '{spec.run_id}'; "
                        "leave output.run_id null in a sweep so that each run gets its own id.",
                        "output.run_id",
                    )
                by_hash[spec.config_hash] = spec
                specs.append(spec)
    return specs


def expand(sweep_path: str | Path, overrides: Sequence[str] = ()) -> list[RunSpec]:
    """Read the sweep file at `sweep_path` and return its runs, every config validated."""
    return expand_sweep(load_sweep(sweep_path), overrides)
