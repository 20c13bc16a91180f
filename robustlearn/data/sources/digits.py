"""scikit-learn's handwritten digits (UCI optical recognition of handwritten digits; Alpaydin & Kaynak 1998).

1 797 8×8 grayscale images, 10 classes, shipped with scikit-learn (nothing to download). Pixel values 0..16
are scaled to uint8 0..255 (`round(v * 255 / 16)`). The train/test split is stratified and fixed
(split seed 0), so it never depends on the training seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustlearn.data.base import ArraySet, Source
from robustlearn.data.sources.locate import channel_stats
from robustlearn.errors import ConfigError
from robustlearn.registry import DATASETS

SPLIT_SEED = 0


@DATASETS.register("digits")
class Digits(Source):
    """sklearn `load_digits` as uint8 `(N, 1, 8, 8)`. Param `test_fraction` (default 0.2): share of each
    class held out as the test set. No augmentation by default."""

    @dataclass
    class Params:
        test_fraction: float = 0.2

    default_crop_padding = 0
    default_hflip = False

    def load(self, root: str | None, download: bool) -> ArraySet:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        fraction = self.params.test_fraction
        if not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
            raise ConfigError(
                f"data.test_fraction must be a number strictly between 0 and 1 (got {fraction!r}).",
                key="data.test_fraction",
            )
        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
        labels = digits.target.astype(np.int64)
        try:
            x_train, x_test, y_train, y_test = train_test_split(
                images, labels, test_size=float(fraction), stratify=labels, random_state=SPLIT_SEED
            )
        except ValueError as e:
            raise ConfigError(
                f"data.test_fraction={fraction} leaves a split with fewer samples than classes ({e}). "
                "Use a value such as 0.2.",
                key="data.test_fraction",
            ) from e
        mean, std = channel_stats(x_train)
        names = [str(d) for d in range(10)]
        return ArraySet(x_train, y_train, x_test, y_test, 10, names, mean, std)
