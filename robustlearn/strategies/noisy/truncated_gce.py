"""Truncated L_q loss (truncated GCE).

Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels",
NeurIPS 2018 (Section 3.2).

    L_q(p) = (1 - p^q) / q,      ℓ_i = w_i · (L_q(p_y) - L_q(k)),      w_i ∈ {0, 1}

as in the reference PyTorch implementation (AlanChou/Truncated-Loss, the code the paper's results are usually
reproduced with): the truncated loss L_trunc = L_q(p) for p > k and L_q(k) otherwise is optimised by alternating
between the network and the weights. The weights live in a `PerSampleBuffer` (checkpointed), start at 1 (so before
the first refresh the gradient is plain L_q's; the loss value is shifted by the constant L_q(k)), and are refreshed
from `start_epoch` on, every `refresh_every` epochs: at the end of epoch start_epoch - 1, start_epoch - 1 +
refresh_every, ... (epochs counted from 0) one eval-mode pass over the training split sets w_i = 1 where
p_y(x_i) > k (the observed label) and 0 elsewhere. `truncated_gce/kept` is the share of weights at 1 that
each epoch trained with. The reference code scores with the best checkpoint so far; this
scores with the current network (no other is kept).

Defaults: q = 0.7, k = 0.5 (paper and reference code). The paper prunes from epoch 40 of 120 and every 10 epochs;
the defaults here, start_epoch = 5 and refresh_every = 5, scale that to this repository's 8–20 epoch schedules (a
first refresh after about a third of a 15-epoch run); set 40 and 10 for the paper's 120-epoch CIFAR schedule.

When to use it: symmetric or moderate class-dependent noise, where dropping samples whose label the network finds
implausible (p_y <= k) removes mostly wrong labels. Exposes its kept set (`kept_mask`), which `diagnostics` scores
against the true flip mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.full_pass import full_pass
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.tuning.space import Float


def lq(log_p: torch.Tensor, q: float) -> torch.Tensor:
    """(1 - p^q) / q from log p, stable for small q."""
    return -torch.expm1(q * log_p) / q


def _positive_int(value, key: str, name: str) -> None:
    if not (is_whole(value) and value >= 1):
        raise ConfigError(f"truncated_gce: {name} = {value!r} must be an integer >= 1.", key)


@STRATEGIES.register("truncated_gce")
class TruncatedGCE(Strategy):
    """Truncated L_q (Zhang & Sabuncu 2018): w_i (L_q(p_y) - L_q(k)), w_i = [p_y > k] refreshed every few epochs."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"q": Float(0.1, 1.0), "k": Float(0.1, 0.9)}

    needs = ("datamodule",)

    provides_loss = True
    state_attrs = ("weight",)

    @dataclass
    class Params:
        q: float = 0.7  # 0 < q <= 1; -> 0: cross-entropy, 1: MAE
        k: float = 0.5  # truncation threshold on p_y, 0 < k < 1
        start_epoch: int = 5  # first epoch trained with refreshed weights (paper: 40 of 120)
        refresh_every: int = 5  # epochs between refreshes (paper: 10)

        def __post_init__(self):
            if not (is_number(self.q) and 0.0 < self.q <= 1.0):
                raise ConfigError(f"truncated_gce: q = {self.q!r} is out of range; it must be > 0 and <= 1.", "q")
            if not (is_number(self.k) and 0.0 < self.k < 1.0):
                raise ConfigError(f"truncated_gce: k = {self.k!r} is out of range; it must be > 0 and < 1.", "k")
            _positive_int(self.start_epoch, "start_epoch", "start_epoch")
            _positive_int(self.refresh_every, "refresh_every", "refresh_every")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.weight = PerSampleBuffer(fill=1.0)

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        q, k = self.params.q, self.params.k
        log_p_y = torch.log_softmax(logits.float(), dim=1).gather(1, batch["y"][:, None]).squeeze(1)
        shifted = lq(log_p_y, q) - (1.0 - k**q) / q
        if self.weight.values is None:  # not allocated yet: every weight is still 1
            return shifted
        return self.weight[batch["index"]] * shifted

    def refresh_due(self, epoch: int) -> bool:
        """True where the weights are refreshed at the end of `epoch` (counted from 0)."""
        done = epoch + 1
        return done >= self.params.start_epoch and (done - self.params.start_epoch) % self.params.refresh_every == 0

    def refresh(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """w = [p_y > k] for the whole split from its logits (N, K) and observed labels (N,)."""
        p_y = torch.softmax(logits.float(), dim=1).gather(1, y[:, None].to(logits.device)).squeeze(1)
        self.weight.values = (p_y > self.params.k).to(self.weight.dtype)

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        if params.start_epoch >= epochs:
            raise ConfigError(
                f"start_epoch = {params.start_epoch} is not below trainer.epochs = {epochs}: no epoch would train "
                "truncated and the run would be plain L_q. Lower start_epoch or train longer.", "start_epoch")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_against_trainer(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weight.ensure(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_metric(pl_module, "kept", float(self.weight.values.mean()))  # the share this epoch trained on
        epoch = trainer.current_epoch
        if not self.refresh_due(epoch) or epoch + 1 >= trainer.max_epochs:  # no refresh after the last epoch
            return
        dm = self.datamodule(trainer)
        self.refresh(full_pass(pl_module, dm), dm.train_tensors()["y"])

    def kept_mask(self) -> torch.Tensor | None:
        return None if self.weight.values is None else self.weight.values > 0.5

