"""ELR+: early-learning regularisation with two networks, weight averaging and mixup.

Liu, Niles-Weed, Razavian & Fernandez-Granda, "Early-Learning Regularization Prevents Memorization of Noisy
Labels", NeurIPS 2020; official code shengliu66/ELR (`ELR_plus/`: `model/loss.py` `elr_plus_loss`,
`trainer/trainer.py` `_train_epoch`, `_mixup_data`, `update_ema_variables`; `config_cifar10*.json`).

Two networks, the module's (1) and a peer (2, an `OwnedNetwork`), each with a weight average (an `EMANetwork`,
a = 0.997 times a sigmoid ramp over `ema_step` steps). Network n's targets t^n are a running mean of the *other*
network's average's predictions on the batch (before mixing):

    t^n_i <- beta t^n_i + (1 - beta) softmax(ema_other(x_i))

and each network trains on its own mixup of the batch (lam ~ Beta(alpha, alpha), lam <- max(lam, 1 - lam), a random
permutation pi), with the mixed soft labels and the mixed targets q_i = lam t_i + (1 - lam) t_pi(i):

    loss = lam CE(z, y) + (1 - lam) CE(z, y_pi) + lambda * mean_i log(1 - <q_i, clamp(p_i, 1e-4, 1 - 1e-4)>)

(`coef_step` ramps lambda in with the sigmoid ramp; official 0: from the first step.) Evaluation scores the mean of
the two networks' logits (official `_test_epoch`: 0.5 (model1 + model2)).

In the protocol: `on_batch` updates both networks' targets and mixes the batch for the module's network (mixed
targets `y_b`, `lam`, `index_b`, so the run's cross-entropy is the mixed one); `penalty` adds its ELR term and, in the
same step, the peer takes its own step on its own mixup; the averages follow their networks after every step.
lam and pi come from generators seeded by (run seed, step), so a resumed run mixes what an uninterrupted one would.

Defaults: the official CIFAR-10 symmetric config (beta 0.7, lambda 3, mixup alpha 1, ema_alpha 0.997,
coef_step 0); the method YAML applies its asymmetric one (beta 0.9, lambda 1). ema_step: the official 40 000 steps
of a 200-epoch, 390-step plan is 51 % of training; null takes that share of the run's steps. Departures: the official
code trains network 1 for an epoch and then network 2 (two loaders), with the other's average copied at the epoch's
start; here both step on every batch, each with the other's current average.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.ema import EMANetwork
from robustlearn.strategies.noisy.mixup import mix, mix_draw
from robustlearn.strategies.owned import OwnedNetwork
from robustlearn.strategies.params import is_number
from robustlearn.strategies.ramps import sigmoid_rampup
from robustlearn.tuning.space import Float

CLAMP = 1e-4
EMA_SHARE = 40_000 / (200 * 390)  # the official ema_step as a share of the official plan's steps


def elr_term(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """mean_i log(1 - <q_i, clamp(softmax(z_i), 1e-4, 1 - 1e-4)>)."""
    p = torch.softmax(logits.float(), dim=1).clamp(CLAMP, 1.0 - CLAMP)
    return torch.log(1.0 - (q * p).sum(1)).mean()


def mixed_ce(logits: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """lam CE(z, y) + (1 - lam) CE(z, y[perm]), batch mean (the CE of the mixed soft labels)."""
    ce = lambda target: F.cross_entropy(logits.float(), target)  # noqa: E731
    return lam * ce(y) + (1.0 - lam) * ce(y[perm])


@STRATEGIES.register("elr_plus")
class ELRPlus(Strategy):
    """ELR+ (Liu et al. 2020): two networks with weight averages, mixup, and ELR against the other's average."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper's values lie inside
    search_space = {"lam": Float(0.1, 10.0, log=True), "beta": Float(0.5, 0.99)}

    needs = ("build_network", "num_classes")
    state_attrs = ("peer", "ema_main", "ema_peer", "t_main", "t_peer", "peer_steps")

    @dataclass
    class Params:
        beta: float = 0.7  # momentum of the targets (official CIFAR-10 symmetric 0.7; asymmetric 0.9)
        lam: float = 3.0  # weight of the ELR term (official 3; asymmetric 1)
        mixup_alpha: float = 1.0  # lam ~ Beta(alpha, alpha), then max(lam, 1 - lam) (official 1)
        ema_alpha: float = 0.997  # the averages' rate once ramped (official 0.997)
        ema_step: int | None = None  # steps of the averages' ramp (null: 51 % of the run's steps; official 40 000)
        coef_step: int = 0  # steps of the ELR weight's ramp (official 0: none)

        def __post_init__(self):
            checks = {"beta": 0 <= self.beta < 1, "lam": self.lam >= 0, "mixup_alpha": self.mixup_alpha >= 0,
                      "ema_alpha": 0 <= self.ema_alpha < 1, "coef_step": self.coef_step >= 0}
            for key, ok in checks.items():
                value = getattr(self, key)
                if not (is_number(value) and ok):
                    raise ConfigError(f"elr_plus: {key} = {value!r} is out of range (see the method's docs).", key)
            if self.ema_step is not None and not (is_number(self.ema_step) and self.ema_step >= 0):
                raise ConfigError(f"elr_plus: ema_step = {self.ema_step!r} must be a number >= 0 or null.",
                                  "ema_step")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.t_main, self.t_peer = PerSampleBuffer(), PerSampleBuffer()
        self.peer: OwnedNetwork | None = None
        self.ema_main: EMANetwork | None = None
        self.ema_peer: EMANetwork | None = None
        self.peer_steps = 0
        self._peer_mix: tuple[dict, float, torch.Tensor] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.peer = OwnedNetwork(pl_module, salt=21 + self.position)
        net = getattr(pl_module, "net", pl_module)
        self.ema_main = EMANetwork(pl_module, net, self.params.ema_alpha)
        self.ema_peer = EMANetwork(pl_module, self.peer.net, self.params.ema_alpha)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        steps = self.params.ema_step
        if steps is None:  # the official share of the run's optimiser steps (the same after a resume)
            steps = EMA_SHARE * trainer.estimated_stepping_batches
        self.ema_main.ramp = self.ema_peer.ramp = float(steps)

    def _draw(self, n: int, step: int, side: int) -> tuple[float, torch.Tensor]:
        return mix_draw(n, step, 8100 + 2 * self.position + side, float(self.params.mixup_alpha), keep_larger=True)

    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        if "lam" in batch:
            raise ConfigError("elr_plus: the batch is mixed already (another mixing strategy); ELR+ mixes its own.",
                              "strategies")
        trainer = module.trainer
        k = module.num_classes
        index, x = batch["index"], batch["x"]
        beta = self.params.beta
        for targets, ema_other in ((self.t_main, self.ema_peer), (self.t_peer, self.ema_main)):
            targets.ensure(trainer, shape=(k,))
            pred = torch.softmax(ema_other(x)[:, :k].float(), dim=1)
            targets.update(index, beta * targets[index] + (1.0 - beta) * pred / pred.sum(1, keepdim=True))
        step = trainer.global_step
        lam, perm = self._draw(len(index), step, side=0)
        self._peer_mix = (batch, *self._draw(len(index), step, side=1))
        return mix(batch, lam, perm)

    def _coef(self, step: int) -> float:
        return sigmoid_rampup(step, self.params.coef_step) * self.params.lam

    def penalty(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor | None:
        step = module.trainer.global_step
        lam = batch["lam"]
        q = lam * self.t_main[batch["index"]] + (1.0 - lam) * self.t_main[batch["index_b"]]
        term = self._coef(step) * elr_term(logits[:, : module.num_classes], q)
        self._step_peer(module, step)
        return term

    def _step_peer(self, module: pl.LightningModule, step: int) -> None:
        raw, lam, perm = self._peer_mix
        perm = perm.to(raw["x"].device)
        x = lam * raw["x"] + (1.0 - lam) * raw["x"][perm]
        z = self.peer(x)[:, : module.num_classes]
        index = raw["index"]
        q = lam * self.t_peer[index] + (1.0 - lam) * self.t_peer[index[perm]]
        loss = mixed_ce(z, raw["y"], lam, perm) + self._coef(step) * elr_term(z, q)
        self.peer.step(loss)
        self.ema_peer.update(self.peer.net, self.peer_steps)
        self.peer_steps += 1
        self._peer_mix = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        self.ema_main.update(getattr(pl_module, "net", pl_module), trainer.global_step - 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for targets in (self.t_main, self.t_peer):
            if targets.values is not None:
                targets.sync(trainer)

    def eval_logits(self, x: torch.Tensor, logits: torch.Tensor, module: pl.LightningModule) -> torch.Tensor:
        return 0.5 * (logits + self.peer(x))
