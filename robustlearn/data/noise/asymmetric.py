"""Asymmetric (class-conditional) label noise: visually similar classes are confused.

Patrini et al. 2017, "Making deep neural networks robust to label noise: a loss correction approach"
(maps for MNIST and CIFAR-10, and the CIFAR-100 construction); the Fashion-MNIST map follows the same idea.
Each mapped class c flips to map[c] for exactly round(r · n_c) of its samples; other classes never flip.
T[c, c] = 1 - r and T[c, map[c]] = r for mapped c, T[c, c] = 1 otherwise.
"""

from __future__ import annotations

import numpy as np

from robustlearn.data.base import Noise
from robustlearn.data.noise.common import pick_exact
from robustlearn.errors import ConfigError
from robustlearn.registry import NOISES

CIFAR100_GROUP = 5


def cifar100_map() -> dict[int, int]:
    """Within each run of 5 consecutive fine classes, class i → the next one in its run, cyclically."""
    return {i: (i // CIFAR100_GROUP) * CIFAR100_GROUP + (i + 1) % CIFAR100_GROUP for i in range(100)}


# dataset -> (number of classes, {true class: noisy class})
MAPS: dict[str, tuple[int, dict[int, int]]] = {
    # 7 → 1, 2 → 7, 5 ↔ 6, 3 → 8
    "mnist": (10, {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}),
    # ankle boot → sneaker, sneaker → sandal, pullover → shirt, coat → dress
    "fashion_mnist": (10, {9: 7, 7: 5, 2: 6, 4: 3}),
    # truck → automobile, bird → airplane, deer → horse, cat ↔ dog
    "cifar10": (10, {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}),
    "cifar100": (100, cifar100_map()),
}


@NOISES.register("asymmetric")
class Asymmetric(Noise):
    """Class-conditional flips by a fixed per-dataset map (Patrini et al. 2017).

    mnist: 7→1, 2→7, 5↔6, 3→8. fashion_mnist: 9→7 (ankle boot→sneaker), 7→5 (sneaker→sandal),
    2→6 (pullover→shirt), 4→3 (coat→dress). cifar10: 9→1 (truck→automobile), 2→0 (bird→airplane),
    4→7 (deer→horse), 3↔5 (cat↔dog). cifar100: in each group of 5 consecutive fine classes,
    i → next in the group (cyclic). Exactly round(r · n_c) samples of each mapped class flip.
    """

    def transition_and_labels(self, labels, num_classes, rate, rng, features, dataset):
        if dataset not in MAPS:
            raise ConfigError(
                f"noise.kind=asymmetric has no class map for dataset '{dataset}'. Datasets with a map: "
                f"{', '.join(sorted(MAPS))}. Use symmetric, pairflip, instance or matrix noise instead.",
                key="noise.kind",
            )
        k, mapping = MAPS[dataset]
        if num_classes != k:
            raise ConfigError(
                f"noise.kind=asymmetric: the {dataset} map is for {k} classes, the data has {num_classes}.",
                key="noise.kind",
            )
        target = np.arange(k)
        for src, dst in mapping.items():
            target[src] = dst
        chosen = pick_exact(labels, sorted(mapping), rate, rng)
        noisy = labels.copy()
        noisy[chosen] = target[labels[chosen]]
        t = np.eye(k)
        for src, dst in mapping.items():
            t[src, src] = 1.0 - rate
            t[src, dst] += rate
        self.extra = {"map": {int(s): int(d) for s, d in sorted(mapping.items())}}
        return noisy, t
