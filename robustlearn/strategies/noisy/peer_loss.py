"""Peer loss.

Liu & Guo, "Peer Loss Functions: Learning from Noisy Labels without Knowing Noise Rates", ICML 2020; official code
gohsyi/PeerLoss (binary, `PeerBinaryClassifier.train`) and, for the paper's multi-class image experiments,
weijiaheng/Multi-class-Peer-Loss-functions (`Fashion_MNIST/runner.py`: `CrossEntropyLossStable`, `f_alpha`, `train`).

Each step subtracts the loss of "peer" pairs, an input and a label drawn independently of each other from the
training data:

    loss = mean_i l(f(x_i), y_i) - alpha_e * mean_j l_eps(f(x_{a_j}), y_{b_j}),     a_j, b_j independent uniform draws

The peer term is the loss a classifier gets on labels carrying no information about the inputs; subtracting it
punishes fitting the label marginal, which is what noisy labels push a network towards. The paper shows that with
alpha = 1 minimising peer loss on noisy labels is equivalent to minimising it on clean ones for a class of noise,
with no knowledge of the noise rates.

The peer term's loss is the official bounded cross-entropy l_eps(z, y) = -log(softmax(z)_y + eps), eps = 1e-5
(`CrossEntropyLossStable`): at most -log(eps) = 11.5, so the subtracted term cannot grow without bound by making
confident wrong predictions on the random pairs (with the unbounded CE it can, and training collapses). Where a loss
strategy runs (GCE, SCE, ...) the peer term is that strategy's per-sample loss instead, so peer loss composes with it;
the first term is always the run's loss.

The weight alpha_e follows the official multi-class plan (`f_alpha`, Fashion-MNIST and MNIST): 0 for the first
`warmup_epochs` epochs (plain loss), then rising linearly per epoch to `alpha` at the last epoch,
alpha_e = alpha * (e - W) / (E - W - 1) (numpy's linspace(0, alpha, E - W)). The official Fashion-MNIST run has
W = 120 of E = 300 epochs and alpha = 1; `warmup_epochs: null` takes the same share, 40 % of the run. The official
CIFAR plans (piecewise, alpha up to 5-20 over 340 epochs) are not transcribed: set `warmup_epochs` and `alpha`.

Draws: `datamodule.draw(n, source="split")` twice per step (inputs from one draw, labels from the other), from the
whole training split as the paper means, not from a subset another strategy chose; n = the batch size (as the
official code's peer loader). The peer inputs run through the module's network in training mode (one more forward
of n samples per step).

Departures: the official code draws without replacement within a step, here with replacement (a few repeated samples
per step at the batch sizes used); its first term is also the bounded CE (here the run's loss: identical unless a
probability falls below 1e-5); it trains with Adam at lr 1e-4 / (1 + alpha_e), here the run's optimiser and schedule
apply unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.noisy.cores2 import all_label_losses
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.strategies.step import StepPlan, run_loss
from robustlearn.tuning.space import Float

PEER_EPS = 1e-5  # the official CrossEntropyLossStable's eps
WARMUP_SHARE = 0.4  # official Fashion-MNIST: alpha 0 for 120 of 300 epochs


def warmup_of(warmup_epochs: int | None, epochs: int) -> int:
    """W: `warmup_epochs`, or null -> 40 % of the run (rounded)."""
    return int(round(WARMUP_SHARE * epochs)) if warmup_epochs is None else int(warmup_epochs)


def alpha_plan(alpha: float, warmup: int, epochs: int, epoch: int) -> float:
    """alpha_e: 0 before `warmup`, then linspace(0, alpha, epochs - warmup) over the remaining epochs."""
    steps = epochs - warmup
    if epoch < warmup or steps <= 1:
        return 0.0
    return alpha * min(epoch - warmup, steps - 1) / (steps - 1)


def stable_ce(logits: torch.Tensor, y: torch.Tensor, eps: float = PEER_EPS) -> torch.Tensor:
    """-log(softmax(z)_y + eps) per sample (official `CrossEntropyLossStable`, reduction none)."""
    return all_label_losses(logits, eps).gather(1, y.view(-1, 1)).squeeze(1)


@STRATEGIES.register("peer_loss")
class PeerLoss(Strategy):
    """Peer loss (Liu & Guo 2020): the loss minus alpha_e times the bounded loss of independently drawn pairs."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"alpha": Float(0.05, 1.0)}

    needs = ("datamodule",)

    @dataclass
    class Params:
        alpha: float = 1.0  # the peer term's final weight, >= 0 (official 1)
        warmup_epochs: int | None = None  # epochs with alpha 0 (null: 40 % of the run, official 120 of 300)

        def __post_init__(self):
            if not (is_number(self.alpha) and self.alpha >= 0):
                raise ConfigError(f"peer_loss: alpha = {self.alpha!r} must be a number >= 0.", "alpha")
            if self.warmup_epochs is not None and not (is_whole(self.warmup_epochs) and self.warmup_epochs >= 0):
                raise ConfigError(f"peer_loss: warmup_epochs = {self.warmup_epochs!r} must be an integer >= 0 or "
                                  "null.", "warmup_epochs")

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg.get("trainer", {}).get("epochs", 0)
        warmup = warmup_of(params.warmup_epochs, epochs)
        if epochs and params.alpha > 0 and epochs - warmup < 2:
            raise ConfigError(f"warmup_epochs = {warmup} leaves fewer than 2 of "
                              f"trainer.epochs = {epochs} for the peer term, whose weight rises from 0 over them: "
                              "it would never be used. Lower warmup_epochs or train longer.", "warmup_epochs")

    def alpha_at(self, trainer: pl.Trainer) -> float:
        epochs = int(trainer.max_epochs or 1)
        warmup = warmup_of(self.params.warmup_epochs, epochs)
        return alpha_plan(self.params.alpha, warmup, epochs, trainer.current_epoch)

    def peer_batch(self, dm, n: int) -> dict:
        """n peer pairs: inputs from one uniform draw of the training split, labels from another."""
        inputs, labels = dm.draw(n, source="split"), dm.draw(n, source="split")
        return {"x": inputs["x"], "y": labels["y"], "index": labels["index"]}

    def peer_losses(self, module: pl.LightningModule, logits: torch.Tensor, peer: dict) -> torch.Tensor:
        """The peer pairs' per-sample loss: a loss strategy's where one runs, else the bounded CE."""
        if StepPlan.of(module).provider is None:
            return stable_ce(logits, peer["y"])
        return run_loss(module, logits, peer, module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_metric(pl_module, "alpha", self.alpha_at(trainer))

    def penalty(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor | None:
        alpha = self.alpha_at(module.trainer)
        if alpha == 0:
            return None
        peer = self.peer_batch(self.datamodule(module.trainer), len(batch["y"]))
        return -alpha * self.peer_losses(module, module(peer["x"]), peer).mean()
