"""Online batch selection: batches drawn by the rank of each sample's latest loss.

Loshchilov & Hutter, *Online Batch Selection for Faster Training of Neural Networks*, ICLR 2016 workshop track,
arXiv 1511.06343.

All N training samples are ranked by their latest known loss, in descending order (rank i = 1 is the largest loss),
and every sample of a batch is drawn with

    p_i ∝ exp(−log(s_e) · i / N),   i = 1 … N,          so p_1 / p_N = s_e^((N − 1)/N) ≈ s_e

(the paper's p_i ∝ 1 / exp(log(s_e)/N)^i). The selection pressure s_e moves exponentially (linearly in log s) from
`s_start` at the first epoch to `s_end` at the last one,

    s_e = s_start · (s_end / s_start)^(e / (epochs − 1)),

held for the whole epoch (`online_batch_selection/pressure`). s = 1 is uniform sampling. The latest losses live in a
`PerSampleBuffer`: the training losses of every step's batch (`on_train_batch_end`; the training loss of the run,
i.e. the loss provider's where one runs, e.g. GCE), and a full pass over the split (`full_pass`, eval mode, no
augmentation, the same loss) at the start of epoch 0 and of every `recompute`-th epoch after it (0: never again),
which refreshes the losses of the samples not drawn for a while. The ranking is re-sorted on the device at every
step, so it follows the losses as they are written.

A batch replacement (`replaces_batch`): `on_batch` discards the loader's batch and returns b samples drawn with
replacement by rank from the whole training split (`dm.train_tensors()`, augmented with `dm.augment`), from a
generator on the device seeded by (run seed, epoch, rank), so a resumed run draws what an uninterrupted one would.
An epoch is N / b steps of b drawn samples, as with uniform sampling (the loader still sets its length). No host
sync per step: sort, `multinomial` and gathers run on the device.

Defaults: `s_start` = 100 and `s_end` = 1 (from a pressure of 10² down to uniform sampling at the end); the paper
studies constant and decreasing pressures between 10⁰ and 10⁸ on MNIST and reports that decreasing the pressure over
time helps, without one setting for every case, so the default is a moderate decreasing one within that range.
`recompute` = 1 (a full pass every epoch: one forward pass over the split per epoch, about a third of an epoch's
training cost); the paper recomputes all losses periodically as well.

Biased by design: samples are not reweighted (no 1 / (N p_i) importance weights), so the run minimises a loss that
weights hard samples more — that is the method. On noisy labels the hardest samples are mostly the mislabelled ones:
high pressure trains on the noise first. No oracle.
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
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.full_pass import full_pass
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.strategies.step import run_loss

_SALT = 7303


def gather(dm, positions: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The training samples at `positions` (a tensor on the training device) as an augmented batch on that device."""
    tensors = dm.train_tensors()
    device = positions.device
    pos = positions.to(tensors["y"].device)
    batch = {k: v[pos].to(device, non_blocking=True) for k, v in tensors.items()}
    batch["x"] = dm.augment(batch["x"], generator)
    return batch


def rank_probabilities(n: int, pressure: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """p_i ∝ exp(−log(s) i / n) for ranks i = 1 … n (index i − 1), normalised."""
    i = torch.arange(1, n + 1, dtype=torch.float64)
    log_p = -math.log(pressure) * i / n
    p = torch.exp(log_p - log_p.max())
    return (p / p.sum()).to(dtype)


def pressure_at(epoch: int, epochs: int, start: float, end: float) -> float:
    """s_e = start (end / start)^(e / (epochs − 1)); `start` for a one-epoch run."""
    if epochs <= 1:
        return float(start)
    return float(start * (end / start) ** (epoch / (epochs - 1)))


@STRATEGIES.register("online_batch_selection")
class OnlineBatchSelection(Strategy):
    """Batches drawn by loss rank, p_i ∝ s_e^(−i/N), s_e annealed from s_start to s_end (Loshchilov & Hutter)."""

    needs = ("datamodule",)

    replaces_batch = True
    state_attrs = ("latest",)

    @dataclass
    class Params:
        s_start: float = 100.0  # selection pressure at the first epoch (p_top / p_last), >= 1
        s_end: float = 1.0  # selection pressure at the last epoch, >= 1 (1: uniform)
        recompute: int = 1  # full pass over the split every this many epochs (0: only before epoch 0), >= 0

        def __post_init__(self):
            for key in ("s_start", "s_end"):
                value = getattr(self, key)
                if not (is_number(value) and value >= 1.0):
                    raise ConfigError(f"online_batch_selection: {key} = {value!r} is out of range; it must be >= 1.",
                                      key)
            if not (is_whole(self.recompute) and self.recompute >= 0):
                raise ConfigError(f"online_batch_selection: recompute = {self.recompute!r} must be an integer >= 0.",
                                  "recompute")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.latest = PerSampleBuffer()
        self.probabilities: torch.Tensor | None = None
        self.generator: torch.Generator | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.dm = self.datamodule(trainer)

    def refresh_due(self, epoch: int) -> bool:
        return epoch == 0 or (self.params.recompute > 0 and epoch % self.params.recompute == 0)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.latest.ensure(trainer)
        epoch, device = trainer.current_epoch, trainer.strategy.root_device
        if self.refresh_due(epoch):
            logits = full_pass(pl_module, self.dm)
            tensors = self.dm.train_tensors()
            batch = {"y": tensors["y"].to(device), "index": tensors["index"].to(device)}
            with torch.no_grad():
                self.latest.values = run_loss(pl_module, logits, batch).float().to(self.latest.dtype)
        s = pressure_at(epoch, trainer.max_epochs, self.params.s_start, self.params.s_end)
        self.probabilities = rank_probabilities(len(self.latest), s, torch.float32).to(device)
        seed = epoch_seed(self.dm.cfg.seed, epoch, salt=_SALT + 1000 * trainer.global_rank)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.log_metric(pl_module, "pressure", s)

    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        b = len(batch["index"])
        order = torch.argsort(self.latest.values, descending=True)
        ranks = torch.multinomial(self.probabilities, b, replacement=True, generator=self.generator)
        out = gather(self.dm, order[ranks], self.generator)
        self.log_step(module, "mean_rank", (ranks.float() + 1.0).mean() / len(order), b)  # 0.5: uniform
        return out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.latest.update(outputs["batch"]["index"], outputs["per_sample"])
