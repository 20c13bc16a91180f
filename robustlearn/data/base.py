"""Contracts between data sources, noise generators and the datamodule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass
class ArraySet:
    """A whole dataset as arrays, as a source returns it.

    Images are `(N, C, H, W)` (uint8 or float32 in [0, 1]); tabular data is `(N, D)` float32.
    Labels are int64 in `[0, num_classes)`. `mean`/`std` are per channel (images) or per feature,
    used by the datamodule to normalise.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim == 4


class Source:
    """A registered dataset. Subclasses set `Params` (a dataclass of their own `data.*` keys) and `load`.

    `default_crop_padding` / `default_hflip` are the augmentation used when `data.crop_padding` /
    `data.hflip` are left null.
    """

    @dataclass
    class Params:
        pass

    default_crop_padding: ClassVar[int] = 0
    default_hflip: ClassVar[bool] = False

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def load(self, root: str | None, download: bool) -> ArraySet:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class NoiseInfo:
    """What the label noise did, recorded for diagnostics. Training must not read `flip_mask`.

    `transition[i, j]` is the nominal P(observed = j | true = i); `transition_actual` the empirical one.
    """

    kind: str
    rate: float
    rate_actual: float
    transition: np.ndarray
    transition_actual: np.ndarray
    flip_mask: np.ndarray
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rate": self.rate,
            "rate_actual": float(self.rate_actual),
            "seed": self.seed,
            "transition": np.round(self.transition, 6).tolist(),
            "transition_actual": np.round(self.transition_actual, 6).tolist(),
        }


class Noise:
    """A registered label-noise kind. `Params` holds its own `noise.*` keys besides kind, rate and seed.

    `transition_and_labels` returns (noisy labels, nominal transition matrix). `features` is the flattened
    training input (for instance-dependent noise); `dataset` is the registered dataset name (for class maps).
    """

    @dataclass
    class Params:
        pass

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def transition_and_labels(
        self,
        labels: np.ndarray,
        num_classes: int,
        rate: float,
        rng: np.random.Generator,
        features: np.ndarray | None,
        dataset: str,
    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError
