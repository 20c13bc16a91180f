"""Selective Backprop: forward every sample, backpropagate those whose loss ranks high among the recent losses.

Jiang, Wong, Zhou, Andersen, Dean, Ganger, Joshi, Kaminsky, Kozuch, Lipton & Pillai, *Accelerating Deep Learning by
Focusing on the Biggest Losers*, arXiv 1910.00762, 2019; official code github.com/angelajiang/SelectiveBackprop.

Each candidate's loss ℓ joins a history H of the R most recent candidate losses, then the candidate is kept with

    P(keep) = F_H(ℓ)^β,   F_H(ℓ) = (#{h ∈ H : h < ℓ} + #{h ∈ H : h ≤ ℓ} + 1) / (2 |H|)

F_H is the percentile of ℓ in H as `scipy.stats.percentileofscore(H, ℓ, kind="rank") / 100`, which the official
code uses (for distinct losses (rank of ℓ in H) / |H|). The official code adds one loss at a time; here a whole
candidate batch joins H before its members are scored (the same up to the order within one batch). Kept samples
accumulate in a pool on the device; every step backpropagates one full batch of b from it.

What an epoch is. The training loader's batches are the candidates: `setup` sets the loader's batch size to
m = `candidates` · b (b = `data.batch_size`), so an epoch is one forward pass over the training split, N / m steps,
each scoring m candidates in eval mode without gradient (`scoring`) and training on b kept samples — as in the
paper, where every epoch forwards every sample once and backpropagates the selected ones. At β = 3 a sample is kept
with probability E[U³] = 1/4 on average (U = F_H, uniform for a stationary loss), so m = 5 b candidates keep 1.25 b
per step: the pool stays full and steps train full batches. The surplus carries over to the next step (and
epoch) up to b + m samples; beyond that kept samples are dropped (`selective_backprop/dropped`, their share of the
candidates). A step whose pool holds fewer than b samples trains the missing rows with weight 0
(`selective_backprop/short`, the share of such rows): rare at the default factor, more frequent with `candidates`
= β + 1, which drops nothing. Cost per epoch: a no-grad forward of all N samples plus forward and backward of
N b / m samples; with backward ≈ 2 forwards, about (1 + 3/5) / 3 ≈ 53 % of a uniform epoch at the defaults (the
paper's speed-ups come from this). The number of epochs therefore counts N forwards, not N backprops: compare runs
at equal wall-clock or equal forwards.

No per-step host sync: the history, pool and its count live on the device and the pool is filled with scatters.
History, its fill and position, the pool and its count are checkpointed (`state_attrs`); the keep draws come from a
generator seeded by (run seed, epoch, rank), so a resumed run selects what an uninterrupted one would.

Defaults (paper and official code): β = 3 (the paper studies 1, 2, 3), R = 1024. `candidates` = 5 (see above).
Losses are the run's training loss (the loss provider's where one runs, e.g. GCE). When to use it: to cut backward
passes on clean, redundant data. Biased by design: kept samples are not reweighted, so high-loss samples dominate
the gradient; on noisy labels those are mostly the mislabelled ones (it trains on the noise first). No oracle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.strategies.sampling.online_batch_selection import training_loss
from robustlearn.strategies.scoring import scoring

_SALT = 7404
_KEYS = ("x", "y", "y_clean", "index")


def keep_probability(losses: torch.Tensor, history: torch.Tensor, beta: float) -> torch.Tensor:
    """F_H(ℓ)^β for each of `losses`, F_H the "rank" percentile of ℓ in `history` (which holds the losses)."""
    ordered = torch.sort(history).values
    less = torch.searchsorted(ordered, losses, right=False)
    less_equal = torch.searchsorted(ordered, losses, right=True)
    percentile = (less + less_equal + 1).to(losses.dtype) / (2.0 * len(history))
    return percentile.clamp(max=1.0) ** beta


@STRATEGIES.register("selective_backprop")
class SelectiveBackprop(Strategy):
    """Keep a candidate with probability (percentile of its loss in the last R losses)^β; train full kept batches."""

    replaces_batch = True
    state_attrs = ("history", "filled", "cursor", "pool", "pool_count")

    @dataclass
    class Params:
        beta: float = 3.0  # selectivity exponent, > 0 (paper and official code: 3)
        history: int = 1024  # number R of recent candidate losses the percentile is taken in, >= 1 (paper: 1024)
        candidates: float = 5.0  # loader batch = candidates x data.batch_size samples scored per step, >= 1

        def __post_init__(self):
            if not (is_number(self.beta) and self.beta > 0):
                raise ConfigError(f"selective_backprop: beta = {self.beta!r} is out of range; it must be > 0.", "beta")
            if not (is_whole(self.history) and self.history >= 1):
                raise ConfigError(f"selective_backprop: history = {self.history!r} must be an integer >= 1.",
                                  "history")
            if not (is_number(self.candidates) and self.candidates >= 1):
                raise ConfigError(f"selective_backprop: candidates = {self.candidates!r} is out of range; it must "
                                  "be >= 1.", "candidates")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.history: torch.Tensor | None = None  # (R,) recent candidate losses; the first `filled` are valid
        self.filled = 0
        self.cursor = 0
        self.pool: dict[str, torch.Tensor] | None = None  # (b + m + 1, ...) kept samples; the last row is a sink
        self.pool_count: torch.Tensor | None = None  # () number of valid pool rows, on the device
        self.generator: torch.Generator | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = self.dm = self.datamodule(trainer)
        self.b = dm.data_cfg.batch_size
        self.m = max(self.b, int(math.ceil(self.params.candidates * self.b)))
        dm.set_train_batch_size(self.m)  # the loader's batches are the candidates; restored as well on resume

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = trainer.strategy.root_device
        if self.history is None:
            self.history = torch.zeros(self.params.history, device=device)
        self.history = self.history.to(device)
        if self.pool is not None:
            self.pool = {k: v.to(device) for k, v in self.pool.items()}
            self.pool_count = self.pool_count.to(device)
        seed = epoch_seed(self.dm.cfg.seed, trainer.current_epoch, salt=_SALT + 1000 * trainer.global_rank)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def _remember(self, losses: torch.Tensor) -> None:
        """Write the candidate losses into the ring of the last R (host-side position, device values)."""
        r, n = self.params.history, len(losses)
        if n >= r:
            self.history = losses[-r:].detach().float().clone()
            self.filled, self.cursor = r, 0
            return
        slots = (self.cursor + torch.arange(n, device=losses.device)) % r
        self.history[slots] = losses.detach().float()
        self.filled = min(r, self.filled + n)
        self.cursor = (self.cursor + n) % r

    def _ensure_pool(self, batch: dict) -> None:
        if self.pool is None:
            rows = self.b + self.m + 1
            self.pool = {k: torch.zeros((rows, *batch[k].shape[1:]), dtype=batch[k].dtype, device=batch[k].device)
                         for k in _KEYS}
            self.pool_count = torch.zeros((), dtype=torch.long, device=batch["y"].device)

    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        self._ensure_pool(batch)
        with scoring(module):
            losses = training_loss(module, module(batch["x"]), batch)
        self._remember(losses)
        p = keep_probability(losses, self.history[: self.filled], self.params.beta)
        kept = torch.rand(p.shape, generator=self.generator, device=p.device) < p
        # Append the kept candidates after the pool's valid rows; rows past its capacity go to the sink row.
        capacity = self.b + self.m
        slot = self.pool_count + torch.cumsum(kept.long(), 0) - 1
        target = torch.where(kept & (slot < capacity), slot, torch.full_like(slot, capacity))
        for k in _KEYS:
            self.pool[k][target] = batch[k]
        total = self.pool_count + kept.sum()
        count = torch.clamp(total, max=capacity)
        out = {k: self.pool[k][: self.b].clone() for k in _KEYS}
        valid = torch.arange(self.b, device=count.device) < count
        out["weight"] = valid.float()
        for k in _KEYS:  # the rest moves to the front for the next step
            self.pool[k][: capacity - self.b] = self.pool[k][self.b : capacity].clone()
        self.pool_count = torch.clamp(count - self.b, min=0)
        n = len(losses)
        self.log_step(module, "kept", kept.float().mean(), n)
        self.log_step(module, "short", 1.0 - valid.float().mean(), self.b)
        self.log_step(module, "dropped", (total - count).float() / n, n)
        return out
