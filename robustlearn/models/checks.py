"""Validation shared by the models: parameter values and the input shapes a model can take.

Every problem raises `ConfigError` naming the dotted key (`model.<key>`, or `model.name` for a shape the model
cannot take) and what is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from robustlearn.errors import ConfigError, did_you_mean


def dropout_field(default: float = 0.0) -> Any:
    """A dropout-probability field; the bounds metadata lets the config validator check it too."""
    return dataclasses.field(default=default, metadata={"ge": 0.0, "lt": 1.0})


def positive_field(default: int) -> Any:
    """A positive-integer field (widths, block counts)."""
    return dataclasses.field(default=default, metadata={"ge": 1})


def check_dropout(value: Any, key: str) -> float:
    """A probability in [0, 1), returned as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(
            f"model.{key}: {value!r} is not a dropout probability; it must be a number in [0, 1).",
            f"model.{key}",
        )
    return float(value)


def check_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"model.{key}: expected true or false, got {value!r}.", f"model.{key}")
    return value


def check_positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"model.{key}: {value!r} is not allowed; it must be a positive integer.", f"model.{key}"
        )
    return value


def check_int_list(value: Any, key: str) -> list[int]:
    """A (possibly empty) list of positive integers."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(
            f"model.{key}: expected a list of positive integers, got {value!r}.", f"model.{key}"
        )
    return [check_positive_int(v, key) for v in value]


def make_params(params_cls: type, values: Any, name: str) -> Any:
    """`params_cls` built from a mapping of `model.*` keys (`name` is ignored); unknown keys are errors."""
    if values is None:
        return params_cls()
    if isinstance(values, params_cls):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"model: expected a mapping of keys, got {values!r}.", "model")
    allowed = [f.name for f in dataclasses.fields(params_cls)]
    own = {str(k): v for k, v in values.items() if k != "name"}
    for key in own:
        if key not in allowed:
            raise ConfigError(
                f"model.{key}: unknown key for model '{name}'.{did_you_mean(key, allowed)} "
                f"Keys allowed: name, {', '.join(allowed)}.",
                f"model.{key}",
            )
    return params_cls(**own)


def image_shape(input_shape: Sequence[int], name: str, min_size: int = 1) -> tuple[int, int, int]:
    """`(C, H, W)` of an image input with H, W >= `min_size`, or ConfigError naming `model.name`."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < min_size:
        need = "an image input (C, H, W)" + (f" with H and W at least {min_size}" if min_size > 1 else "")
        raise ConfigError(
            f"model.name: model '{name}' needs {need}, but the dataset gives inputs of shape {shape}. "
            "Choose another model (mlp takes any shape) or another dataset.",
            "model.name",
        )
    return shape  # type: ignore[return-value]
