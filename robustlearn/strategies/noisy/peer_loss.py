"""Peer loss.

Liu & Guo, "Peer Loss Functions: Learning from Noisy Labels without Knowing Noise Rates", ICML 2020; official code
gohsyi/PeerLoss (`models/nn.py`, `PeerBinaryClassifier.train`).

Each step subtracts the loss of "peer" pairs, an input and a label drawn independently of each other from the
training data:

    loss = mean_i l(f(x_i), y_i) - alpha * mean_j l(f(x_{a_j}), y_{b_j}),     a_j, b_j independent uniform draws

The peer term is the loss a classifier gets on labels carrying no information about the inputs; subtracting it
punishes fitting the label marginal, which is what noisy labels push a network towards. The paper shows that with
alpha = 1 minimising peer loss on noisy labels is equivalent to minimising it on clean ones for a class of noise,
with no knowledge of the noise rates. Here l is the run's per-sample loss (cross-entropy, or a loss strategy's), so
peer loss composes with a loss strategy; the peer term is a penalty of the step, logged as `peer_loss/penalty`.

Draws: `datamodule.draw(n, source="split")` twice per step (inputs from one draw, labels from the other), from the
whole training split as the paper means, not from a subset another strategy chose; n = the batch size (the official
`batchsize_` defaults to the batch size too). The peer inputs run through the module's network in training mode
(one more forward of n samples per step).

Defaults: alpha = 1 (the official code's default and the paper's analysis), no warm-up (`warmup_epochs` epochs of
the plain loss first, an option). The official code samples minibatches without replacement, here with
replacement: for the batch sizes used the difference is a few repeated samples per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.strategies.step import run_loss
from robustlearn.tuning.space import Float


@STRATEGIES.register("peer_loss")
class PeerLoss(Strategy):
    """Peer loss (Liu & Guo 2020): the loss minus alpha times the loss of independently drawn input/label pairs."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"alpha": Float(0.05, 1.0)}

    needs = ("datamodule",)

    @dataclass
    class Params:
        alpha: float = 1.0  # weight of the peer term, >= 0 (official default 1)
        warmup_epochs: int = 0  # epochs of the plain loss before the peer term (0: from the first step)

        def __post_init__(self):
            if not (is_number(self.alpha) and self.alpha >= 0):
                raise ConfigError(f"peer_loss: alpha = {self.alpha!r} must be a number >= 0.", "alpha")
            if not (is_whole(self.warmup_epochs) and self.warmup_epochs >= 0):
                raise ConfigError(f"peer_loss: warmup_epochs = {self.warmup_epochs!r} must be an integer >= 0.",
                                  "warmup_epochs")

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg.get("trainer", {}).get("epochs", 0)
        if epochs and params.warmup_epochs >= epochs:
            raise ConfigError(f"warmup_epochs = {params.warmup_epochs} is not below trainer.epochs = {epochs}: the "
                              "peer term would never be used. Lower warmup_epochs or train longer.", "warmup_epochs")

    def peer_batch(self, dm, n: int) -> dict:
        """n peer pairs: inputs from one uniform draw of the training split, labels from another."""
        inputs, labels = dm.draw(n, source="split"), dm.draw(n, source="split")
        return {"x": inputs["x"], "y": labels["y"], "index": labels["index"]}

    def penalty(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor | None:
        trainer = module.trainer
        if self.params.alpha == 0 or trainer.current_epoch < self.params.warmup_epochs:
            return None
        peer = self.peer_batch(self.datamodule(trainer), len(batch["y"]))
        peer_logits = module(peer["x"])
        return -self.params.alpha * run_loss(module, peer_logits, peer, module).mean()
