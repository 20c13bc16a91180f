"""Label smoothing, positive and negative.

Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception Architecture for Computer Vision", CVPR 2016
(label-smoothing regularisation); negative rates from Wei, Liu, Liu, Niu & Liu, "To Smooth or Not? When Label
Smoothing Meets Noisy Labels", ICML 2022.

    l_i = -sum_k [(1 - a) q_ik + a / K] log p_ik = (1 - a + a/K) (-log p_{i,y_i}) + (a/K) sum_{k != y_i} (-log p_ik)

q_i is the one-hot observed label, p_i = softmax(z_i), K the number of classes, a the smoothing rate (`smoothing`).
a = 0 is cross-entropy; a > 0 moves mass from the label to the uniform distribution (positive label smoothing,
PLS); a < 0 is negative label smoothing (NLS): the target puts 1 - a + a/K > 1 on the label and a/K < 0 on every
other class. The gradient in the logits is p - t as for any target that sums to one. Computed from `log_softmax` in
float32 (`soft_cross_entropy`); the target does not depend on the prediction, so nothing needs detaching.

Allowed range: -1 <= a < 1. At a = 1 the target is uniform whatever the label, and nothing is learned from the data.
Below 0 the targets are negative on the other classes, which makes the loss unbounded below (each -log p_k, k != y,
enters with a negative weight) and leaves a push of size about |a| on a fitted sample that never vanishes: the
logits grow for as long as training runs, at a rate proportional to |a|. For a >= -1 the label's weight stays at most
2 - 1/K and that push no larger than cross-entropy's gradient on a wholly wrong prediction, so a learning rate
tuned for cross-entropy stays safe. Wei et al.'s grid goes further (down to a = -8); such rates act mostly as a
larger learning rate ((1 - a) times cross-entropy's scale) and are refused here.

Default a = 0.1, Szegedy et al.'s value (the usual one). Wei et al. find positive smoothing helps at low noise rates
and negative smoothing at high ones; their code trains with cross-entropy first at high noise rates, a warm-up this
strategy does not do (it smooths from the first step).

When to use: a > 0 as a mild regulariser and calibration aid at low noise rates; a < 0 at high noise rates, where
it sharpens predictions on the samples the network already fits, in the spirit of Wei et al.'s analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.noisy.targets import one_hot, soft_cross_entropy
from robustlearn.strategies.params import is_number
from robustlearn.tuning.space import Float


@STRATEGIES.register("label_smoothing")
class LabelSmoothing(Strategy):
    """Label smoothing (Szegedy et al. 2016; negative rates, Wei et al. 2022): CE against (1 - a) q + a / K."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"smoothing": Float(0.0, 0.6)}

    provides_loss = True

    @dataclass
    class Params:
        smoothing: float = 0.1  # a, -1 <= a < 1 (Szegedy et al.: 0.1); 0: cross-entropy, < 0: negative smoothing

        def __post_init__(self):
            a = self.smoothing
            if not (is_number(a) and -1.0 <= a < 1.0):
                raise ConfigError(
                    f"label_smoothing: smoothing = {a!r} is out of range; it must be a number >= -1 and < 1 (1 makes "
                    "the target uniform whatever the label; below -1 the negative targets push the logits apart "
                    "faster than cross-entropy's largest gradient).",
                    "smoothing",
                )

    def targets(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        a = self.params.smoothing
        return (1.0 - a) * one_hot(y, num_classes) + a / num_classes

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        return soft_cross_entropy(logits, self.targets(batch["y"], logits.shape[1]))
