"""Co-teaching+.

Yu, Han, Yao, Niu, Tsang & Sugiyama, "How does Disagreement Help Generalization against Label Corruption?",
ICML 2019, arXiv:1901.04215.

Co-teaching's two networks converge to a consensus as training goes on, and then filter the same errors.
Co-teaching+ keeps them apart by training only where they disagree: from epoch `init_epoch` on, a batch is first
restricted to the samples whose predicted classes differ,

    D' = {i : argmax f(x_i) ≠ argmax g(x_i)},    d = |D'|,

then Co-teaching's exchange runs on D': each network picks its k smallest-loss samples of D', k = ⌊(1 − R(e))·d⌋, or
all d of them where that is 0 (the official code's rule), and its peer is updated on them, as a mean over the k:

    f ← f − η ∇ (1/k) Σ_{i ∈ D'_g} ℓ(f, x_i, y_i),    g ← g − η ∇ (1/k) Σ_{i ∈ D'_f} ℓ(g, x_i, y_i)

Before `init_epoch` (epochs counted from 0) it is plain Co-teaching (`coteaching`). R(e) is Co-teaching's ramp
(`robustlearn.strategies.noisy.selection`); the official code's default schedule (`fr_type = type_1`) is the same.
Everything runs on the device with masks (no read of d on the host): D' is a mask, the k smallest of it are taken by
rank, and the scale B/k is a tensor.

**The count.** The official code (github.com/xingruiyu/coteaching_plus, `loss.py`) passes D' to its
`loss_coteaching`, which keeps `num_remember = int(remember_rate * d)` samples and, where that is 0 (an empty slice),
all d of D' (`num_remember` becomes d). So does this one: a batch with few disagreements late in the ramp trains on
every disagreeing sample, not on one.

**A batch where the networks agree on every sample** (D' empty, d = 0): the exchange falls back to the whole batch,
i.e. that step is a Co-teaching step, with the count rule above for d = B (it differs from `coteaching`'s "at least
one" only where ⌊(1 − R)·B⌋ = 0, and then keeps the whole batch). The paper's Algorithm 1 does not say what an empty
D' does; the official code (`loss_coteaching_plus`) trains both networks on plain cross-entropy over the
whole batch while its step counter (epoch × batch index) is below 5000 and takes a zero loss (no update) after.
Plain cross-entropy would train on the noisy labels the method exists to avoid, and a zero loss wastes the step
(late in training, small networks on easy data may agree on whole batches); the small-loss exchange over the batch
keeps the protection of the phase before `init_epoch`. `coteaching_plus/fallback` logs the share of steps that fell
back, `coteaching_plus/disagree` the share of samples in D'.

Other departures from the official code: it passes softmax outputs to `F.cross_entropy` as if they were logits (a
second softmax) in both branches; here the loss is the run's per-sample loss of the logits, for both networks
(cross-entropy, or the loss strategy's). Before `init_epoch` the official code calls the same `loss_coteaching` (all
of the batch where its count is 0); here that phase is this repository's `coteaching`, whose count is at least one.

Defaults: `forget_rate` τ = null, i.e. the actual noise rate of the labels (oracle, recorded as "true noise rate");
`ramp_epochs` 10 and `exponent` 1 (official code: `num_gradual` 10, exponent 1); `init_epoch` 1. The official code
sets `init_epoch` per dataset: 0 for MNIST and for 20 Newsgroups, 5 for CIFAR-100, 20 of 200 epochs for CIFAR-10 (10 %)
and 100 for Tiny-ImageNet. 1 here: about CIFAR-10's 10 % of this repository's 8–20-epoch schedules, an epoch of
Co-teaching in which the two networks learn the easy patterns before the disagreement set is used (0 reproduces the
MNIST setting). `init_epoch` must be below `trainer.epochs` (else the run is `coteaching`).

Evaluation scores the module's own network f, as the paper reports. When to use it: as Co-teaching, where the two
networks would otherwise agree early (easy data, long training). Cost: as Co-teaching (two networks, about 2× the
step), plus an argmax and a sort per step. Its weights are 0 on the samples f does not train on, so `diagnostics`
scores the set f trains on (`diagnostics/batch_kept_precision`); after `init_epoch` that set is small (within D').
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.noisy.coteaching import CoTeaching
from robustlearn.strategies.noisy.selection import check_selection_params
from robustlearn.strategies.params import is_whole
from robustlearn.strategies.step import run_loss


def small_loss_mask_within(losses: torch.Tensor, pool: torch.Tensor, remember: float) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
    """(mask, k): a float mask with ones on the k smallest `losses` among the d samples where the bool `pool` is True,
    k = ⌊remember·d⌋, or all d where that is 0 (the official `loss_coteaching`; k = 0 where d = 0), and k as a
    float64 tensor; ties go to the earlier position. No read of the device."""
    b = losses.numel()
    d = pool.sum().double()
    k = torch.floor(d * remember)
    k = torch.where(k > 0, k, d)
    masked = torch.where(pool, losses.detach().float(), torch.full_like(losses, float("inf"), dtype=torch.float32))
    order = masked.argsort(stable=True)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(b, device=losses.device))
    return ((rank < k) & pool).float(), k


@STRATEGIES.register("coteaching_plus")
class CoTeachingPlus(CoTeaching):
    """Co-teaching+ (Yu et al. 2019): after `init_epoch`, Co-teaching's exchange on the samples the networks
    disagree on (the whole batch where they agree on all), keeping ⌊(1 − R)·d⌋ of them, or all d where that is 0."""

    @dataclass
    class Params(CoTeaching.Params):
        init_epoch: int = 1  # epochs of plain Co-teaching first (official: 0 MNIST, 5 CIFAR-100, 20 of 200 CIFAR-10)

        def __post_init__(self):
            check_selection_params("coteaching_plus", self.forget_rate, self.ramp_epochs, self.exponent)
            if not (is_whole(self.init_epoch) and self.init_epoch >= 0):
                raise ConfigError(f"coteaching_plus: init_epoch = {self.init_epoch!r} must be an integer >= 0 (epochs "
                                  "of plain Co-teaching before the disagreement set is used).", "init_epoch")

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        if params.init_epoch >= epochs:
            raise ConfigError(
                f"init_epoch = {params.init_epoch} is not below trainer.epochs = {epochs}: no epoch would use the "
                "disagreement set and the run would be plain Co-teaching. Lower init_epoch or train longer.",
                "init_epoch")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self.check_against_trainer(trainer)

    def weights(self, per_sample, logits, batch, weights, module):
        epoch = module.trainer.current_epoch
        if epoch < self.params.init_epoch:
            return super().weights(per_sample, logits, batch, weights, module)
        b = per_sample.numel()
        peer_logits = self.peer(batch["x"])
        peer_loss = run_loss(module, peer_logits, batch, net=self.peer)
        classes = getattr(module, "num_classes", logits.shape[1])  # extra logits past the K classes do not vote
        disagree = logits[:, :classes].detach().argmax(1) != peer_logits[:, :classes].detach().argmax(1)
        none = ~disagree.any()
        pool = disagree | none  # the whole batch where the networks agree on every sample
        remember = 1.0 - self.forget_at(epoch)
        for_main, k = small_loss_mask_within(peer_loss, pool, remember)
        for_peer, _ = small_loss_mask_within(per_sample, pool, remember)
        k = k.to(weights.dtype)
        peer_mean = (weights * for_peer.to(weights.dtype) * peer_loss).sum() / k
        self.peer.step(peer_mean)
        self.log_step(module, "peer_loss", peer_mean.detach(), b)
        self.log_step(module, "disagree", disagree.float().mean(), b)
        self.log_step(module, "fallback", none.float(), 1)
        return weights * for_main.to(weights.dtype) * (b / k)
