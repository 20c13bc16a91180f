"""Generated tabular datasets: Gaussian blobs and two moons, float32 `(N, D)`.

`blobs`: K centres drawn uniformly from the box [-10, 10]^D (as scikit-learn's `make_blobs`); each sample is
its class centre plus N(0, spread² I) noise. `moons`: the two interleaving half circles of `make_moons`,
class 0 at (cos t, sin t), class 1 at (1 - cos t, 1/2 - sin t), t ~ U[0, π], plus N(0, spread² I) noise
(spread 0.1–0.2 gives the usual picture; the default 1.0 makes the classes overlap heavily).
Classes are exactly balanced (labels i mod K, shuffled). Everything comes from
`np.random.default_rng(generator_seed)`: centres, then the training set, then the test set.
Normalisation constants (per feature mean and std) come from the training set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustlearn.data.base import ArraySet, Source
from robustlearn.errors import ConfigError
from robustlearn.registry import DATASETS

KINDS = ("blobs", "moons")
CENTER_BOX = 10.0


def _int(value, key: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{key} must be an integer >= {low} (got {value!r}).", key=key)
    return int(value)


@DATASETS.register("synthetic")
class Synthetic(Source):
    """Generated blobs or moons. Params: `kind` (blobs | moons), `n_train` (2000), `n_test` (1000),
    `n_classes` (4, blobs only; moons has 2), `n_features` (2, blobs only; moons has 2), `spread` (1.0: blob
    std or moons noise std), `generator_seed` (0). No augmentation."""

    @dataclass
    class Params:
        kind: str = "blobs"
        n_train: int = 2000
        n_test: int = 1000
        n_classes: int = 4
        n_features: int = 2
        spread: float = 1.0
        generator_seed: int = 0

    default_crop_padding = 0
    default_hflip = False

    def validate(self) -> Params:
        p = self.params
        if p.kind not in KINDS:
            raise ConfigError(
                f"data.kind must be one of {', '.join(KINDS)} (got {p.kind!r}).", key="data.kind"
            )
        n_classes = 2 if p.kind == "moons" else _int(p.n_classes, "data.n_classes", 2)
        _int(p.n_train, "data.n_train", n_classes)
        _int(p.n_test, "data.n_test", 1)
        _int(p.n_features, "data.n_features", 1)
        _int(p.generator_seed, "data.generator_seed", 0)
        spread = p.spread
        number = isinstance(spread, (int, float)) and not isinstance(spread, bool)
        if not number or not np.isfinite(spread) or spread < 0:
            raise ConfigError(f"data.spread must be a number >= 0 (got {spread!r}).", key="data.spread")
        return p

    def load(self, root: str | None, download: bool) -> ArraySet:
        p = self.validate()
        rng = np.random.default_rng(p.generator_seed)
        if p.kind == "blobs":
            k, d = int(p.n_classes), int(p.n_features)
            centers = rng.uniform(-CENTER_BOX, CENTER_BOX, size=(k, d))

            def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
                y = rng.permutation(np.arange(n) % k)
                return centers[y] + p.spread * rng.standard_normal((n, d)), y

        else:
            k = 2

            def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
                y = rng.permutation(np.arange(n) % 2)
                t = rng.uniform(0.0, np.pi, size=n)
                x = np.where(y[:, None] == 0,
                             np.stack([np.cos(t), np.sin(t)], 1),
                             np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], 1))  # fmt: skip
                return x + p.spread * rng.standard_normal((n, 2)), y

        x_train, y_train = draw(int(p.n_train))
        x_test, y_test = draw(int(p.n_test))
        std = x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return ArraySet(
            x_train=x_train.astype(np.float32),
            y_train=y_train.astype(np.int64),
            x_test=x_test.astype(np.float32),
            y_test=y_test.astype(np.int64),
            num_classes=k,
            class_names=[f"class_{i}" for i in range(k)],
            mean=tuple(float(m) for m in x_train.mean(axis=0)),
            std=tuple(float(s) for s in std),
        )
