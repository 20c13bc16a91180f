"""Class-independent noise kinds: none, symmetric (exclusive / inclusive) and pair flipping.

Every kind that flips by a fixed rule flips exactly round(r · n_c) samples of each class c, chosen uniformly,
so the realised rate equals the nominal one up to rounding (not Bernoulli draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustlearn.data.base import Noise
from robustlearn.data.noise.common import pick_exact
from robustlearn.errors import ConfigError
from robustlearn.registry import NOISES

VARIANTS = ("exclusive", "inclusive")


@NOISES.register("none")
class NoNoise(Noise):
    """Clean labels: T = I; `noise.rate` is ignored."""

    def transition_and_labels(self, labels, num_classes, rate, rng, features, dataset):
        return labels.copy(), np.eye(num_classes)


@NOISES.register("symmetric")
class Symmetric(Noise):
    """Symmetric (uniform) label noise, e.g. Van Rooyen et al. 2015; Patrini et al. 2017; Han et al. 2018.

    Param `variant` (default "exclusive"):
    - exclusive: round(r · n_c) samples of each class move to a uniformly chosen *other* class;
      T = (1 - r) I + r / (K - 1) (1 1ᵀ - I). Realised rate r.
    - inclusive: round(r · n_c) samples of each class are redrawn uniformly from all K classes (possibly
      their own); T = (1 - r) I + (r / K) 1 1ᵀ. Realised rate r (K - 1) / K.
    """

    @dataclass
    class Params:
        variant: str = "exclusive"

    def transition_and_labels(self, labels, num_classes, rate, rng, features, dataset):
        variant, k = self.params.variant, num_classes
        if variant not in VARIANTS:
            raise ConfigError(
                f"noise.variant must be one of {', '.join(VARIANTS)} (got {variant!r}).", key="noise.variant"
            )
        chosen = pick_exact(labels, range(k), rate, rng)
        noisy = labels.copy()
        m = int(chosen.sum())
        if variant == "exclusive":
            noisy[chosen] = (labels[chosen] + rng.integers(1, k, size=m)) % k
            t = np.full((k, k), rate / (k - 1))
            np.fill_diagonal(t, 1.0 - rate)
        else:
            noisy[chosen] = rng.integers(0, k, size=m)
            t = np.full((k, k), rate / k)
            np.fill_diagonal(t, 1.0 - rate + rate / k)
        return noisy, t


@NOISES.register("pairflip")
class PairFlip(Noise):
    """Pair flipping (Han et al. 2018, "Co-teaching"): y → (y + 1) mod K for exactly round(r · n_c) samples
    of each class c; T = (1 - r) I + r P, P the cyclic shift."""

    def transition_and_labels(self, labels, num_classes, rate, rng, features, dataset):
        k = num_classes
        chosen = pick_exact(labels, range(k), rate, rng)
        noisy = labels.copy()
        noisy[chosen] = (labels[chosen] + 1) % k
        t = (1.0 - rate) * np.eye(k) + rate * np.roll(np.eye(k), 1, axis=1)
        return noisy, t
