"""Bootstrapping: cross-entropy against a mix of the observed label and the network's own prediction.

Reed, Lee, Anguelov, Szegedy, Erhan & Rabinovich, "Training Deep Neural Networks on Noisy Labels with
Bootstrapping", ICLR 2015 (workshop track).

    soft (`bootstrap_soft`):  l_i = -sum_k [beta q_ik + (1 - beta) p_ik] log p_ik
    hard (`bootstrap_hard`):  l_i = -sum_k [beta q_ik + (1 - beta) e(argmax_k p_ik)] log p_ik
                                  = -beta log p_{i,y_i} - (1 - beta) log p_{i,argmax p_i}

q_i is the one-hot observed label, p_i = softmax(z_i), e(c) the one-hot vector of class c; 0 <= beta <= 1 and
beta = 1 is cross-entropy for both. The network's own belief takes a share (1 - beta) of the target, so a sample
whose label disagrees with a confident prediction is pulled less towards that label.

Gradient through the prediction in the target. Soft: not detached. The paper's soft objective is
beta CE(q, p) + (1 - beta) H(p), softmax regression with entropy minimisation (the paper's own reading of it), which
holds only when the gradient flows through p in the target; the Keras implementations most later papers reproduce
the method with (Ma et al.'s D2L code, ICML 2018, and Wang et al.'s SCE code, ICCV 2019) do the same (Reed et al.
published no code). Arazo et al. (ICML 2019) instead detach the prediction; that variant is CE against a constant
soft target and has no entropy term. Hard: the argmax is piecewise constant, so no gradient flows through it either
way. Computed from `log_softmax` in float32 (`soft_cross_entropy`), finite at extreme logits.

Defaults: beta = 0.95 (soft) and 0.8 (hard), the paper's values (chosen in its MNIST noise experiments).

When to use: a cheap first step beyond cross-entropy on moderate noise. The prediction is trusted with a fixed share
from the first step on, so on heavy noise it can reinforce early mistakes; ProSelfLC (`proselflc`) ramps that trust
up and scales it by confidence.
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


def _check_beta(name: str, beta) -> None:
    if not (is_number(beta) and 0.0 <= beta <= 1.0):
        raise ConfigError(f"{name}: beta = {beta!r} is out of range; it must be a number >= 0 and <= 1 "
                          "(the weight of the observed label; 1 is cross-entropy).", "beta")


class Bootstrap(Strategy):
    """Bootstrapping's shared loss: cross-entropy against beta q + (1 - beta) (a target from the prediction)."""

    provides_loss = True

    def prediction_target(self, logits: torch.Tensor) -> torch.Tensor:
        """The prediction's share of the target, `(B, K)`, from float32 logits."""
        raise NotImplementedError

    def targets(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        beta = self.params.beta
        return beta * one_hot(y, logits.shape[1]) + (1.0 - beta) * self.prediction_target(logits)

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        return soft_cross_entropy(logits, self.targets(logits, batch["y"]))


@STRATEGIES.register("bootstrap_soft")
class BootstrapSoft(Bootstrap):
    """Soft bootstrapping (Reed et al. 2015): CE against beta q + (1 - beta) p."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"beta": Float(0.5, 1.0)}

    @dataclass
    class Params:
        beta: float = 0.95  # weight of the observed label, 0 <= beta <= 1 (paper: 0.95); 1: cross-entropy

        def __post_init__(self):
            _check_beta("bootstrap_soft", self.beta)

    def prediction_target(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)  # not detached: the paper's entropy-minimisation objective


@STRATEGIES.register("bootstrap_hard")
class BootstrapHard(Bootstrap):
    """Hard bootstrapping (Reed et al. 2015): CE against beta q + (1 - beta) onehot(argmax p)."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"beta": Float(0.5, 1.0)}

    @dataclass
    class Params:
        beta: float = 0.8  # weight of the observed label, 0 <= beta <= 1 (paper: 0.8); 1: cross-entropy

        def __post_init__(self):
            _check_beta("bootstrap_hard", self.beta)

    def prediction_target(self, logits: torch.Tensor) -> torch.Tensor:
        return one_hot(logits.argmax(dim=1), logits.shape[1])
