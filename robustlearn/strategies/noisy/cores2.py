"""CORES²: the confidence regulariser and the sample sieve (phase 1).

Cheng, Zhu, Li, Gong, Sun & Liu, "Learning with Instance-Dependent Label Noise: A Sample Sieve Approach", ICLR 2021;
official code haochenglouis/cores (`loss.py`: `loss_cores`, `f_beta`; `phase1.py` for the prior and the schedule).

Cross-entropy with the confidence regulariser, against the prior p̃ of the (noisy) labels still kept:

    l_i = CE(z_i, y_i) - beta(e) * sum_k p̃_k * (-log(softmax_k(z_i) + 1e-8))

and the sieve keeps sample i in a step when its regularised loss against a uniform prior is not positive:

    v_i = 1  if e <= sieve_after   or   CE(z_i, y_i) - (1/K) sum_k (-log(softmax_k(z_i) + 1e-8)) <= 0

The step's loss is sum_i v_i l_i / sum_i v_i (0 where nothing is kept). The regulariser rewards confident
predictions; a sample whose label costs more than the average over all labels is one the network disagrees with, and
is sieved out. p̃ starts as the share of each noisy label in the training split and after every epoch becomes the
share among the samples that epoch kept (official: the label counts minus the counts sieved out). A practical
method: p̃ is read from the noisy labels, never from the clean ones.

Schedules (official, for 100 epochs): beta = 0 for 10 epochs, then numpy.linspace(0, 2, 30) over 30 epochs, then 2;
the sieve starts after epoch 30; and the learning rate is divided by 1 + beta(e). Here the epoch counts default to
the same shares of the run (10 %, 30 %, 30 %, rounded; exactly the official ones at 100 epochs), and the division of
the learning rate is a factor 1 / (1 + beta(e)) on the step's weights (`scale_lr`), which for the official SGD
without weight decay is the same update. Defaults: beta_max 2. Departure: phase 2 of the paper (consistency
training on the sieved set) is not part of this strategy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.tuning.space import Float

LOG_EPS = 1e-8  # the official code's -log(softmax + 1e-8)


def beta_schedule(epochs: int, warmup: int, ramp: int, beta_max: float) -> list[float]:
    """beta per epoch: 0 for `warmup` epochs, then numpy.linspace(0, beta_max, ramp), then beta_max."""
    out = [0.0] * warmup + [float(b) for b in np.linspace(0.0, beta_max, num=ramp)]
    return (out + [float(beta_max)] * max(0, epochs - len(out)))[:epochs]


def all_label_losses(logits: torch.Tensor, eps: float = LOG_EPS) -> torch.Tensor:
    """-log(softmax(z) + eps) for every class, (B, K); eps 1e-8 as the official CORES² code."""
    return -torch.log(torch.softmax(logits.float(), dim=1) + eps)


@STRATEGIES.register("cores2")
class CORES2(Strategy):
    """CORES² (Cheng et al. 2021): CE with a confidence regulariser against the kept labels' prior, and a sieve."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"beta_max": Float(0.5, 4.0)}

    provides_loss = True
    needs = ("datamodule",)
    state_attrs = ("prior", "kept")

    @dataclass
    class Params:
        beta_max: float = 2.0  # the regulariser's weight once ramped (official 2)
        warmup_epochs: int | None = None  # epochs at beta = 0 (null: 10 % of the run; official 10 of 100)
        ramp_epochs: int | None = None  # epochs of the linear ramp (null: 30 %; official 30)
        sieve_after: int | None = None  # the sieve keeps everything up to this epoch (null: 30 %; official 30)
        scale_lr: bool = True  # divide the step by 1 + beta(e), the official learning-rate plan

        def __post_init__(self):
            if not (is_number(self.beta_max) and self.beta_max >= 0):
                raise ConfigError(f"cores2: beta_max = {self.beta_max!r} must be a number >= 0.", "beta_max")
            for key in ("warmup_epochs", "ramp_epochs", "sieve_after"):
                value = getattr(self, key)
                if value is not None and not (is_whole(value) and value >= 0):
                    raise ConfigError(f"cores2: {key} = {value!r} must be an integer >= 0 or null.", key)
            if not isinstance(self.scale_lr, bool):
                raise ConfigError(f"cores2: scale_lr = {self.scale_lr!r} must be true or false.", "scale_lr")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.prior: torch.Tensor | None = None  # p̃ (K,), float32 on the training device
        self.kept = PerSampleBuffer(dtype=torch.float32, fill=1.0)  # v of each sample when last seen
        self.betas: list[float] = []
        self.sieve_from = 0

    def plan(self, epochs: int) -> tuple[list[float], int]:
        """(beta per epoch, the last epoch that keeps everything) for a run of `epochs` epochs."""
        p = self.params
        share = lambda value, s: int(round(s * epochs)) if value is None else int(value)  # noqa: E731
        betas = beta_schedule(epochs, share(p.warmup_epochs, 0.1), max(1, share(p.ramp_epochs, 0.3)), p.beta_max)
        return betas, share(p.sieve_after, 0.3)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.betas, self.sieve_from = self.plan(int(trainer.max_epochs or 1))
        dm = self.datamodule(trainer)
        y = dm.train_tensors()["y"]
        counts = torch.bincount(y.detach().to("cpu", torch.long), minlength=dm.num_classes).float()
        self.prior = (counts / counts.sum()).to(trainer.strategy.root_device)
        self.kept.ensure(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.kept.ensure(trainer)  # on the device again after a checkpoint restored it

    def beta(self, epoch: int) -> float:
        return self.betas[min(epoch, len(self.betas) - 1)]

    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), batch["y"], reduction="none")
        prior = self.prior.to(logits.device)
        return ce - self.beta(module.trainer.current_epoch) * (all_label_losses(logits) * prior).sum(1)

    def sieve(self, logits: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """v (B,) float: 1 where the sample is kept in this step."""
        if epoch <= self.sieve_from:
            return torch.ones(len(y), device=logits.device)
        ce = F.cross_entropy(logits.float(), y, reduction="none")
        return (ce - all_label_losses(logits).mean(1) <= 0).float()

    def weights(self, per_sample, logits, batch, weights, module):
        epoch = module.trainer.current_epoch
        v = self.sieve(logits.detach(), batch["y"], epoch)
        self.kept.update(batch["index"], v)
        scale = 1.0 / (1.0 + self.beta(epoch)) if self.params.scale_lr else 1.0
        return weights * v / v.mean().clamp_min(torch.finfo(v.dtype).tiny) * scale

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.kept.sync(trainer)  # every rank holds the same v, so the same prior
        dm = self.datamodule(trainer)
        y = dm.train_tensors()["y"].to(self.kept.values.device)
        k = len(self.prior)
        kept = torch.zeros(k, device=y.device).index_add_(0, y, self.kept.values)
        self.prior = (kept / kept.sum().clamp_min(1.0)).to(self.prior.device)
        self.log_metric(pl_module, "beta", self.beta(trainer.current_epoch))
        self.log_metric(pl_module, "kept_share", self.kept.values.mean())

    def kept_mask(self) -> torch.Tensor | None:
        return None if self.kept.values is None else self.kept.values > 0.5
