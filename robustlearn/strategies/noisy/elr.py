"""Early-learning regularisation (ELR).

Liu, Niles-Weed, Razavian & Fernandez-Granda, "Early-Learning Regularization Prevents Memorization of Noisy
Labels", NeurIPS 2020.

A penalty added to whatever loss the run trains with (cross-entropy, or the loss of another strategy):

    penalty = lam * mean_i log(1 - <t_i, p_i>)
    t_i <- beta t_i + (1 - beta) p_i / sum_k p_ik        (before the penalty of the step, p detached)

p_i = softmax(z_i) clamped to [1e-4, 1 - 1e-4] (as the official code does; the clamp keeps <t, p> below 1 and
the log finite), the mean is over the batch. t_i is a per-sample exponential moving average of the network's past
predictions, starting at 0 and updated once each time sample i is trained on, in a `PerSampleBuffer` (checkpointed;
merged across DDP ranks at every epoch end). The gradient flows through p only: minimising log(1 - <t, p>) pulls p
towards the running target, which holds what the network predicted during early learning, when the clean labels
dominate. That counteracts the gradient of the noisy label on a sample the network has not yet memorised. The
penalty is negative (logged as `elr/penalty`, beside `train/loss_main`).

Defaults: lam = 3 and beta = 0.7, the official code's CIFAR-10 configuration (its CIFAR-100 one is lam = 7,
beta = 0.9). Ranges: lam > 0 (0 disables it); 0 <= beta < 1 (at beta = 1 the targets stay at 0 and so does the
penalty). The official code adds the penalty to the batch-mean cross-entropy; here it is added to the step's
weighted mean loss, and is itself an unweighted batch mean.

When to use: symmetric and class-dependent noise at moderate to high rates, on any loss; it holds back
memorisation (`train/memorized`) without selecting or relabelling samples. The paper's stronger variant, ELR+
(two networks, weight averaging, mixup), is `elr_plus` (strategies/noisy/elr_plus.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.params import is_number
from robustlearn.tuning.space import Float

CLAMP = 1e-4  # p is clamped to [CLAMP, 1 - CLAMP], as in the official code


@STRATEGIES.register("elr")
class ELR(Strategy):
    """Early-learning regularisation (Liu et al. 2020): lam mean log(1 - <t, p>), t a running mean of predictions."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"lam": Float(0.1, 10.0, log=True), "beta": Float(0.5, 0.99)}

    state_attrs = ("targets",)

    @dataclass
    class Params:
        lam: float = 3.0  # weight of the penalty, > 0 (official CIFAR-10: 3)
        beta: float = 0.7  # momentum of the per-sample targets, 0 <= beta < 1 (official CIFAR-10: 0.7)

        def __post_init__(self):
            if not (is_number(self.lam) and self.lam > 0):
                raise ConfigError(f"elr: lam = {self.lam!r} is out of range; it must be a number > 0.", "lam")
            if not (is_number(self.beta) and 0.0 <= self.beta < 1.0):
                raise ConfigError(f"elr: beta = {self.beta!r} is out of range; it must be a number >= 0 and < 1 "
                                  "(at 1 the targets never move from 0).", "beta")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.targets = PerSampleBuffer()

    def updated_targets(self, previous: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """beta t + (1 - beta) p / sum_k p_k, from the clamped probabilities `p` (detached here)."""
        p = p.detach()
        return self.params.beta * previous + (1.0 - self.params.beta) * p / p.sum(1, keepdim=True)

    def penalty(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        p = torch.softmax(logits.float(), dim=1).clamp(CLAMP, 1.0 - CLAMP)
        targets = self.targets.ensure(module.trainer, shape=p.shape[1:])
        index = batch["index"]
        new = self.updated_targets(targets[index], p)
        targets.update(index, new)
        return self.params.lam * torch.log(1.0 - (new * p).sum(1)).mean()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.targets.values is not None:
            self.targets.sync(trainer)
