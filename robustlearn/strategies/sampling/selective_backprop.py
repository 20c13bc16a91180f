"""Selective Backprop: forward every sample, backpropagate those whose loss is high among the recent losses.

Jiang, Wong, Zhou, Andersen, Dean, Ganger, Joshi, Kaminsky, Kozuch, Lipton & Pillai, *Accelerating Deep Learning by
Focusing on the Biggest Losers*, arXiv 1910.00762, 2019; official code github.com/angelajiang/SelectiveBackprop.

The official rule (`lib/calculators.py`, `BatchedRelativeProbabilityCalculator.get_probability`, with the history of
`lib/hist.py`, `UnboundedHistogram`): H holds the R most recent candidate losses (a `deque(maxlen=R)`: the oldest
leave first); a forward batch of candidates first joins H as a whole, then each of its losses ℓ is kept with

    P(keep) = (#{h ∈ H : h < ℓ} / |H|)^β

(strict <; ties and ℓ's own entry do not count), and a candidate is kept when a uniform draw u < P(keep). Before H
is full |H| is the number of losses seen so far (the batch being scored included, so never 0). The smallest loss of
H is never kept; the largest is kept with ((|H| − 1)/|H|)^β. The official forward batch is b samples (the
`batch_size` that also sizes the backward batch); here one step forwards m = `candidates` · b candidates at once and
applies the rule to its consecutive chunks of b in order (each chunk joins H, then is scored), so H and P(keep) are
the official ones given the losses. The one difference: the official code may run a backward pass between two
forward batches (as soon as b kept samples have queued), while here the m candidates are scored with the weights of
the step's start.

Priming (`prime_epochs`): the official code trains the first epoch without selection (`SelectiveBackpropper`
sets `num_images_to_prime` to the training-set size; `PrimedSelector` uses `BaselineSelector`, which backpropagates
every sample and never calls the probability calculator, so H is still empty when selection starts). Here the first
`prime_epochs` epochs (default 1, the official code's) are plain training: the loader's batch is b and each step
trains it with weight 1; no candidate is scored and H is not touched. The loader's batch size is set for each epoch
before it starts (`setup` for the first epoch, `on_train_epoch_end` for the next; the datamodule checkpoints it).

What a selective epoch is. The training loader's batches are the candidates: the loader's batch size is m =
`candidates` · b (b = `data.batch_size`), so such an epoch is one forward pass over the training split, N / m
steps, each scoring m candidates in eval mode without gradient (`scoring`, as the official `CutoutForwardpropper`,
which calls `net.eval()` under `torch.no_grad()`) and training on b kept samples — as in the paper, where every
epoch forwards every sample once and backpropagates the selected ones. At β = 3 a sample is kept with probability
about E[U³] = 1/4 on average (U = its share of H below it, about uniform for a stationary loss), so m = 5 b
candidates keep 1.25 b per step: the pool stays full and steps train full batches. The surplus carries over to the
next step (and epoch) up to b + m samples; beyond that kept samples are dropped (`selective_backprop/dropped`, their
share of the candidates). A step whose pool holds fewer than b samples trains the missing rows with weight 0
(`selective_backprop/short`, the share of such rows): rare at the default factor, more frequent with `candidates`
= β + 1, which drops nothing. (The official code queues every kept sample and backpropagates each full batch of b;
it drops none.) Cost per selective epoch: a no-grad forward of all N samples plus forward and backward of N b / m
samples; with backward ≈ 2 forwards, about (1 + 3/5) / 3 ≈ 53 % of a uniform epoch at the defaults (the paper's
speed-ups come from this). The number of epochs therefore counts N forwards, not N backprops: compare runs at equal
wall-clock or equal forwards.

No per-step host sync: the history, pool and its count live on the device and the pool is filled with scatters; the
history's fill and position are host integers that follow from the batch sizes alone. History, its fill and
position, the pool and its count are checkpointed (`state_attrs`); the keep draws come from a generator seeded by
(run seed, epoch, rank), so a resumed run selects what an uninterrupted one would.

Defaults (official code): β = 3 (`--prob_pow` of `examples/train.py`; the paper studies 1, 2, 3), R = 1024
(`max_history_len` in `SelectiveBackpropper`), `prime_epochs` = 1 (`num_images_to_prime` = N). `candidates` = 5
(see above; the official code has no such factor). Losses are the run's training loss (the loss provider's where one
runs, e.g. GCE; the official code's is cross-entropy). When to use it: to cut backward passes on clean, redundant
data. Biased by design: kept samples are not reweighted, so high-loss samples dominate the gradient; on noisy labels
those are mostly the mislabelled ones (it trains on the noise first). No oracle.
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
from robustlearn.strategies.scoring import scoring
from robustlearn.strategies.step import run_loss

_SALT = 7404
_KEYS = ("x", "y", "y_clean", "index")


def keep_probability(losses: torch.Tensor, history: torch.Tensor, beta: float) -> torch.Tensor:
    """(#{h ∈ history : h < ℓ} / |history|)^β for each ℓ of `losses` (the official `percentile_of_score` / 100, strict
    <), in the dtype of `losses`. No host sync."""
    ordered = torch.sort(history.to(losses.dtype)).values
    below = torch.searchsorted(ordered, losses, right=False)  # the number of history entries strictly below ℓ
    return (below.to(losses.dtype) / len(history)) ** beta


@STRATEGIES.register("selective_backprop")
class SelectiveBackprop(Strategy):
    """Keep a candidate with probability (share of the last R losses below its loss)^β; train full kept batches."""

    needs = ("datamodule",)

    replaces_batch = True
    state_attrs = ("history", "filled", "cursor", "pool", "pool_count")

    @dataclass
    class Params:
        beta: float = 3.0  # selectivity exponent, > 0 (paper and official code: 3)
        history: int = 1024  # number R of recent candidate losses the percentile is taken in, >= 1 (paper: 1024)
        candidates: float = 5.0  # loader batch = candidates x data.batch_size samples scored per step, >= 1
        prime_epochs: int = 1  # first epochs of plain training (every sample backpropagated), >= 0 (official: 1)

        def __post_init__(self):
            if not (is_number(self.beta) and self.beta > 0):
                raise ConfigError(f"selective_backprop: beta = {self.beta!r} is out of range; it must be > 0.", "beta")
            if not (is_whole(self.history) and self.history >= 1):
                raise ConfigError(f"selective_backprop: history = {self.history!r} must be an integer >= 1.",
                                  "history")
            if not (is_number(self.candidates) and self.candidates >= 1):
                raise ConfigError(f"selective_backprop: candidates = {self.candidates!r} is out of range; it must "
                                  "be >= 1.", "candidates")
            if not (is_whole(self.prime_epochs) and self.prime_epochs >= 0):
                raise ConfigError(f"selective_backprop: prime_epochs = {self.prime_epochs!r} must be an integer >= 0.",
                                  "prime_epochs")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.history: torch.Tensor | None = None  # (R,) recent candidate losses; the first `filled` are valid
        self.filled = 0
        self.cursor = 0
        self.pool: dict[str, torch.Tensor] | None = None  # (b + m + 1, ...) kept samples; the last row is a sink
        self.pool_count: torch.Tensor | None = None  # () number of valid pool rows, on the device
        self.generator: torch.Generator | None = None
        self.priming = False  # this epoch is one of the first `prime_epochs`: plain training

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = self.dm = self.datamodule(trainer)
        self.b = dm.data_cfg.batch_size
        self.m = max(self.b, int(math.ceil(self.params.candidates * self.b)))
        # A resumed run restores the datamodule's batch size from the checkpoint after this.
        dm.set_train_batch_size(self.loader_batch_size(0))

    def loader_batch_size(self, epoch: int) -> int | None:
        """The training loader's batch size in `epoch`: b (None, `data.batch_size`) while priming, else m (the
        candidates)."""
        return None if epoch < self.params.prime_epochs else self.m

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.dm.set_train_batch_size(self.loader_batch_size(trainer.current_epoch + 1))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.priming = trainer.current_epoch < self.params.prime_epochs
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
        """Append `losses` to the ring of the last R (host-side position, device values); of more than R, the last R
        stay (as in a deque(maxlen=R))."""
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

    def keep_probabilities(self, losses: torch.Tensor) -> torch.Tensor:
        """P(keep) of the step's candidates, in the official order: each consecutive chunk of b joins the history, then
        its losses are scored against it. Updates the history. No host sync."""
        losses = losses.detach().float()
        out = []
        for chunk in losses.split(self.b):
            self._remember(chunk)
            out.append(keep_probability(chunk, self.history[: self.filled], self.params.beta))
        return torch.cat(out)

    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        if self.priming:  # the official first epoch: every sample backpropagated, the history left empty
            one = torch.ones((), device=batch["y"].device)
            self.log_step(module, "kept", one, len(batch["y"]))
            self.log_step(module, "short", 1.0 - one, len(batch["y"]))
            self.log_step(module, "dropped", 1.0 - one, len(batch["y"]))
            return batch
        self._ensure_pool(batch)
        with scoring(module):
            losses = run_loss(module, module(batch["x"]), batch, net=module).float()
        p = self.keep_probabilities(losses)
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
