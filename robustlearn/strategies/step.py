"""One training step with the strategies, usable from any LightningModule.

`RobustClassifier.training_step` is `return strategy_step(self, batch)`; a LightningModule of your own (your
network, your optimiser, a plain Trainer and DataLoader) gets every strategy passed to its Trainer as a callback
with the same line:

    class MyModule(pl.LightningModule):
        def training_step(self, batch, batch_idx):      # batch: (x, y, index) or a dict with those keys
            return strategy_step(self, batch)           # calls self(x); or strategy_step(self, batch, self.net)

The returned dict is Lightning's training-step output (`loss`) plus what the strategies read in
`on_train_batch_end`: the detached `per_sample` losses, `logits` and final `weights`, and the `batch` the step trained
on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.composition import check_composition
from robustlearn.epoch_means import log_step_mean
from robustlearn.strategies.base import Strategy


class StepPlan:
    """The strategies of a trainer in the order each hook asks them, checked for conflicting roles."""

    def __init__(self, strategies: Sequence[Strategy]):
        check_composition((s.name, s) for s in strategies)
        self.strategies = sorted(strategies, key=lambda s: s.position)
        # Batch replacement first, so every other strategy sees the batch that is trained on.
        self.on_batch = sorted(self.strategies, key=lambda s: not s.replaces_batch)
        self.provider = next((s for s in self.strategies if s.provides_loss), None)
        # Only strategies that override eval_logits are asked (no call per validation batch for the others).
        self.evaluators = [s for s in self.strategies if type(s).eval_logits is not Strategy.eval_logits]

    @classmethod
    def of(cls, module: pl.LightningModule) -> StepPlan:
        """The plan of `module`'s trainer, built once per trainer."""
        trainer = module._trainer
        cached = module.__dict__.get("_strategy_plan")
        if cached is not None and cached[0] is trainer:
            return cached[1]
        callbacks = trainer.callbacks if trainer is not None else []
        plan = cls([cb for cb in callbacks if isinstance(cb, Strategy)])
        module.__dict__["_strategy_plan"] = (trainer, plan)
        return plan


def as_batch(batch: Any) -> dict:
    """The batch contract as a dict: a dict passes; a sequence is read as (x, y, index[, y_clean])."""
    if isinstance(batch, dict):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) in (3, 4):
        return dict(zip(("x", "y", "index", "y_clean"), batch))
    raise TypeError("strategy_step: a batch is a dict with x, y and index, or a tuple (x, y, index[, y_clean]); "
                    f"got {type(batch).__name__}")


@cache
def _takes_net(cls: type) -> bool:
    return "net" in inspect.signature(cls.loss).parameters


_FROM_MODULE = object()  # run_loss's default: the provider of the module's trainer


def run_loss(module: pl.LightningModule, logits: torch.Tensor, batch: dict,
             net: Callable[[torch.Tensor], torch.Tensor] | None = None,
             provider: Any = _FROM_MODULE) -> torch.Tensor:
    """The run's per-sample training loss of `logits`: the loss provider's (GCE, SCE, ...) where one runs, else
    cross-entropy; one definition for the module's step and for every peer or scoring network.

    `net` is the network (a callable on inputs) that produced `logits`: the module's for the step, the peer's in
    Co-teaching. A provider whose `loss` takes a `net` argument gets it, so a loss that needs another forward (a second
    augmented view, as GJS) runs the network whose loss it is, never the module's for a peer's logits.

    Mixed targets: a batch with `y_b` and `lam` (mixup's x = λ x_a + (1 − λ) x_b, λ a scalar or one per sample) has the
    loss λ ℓ(z, y) + (1 − λ) ℓ(z, y_b), every provider's ℓ (per-sample state read at `index` for y and at `index_b`,
    where the batch has it, for y_b), so a mixing strategy composes with any loss."""
    provider = StepPlan.of(module).provider if provider is _FROM_MODULE else provider
    if "y_b" in batch and "lam" in batch:
        lam = batch["lam"]
        mixing = ("y_b", "lam", "index_b")
        own = {k: v for k, v in batch.items() if k not in mixing}
        partner = {**own, "y": batch["y_b"], "index": batch.get("index_b", batch.get("index"))}
        first = run_loss(module, logits, own, net, provider)
        return lam * first + (1.0 - lam) * run_loss(module, logits, partner, net, provider)
    if provider is None:
        return F.cross_entropy(logits.float(), batch["y"], reduction="none")
    if net is not None and _takes_net(type(provider)):
        return provider.loss(logits, batch, module, net=net)
    return provider.loss(logits, batch, module)


def strategy_step(
    module: pl.LightningModule,
    batch: Any,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    plan: StepPlan | None = None,
) -> dict[str, Any]:
    """Run the strategies of `module`'s trainer on one training batch and return the step's output dict.

    Logs `train/loss_main` (the weighted mean of the per-sample losses) and `<name>/penalty` for every strategy
    that adds a penalty, per epoch; the total is the returned `loss`."""
    plan = plan or StepPlan.of(module)
    batch = as_batch(batch)
    for s in plan.on_batch:
        batch = s.on_batch(batch, module)
    net = forward or module
    logits = net(batch["x"])
    per_sample = run_loss(module, logits, batch, net, plan.provider)
    n = per_sample.numel()
    weights = batch.get("weight")
    weights = torch.ones_like(per_sample) if weights is None else weights.to(per_sample.dtype)
    for s in plan.strategies:
        weights = s.weights(per_sample, logits, batch, weights, module)
    loss = main = (weights * per_sample).sum() / n
    log_step_mean(module, "train/loss_main", main, n)
    for s in plan.strategies:
        extra = s.penalty(logits, batch, module)
        if extra is not None:
            loss = loss + extra
            log_step_mean(module, f"{s.name}/penalty", extra, n)
    return {"loss": loss, "per_sample": per_sample.detach(), "logits": logits.detach(), "weights": weights.detach(),
            "batch": batch}
