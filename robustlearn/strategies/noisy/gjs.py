"""Generalised Jensen-Shannon divergence (GJS).

Englesson & Azizpour, "Generalized Jensen-Shannon Divergence Loss for Learning with Noisy Labels", NeurIPS 2021;
official code ErikEnglesson/GJS (`losses.py`, `JensenShannonDivergenceWeightedScaled`; `scripts/` for the settings).

With the label distribution d_1 = e_y and the network's predictions d_2..d_{M+1} on M augmented views of the same
images, weights pi = (pi_1, ..., pi_{M+1}) summing to 1, and their mixture m = sum_j pi_j d_j:

    GJS_i = Z * sum_j pi_j KL(d_j || m),      Z = -1 / ((1 - pi_1) log(1 - pi_1))

KL terms as the official `custom_kl_div`: sum over classes with d > 0 of d (log clamp(d, 1e-7) - log clamp(m, 1e-7)).
The loss is bounded, between CE-like (pi_1 -> 0) and MAE-like (pi_1 -> 1) behaviour, and with M >= 2 its
prediction-only part is a consistency term between the views. The batch mean of GJS_i is the official loss.

Views: the first prediction is the step's own logits (the loader's augmentation of the batch); views 2..M come from
`datamodule.views(index, M - 1)` (further independent draws of the run's augmentation, resume-exact) through the
network whose loss it is (the module's, or a peer's under Co-teaching): M forwards per step in all.

Defaults: weights [0.9, 0.05, 0.05] (two views), the official CIFAR-10 40 % symmetric script (`gjs-40.yaml`); under
asymmetric noise the method YAML applies [0.3, 0.35, 0.35] (official `asym/gjs-40.yaml`). Departure: the official
views are RandAugment-strong ("augs: ss"); here they are the run's augmentation (crop and flip), the only one the
datamodule has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number

CLAMP = 1e-7  # the official code's clamp of log arguments


def gjs_loss(logits: list[torch.Tensor], y: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Per-sample GJS of the predictions `logits` (one (B, K) tensor per view) against labels `y`."""
    k = logits[0].shape[1]
    dists = [F.one_hot(y, k).float()] + [torch.softmax(z.float(), dim=1) for z in logits]
    mean = sum(w * d for w, d in zip(weights, dists))
    log_mean = mean.clamp(CLAMP, 1.0).log()
    total = 0.0
    for w, d in zip(weights, dists):
        kl = torch.where(d > 0, d * (d.clamp_min(CLAMP).log() - log_mean), torch.zeros_like(d)).sum(1)
        total = total + w * kl
    pi1 = weights[0]
    return total * (-1.0 / ((1.0 - pi1) * math.log(1.0 - pi1)))


@STRATEGIES.register("gjs")
class GJS(Strategy):
    """Generalised Jensen-Shannon loss (Englesson & Azizpour 2021): label and M views' predictions, weights pi."""

    provides_loss = True

    @dataclass
    class Params:
        weights: list[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])  # pi_1 (label), then one per view

        def __post_init__(self):
            w = self.weights
            if not isinstance(w, (list, tuple)) and hasattr(w, "__iter__"):
                w = list(w)
            if (not isinstance(w, (list, tuple)) or len(w) < 2 or not all(is_number(x) and x > 0 for x in w)
                    or abs(sum(w) - 1.0) > 1e-3 or not w[0] < 1.0):
                raise ConfigError(f"gjs: weights = {self.weights!r} must be a list of at least two numbers > 0 "
                                  "summing to 1: pi_1 for the label, then one per augmented view.", "weights")
            self.weights = [float(x) for x in w]

    @property
    def needs(self) -> tuple[str, ...]:
        return ("datamodule",) if len(self.params.weights) > 2 else ()

    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule, net=None) -> torch.Tensor:
        views = len(self.params.weights) - 1
        preds = [logits]
        if views > 1:
            forward = net if net is not None else module
            extra = self.datamodule(module.trainer).views(batch["index"], views - 1)
            preds += [forward(x) for x in extra]
        return gjs_loss(preds, batch["y"], self.params.weights)
