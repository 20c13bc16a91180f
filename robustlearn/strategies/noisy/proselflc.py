"""ProSelfLC: progressive self label correction.

Wang, Hua, Kodirov, Clifton & Robertson, "ProSelfLC: Progressive Self Label Correction for Training Robust Deep
Neural Networks", CVPR 2021.

    l_i = -sum_k q~_ik log p_ik,        q~_i = (1 - eps_i) q_i + eps_i p_i
    eps_i = g(t) (1 - H(p_i) / H(u)),   g(t) = sigmoid(B (t - r)) = 1 / (1 + exp(-B (t - r)))

q_i is the one-hot observed label, p_i = softmax(z_i), H the entropy, u the uniform distribution over the K classes
(H(u) = log K), t in [0, 1] the training progress after the current step (`training_progress`: epochs done plus the
share of this epoch's steps, over the run's epochs; the official code's iteration counter, over the total
iterations, is the same quantity), B the sharpness of the ramp and r its midpoint (`transit_ratio`). The trust in
the prediction grows with training (global trust g) and with the prediction's confidence (local trust
1 - H(p)/H(u), in [0, 1]): early, or on an uncertain prediction, the target is the observed label; late, a confident
prediction overrides it. During the first `warmup_epochs` epochs (counted from 0) the loss is plain cross-entropy.

Gradient (`target_grad`). The official code (XinshaoAmosWang/ProSelfLC-AT, its ProSelfLC loss) computes eps under
`no_grad` but keeps the gradient through the p inside the target, so the loss is CE(q) with an added eps·H(p) and
its gradient in the logits is

    ∂l/∂z = p − q~ − eps · p ⊙ (log p + H(p))          (`target_grad: true`, the default: the official objective)

which adds an entropy-minimisation push on confident predictions. With `target_grad: false` the p inside the target
is detached too and the gradient is p − q~, the form the paper's analysis uses. Entropy from `log_softmax` in float32,
eps clamped to [0, 1] against rounding.

Defaults: B = 16 and r = 0.5, the paper's. warmup_epochs = 0: the official code has no cross-entropy phase; its
`warmup_epochs` (e.g. 16 in a CIFAR-100 run recorded in its repository) is a linear learning-rate warm-up applied
to every loss, and ProSelfLC is applied from the first iteration, where g(t) ~ sigmoid(-B r) (3e-4 with the
defaults) already makes the loss almost cross-entropy. A cross-entropy phase is offered for runs whose early
predictions should not be trusted at all; warmup_epochs must be below trainer.epochs (checked at load).
B is at most 500 (a sharper ramp is a step at r already, and the exponential stays finite).

When to use: symmetric or class-dependent noise at moderate to high rates, where the network fits the clean
majority before it memorises: the trust should rise after that point, and r sets where. Logs the mean of eps
(`proselflc/epsilon`) and of g(t) (`proselflc/global_trust`) per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.schedules import training_progress
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.noisy.targets import one_hot, soft_cross_entropy
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.strategies.ramps import sigmoid_ramp
from robustlearn.tuning.space import Float


@STRATEGIES.register("proselflc")
class ProSelfLC(Strategy):
    """ProSelfLC (Wang et al. 2021): CE against (1 - eps) q + eps p, eps = g(t) (1 - H(p)/H(u)) grows with training."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"B": Float(1.0, 64.0, log=True), "transit_ratio": Float(0.1, 0.9)}

    provides_loss = True

    @dataclass
    class Params:
        B: float = 16.0  # sharpness of the global trust g(t) = sigmoid(B (t - r)), 0 <= B <= 500 (paper: 16)
        transit_ratio: float = 0.5  # r, the progress where g(t) = 1/2, 0 <= r <= 1 (paper: 0.5)
        warmup_epochs: int = 0  # epochs of plain cross-entropy first (official code: none)
        target_grad: bool = True  # gradient through p in the target (official code); false: p detached (analysis)

        def __post_init__(self):
            if not isinstance(self.target_grad, bool):
                raise ConfigError(f"proselflc: target_grad = {self.target_grad!r} must be true (the official "
                                  "objective) or false (p in the target detached).", "target_grad")
            if not (is_number(self.B) and 0.0 <= self.B <= 500.0):
                raise ConfigError(f"proselflc: B = {self.B!r} is out of range; it must be a number >= 0 and <= 500.",
                                  "B")
            if not (is_number(self.transit_ratio) and 0.0 <= self.transit_ratio <= 1.0):
                raise ConfigError(f"proselflc: transit_ratio = {self.transit_ratio!r} is out of range; it must be a "
                                  "number >= 0 and <= 1 (a share of the training progress).", "transit_ratio")
            w = self.warmup_epochs
            if not (is_whole(w) and w >= 0):
                raise ConfigError(f"proselflc: warmup_epochs = {w!r} must be an integer >= 0.", "warmup_epochs")

    def global_trust(self, progress: float) -> float:
        """g(t) = sigmoid(B (t - r)) at training progress t."""
        return sigmoid_ramp(progress, self.params.B, self.params.transit_ratio)

    def epsilon(self, logits: torch.Tensor, progress: float) -> torch.Tensor:
        """eps_i = g(t) (1 - H(p_i) / log K) per sample, detached."""
        log_p = torch.log_softmax(logits.detach().float(), dim=1)
        entropy = -(log_p.exp() * log_p).sum(1)
        local = 1.0 - entropy / math.log(logits.shape[1])
        return (self.global_trust(progress) * local).clamp(0.0, 1.0)

    def loss_at(self, logits: torch.Tensor, y: torch.Tensor, progress: float, epoch: int) -> torch.Tensor:
        """The per-sample loss at training progress `progress` in epoch `epoch` (counted from 0)."""
        if epoch < self.params.warmup_epochs:
            return soft_cross_entropy(logits, one_hot(y, logits.shape[1]))
        return self.corrected_loss(logits, y, self.epsilon(logits, progress))

    def corrected_loss(self, logits: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against (1 - eps) q + eps p (eps detached; p detached unless `target_grad`)."""
        logits = logits.float()
        p = torch.softmax(logits if self.params.target_grad else logits.detach(), dim=1)
        eps = eps[:, None]
        return soft_cross_entropy(logits, (1.0 - eps) * one_hot(y, logits.shape[1]) + eps * p)

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        trainer = None if module is None else module.trainer
        epoch = 0 if trainer is None else trainer.current_epoch
        progress = training_progress(trainer)
        if epoch < self.params.warmup_epochs:
            return self.loss_at(logits, batch["y"], progress, epoch)
        eps = self.epsilon(logits, progress)
        if module is not None:
            self.log_step(module, "epsilon", eps.mean(), len(eps))
            self.log_step(module, "global_trust", self.global_trust(progress))
        return self.corrected_loss(logits, batch["y"], eps)

    @classmethod
    def check_config(cls, params: Params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        if params.warmup_epochs >= epochs:
            raise ConfigError(f"proselflc: warmup_epochs = {params.warmup_epochs} is not below trainer.epochs = "
                              f"{epochs}: every epoch would be plain cross-entropy. Lower warmup_epochs or train for "
                              "more epochs.", "warmup_epochs")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_against_trainer(trainer)
