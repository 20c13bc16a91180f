"""Label noise: registered kinds and `apply_noise`, which draws the noisy labels once and records them.

Kinds (see each module): `none`, `symmetric` (exclusive | inclusive), `pairflip`, `asymmetric`
(per-dataset class maps), `instance` (instance-dependent), `matrix` (explicit transition matrix).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from robustlearn.data.base import NoiseInfo
from robustlearn.data.noise import asymmetric, instance, matrix, simple
from robustlearn.data.noise.common import check_labels, check_rate, empirical_transition
from robustlearn.errors import ConfigError
from robustlearn.registry import NOISES

__all__ = ["apply_noise", "build_params", "asymmetric", "instance", "matrix", "simple"]


def build_params(cls: type, params: Any) -> Any:
    """The kind's Params from a mapping of its own `noise.*` keys, an instance, or None (defaults)."""
    if params is None:
        return cls.Params()
    if isinstance(params, cls.Params):
        return params
    if not isinstance(params, Mapping):
        got = type(params).__name__
        raise TypeError(f"noise params must be a mapping or {cls.__name__}.Params, not {got}")
    allowed = [f.name for f in dataclasses.fields(cls.Params)]
    for key in params:
        if key not in allowed:
            what = f"its keys are {', '.join(allowed)}" if allowed else "it takes no extra keys"
            raise ConfigError(
                f"noise.{key} is not a parameter of noise kind '{cls.registry_name}': {what} "
                "(besides kind, rate and seed).",
                key=f"noise.{key}",
            )
    return cls.Params(**dict(params))


def apply_noise(
    kind: str,
    params: Any,
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    seed: int,
    features: np.ndarray | None = None,
    dataset: str = "",
) -> tuple[np.ndarray, NoiseInfo]:
    """Draw noisy labels with the registered noise `kind`; return them and a NoiseInfo.

    `params` is a mapping of the kind's own `noise.*` keys (or its Params instance, or None for the
    defaults). The only randomness is `np.random.default_rng(seed)`, so the same `noise.seed` gives the
    same labels whatever the training seed. `features` are the training inputs (needed by `instance`),
    `dataset` the registered dataset name (needed by `asymmetric`). NoiseInfo holds the nominal rate and
    transition, the realised rate (share of labels changed), the flip mask and the empirical transition.
    """
    cls = NOISES.get(kind, key="noise.kind")
    noise = cls(build_params(cls, params))
    rate = check_rate(rate)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"noise.seed must be an integer (got {seed!r}).", key="noise.seed")
    clean = check_labels(labels, num_classes)
    rng = np.random.default_rng(int(seed))
    noisy, transition = noise.transition_and_labels(clean, int(num_classes), rate, rng, features, dataset)
    noisy = np.asarray(noisy, dtype=np.int64)
    flip = noisy != clean
    info = NoiseInfo(
        kind=kind,
        rate=rate,
        rate_actual=float(flip.mean()) if len(flip) else 0.0,
        transition=np.asarray(transition, dtype=np.float64),
        transition_actual=empirical_transition(clean, noisy, int(num_classes)),
        flip_mask=flip,
        seed=int(seed),
        extra=dict(getattr(noise, "extra", {})),
    )
    return noisy, info
