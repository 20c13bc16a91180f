"""Small-loss selection with one network (the "self-paced" baseline of the Co-teaching paper).

Han, Yao, Yu, Niu, Xu, Hu, Tsang & Sugiyama, "Co-teaching: Robust Training of Deep Neural Networks with Extremely
Noisy Labels", NeurIPS 2018, arXiv:1804.06872 — the one-network ablation of Co-teaching: a network trains on the
samples of each batch that it finds easy itself (small loss), which early in training are mostly correctly labelled.

Each batch of B samples keeps its k = ⌊(1 − R(e))·B⌋ smallest-loss samples (at least one); the weights are a 0/1
mask scaled so that the loss is the mean over the kept samples:

    w_i = [i among the k smallest ℓ_i] · B / k,        loss = Σ_i w_i ℓ_i / B = (1/k) Σ_kept ℓ_i

ℓ is the run's per-sample training loss (cross-entropy, or the loss strategy's, e.g. GCE). The forget rate rises over
the first epochs (`robustlearn.strategies.noisy.selection`, as the official Co-teaching code):

    R(e) = τ^c · e / (T_k − 1) for epochs e < T_k (counted from 0),    R(e) = τ afterwards

Defaults (official Co-teaching code, github.com/bhanML/Co-teaching): `forget_rate` τ = null, i.e. the true noise
rate of the run's labels (the paper assumes it known): the actual share flipped, `noise_rate_actual`, not the nominal
`noise.rate` (they differ for class-map noise; selection.py); `ramp_epochs` T_k = 10 (`num_gradual`); `exponent`
c = 1. Taking τ from the noise draw, the method reads oracle information and says so (`oracle = "true noise rate"`, in
result.json and on the leaderboard); set `forget_rate` to an estimate for a practical run. T_k = 10 was chosen for
200-epoch runs; on this repository's 8–20-epoch schedules R(e) is still rising for most of the run — set
`ramp_epochs` to a few epochs (about a quarter of the run) to reach τ in time.

When to use it: a baseline for Co-teaching (it shows what the peer adds) and a cheap selection to compose with a
robust loss. A single network that selects for itself confirms its own mistakes (the selection bias Co-teaching
is built against). Cost: one `topk` per step, no extra forward pass.

Its weights are 0 on the dropped samples, so `diagnostics` scores the kept set of every batch against the true flip
mask (`diagnostics/batch_kept_precision`, `batch_kept_recall`). Per epoch it logs `small_loss/forget_rate`, the R(e)
that epoch trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.noisy.selection import (
    check_selection_params,
    forget_rate_at,
    keep_count,
    resolve_forget_rate,
    small_loss_mask,
)


@STRATEGIES.register("small_loss")
class SmallLoss(Strategy):
    """Small-loss selection: each batch trains on its (1 − R(e)) share with the smallest loss, R ramped to τ."""

    @property
    def needs(self) -> tuple[str, ...]:
        return ("noise_rate",) if self.params.forget_rate is None else ()

    @dataclass
    class Params:
        forget_rate: float | None = None  # τ, share of each batch dropped once ramped, 0 <= τ < 1; null: true rate
        ramp_epochs: int = 10  # T_k, epochs over which R rises from 0 to τ^c (official code: num_gradual = 10)
        exponent: float = 1.0  # c in τ^c, the ramp's end value (official code: 1)

        def __post_init__(self):
            check_selection_params("small_loss", self.forget_rate, self.ramp_epochs, self.exponent)

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.tau: float | None = None  # the forget rate in use, resolved in setup()

    @property
    def oracle(self) -> str | None:
        return "true noise rate" if self.params.forget_rate is None else None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        try:
            self.tau = resolve_forget_rate(self.params.forget_rate, trainer)
        except ConfigError as exc:
            key = f"strategies[{self.position}].{exc.key}"
            raise ConfigError(f"{key}: {self.name}: {exc}", key) from exc

    def forget_at(self, epoch: int) -> float:
        """R(epoch), epochs counted from 0."""
        if self.tau is None:
            raise RuntimeError(f"{self.name}: the forget rate is resolved in setup(); call it before training.")
        return forget_rate_at(epoch, self.tau, self.params.ramp_epochs, self.params.exponent)

    def keep(self, module: pl.LightningModule, batch_size: int) -> int:
        """How many samples of a batch of `batch_size` are kept in the current epoch (a host value)."""
        return keep_count(batch_size, self.forget_at(module.trainer.current_epoch))

    def weights(self, per_sample, logits, batch, weights, module):
        b = per_sample.numel()
        k = self.keep(module, b)
        mask = small_loss_mask(per_sample, k).to(weights.dtype)
        return weights * mask * (b / k)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_metric(pl_module, "forget_rate", self.forget_at(trainer.current_epoch))
