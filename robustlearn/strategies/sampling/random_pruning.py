"""Dynamic random pruning: every epoch trains on a fresh uniformly random share 1 − `ratio` of the training split.

The baseline of dynamic data pruning (Raju, Daruwalla & Lipasti, *Accelerating Deep Learning with Dynamic Data
Pruning*, arXiv 2111.12621, 2021, "uniform random dynamic pruning"; the "Random" dynamic-pruning rows of Qin et al.,
*InfoBatch*, ICLR 2024, arXiv 2303.04947). Published comparisons find it hard to beat at moderate ratios; any
score-based pruning method should be compared with it at the same ratio.

    epoch e trains on S_e,   S_e = the first N − round(ratio · N) positions of a permutation drawn from a generator
                             seeded by (run seed, e),   |S_e| = N − round(ratio · N)

An epoch is one pass over S_e: (1 − ratio) N / b steps. The subset of epoch 0 is set in `setup`, that of epoch e + 1
in `on_train_epoch_end` of epoch e (`sets_subset`, `dm.set_train_subset`); the datamodule keeps it in the checkpoint,
and the (seed, e) stream makes it the same in a resumed run. No per-step code. The kept share of each epoch is
logged as `random_pruning/kept`.

Default `ratio` 0.5 (half of every epoch dropped; the commonly compared setting). Cost: none beyond drawing a
permutation per epoch; it saves `ratio` of the steps of every epoch. Unbiased (every sample is in an epoch with
probability 1 − ratio), no oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number

_SALT = 7101


def random_subset(n: int, ratio: float, seed: int, epoch: int) -> torch.Tensor | None:
    """The sorted positions epoch `epoch` trains on (None: all of them): N − round(ratio · N) of n, drawn from a
    generator seeded by (seed, epoch)."""
    drop = int(round(ratio * n))
    if drop == 0:
        return None
    keep = max(1, n - drop)
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch, salt=_SALT))
    return torch.randperm(n, generator=g)[:keep].sort().values


@STRATEGIES.register("random_pruning")
class RandomPruning(Strategy):
    """Each epoch a fresh random share 1 − ratio of the training split (dynamic random pruning)."""

    needs = ("datamodule",)

    sets_subset = True

    @dataclass
    class Params:
        ratio: float = 0.5  # share of the training split dropped from every epoch, 0 <= ratio < 1

        def __post_init__(self):
            if not (is_number(self.ratio) and 0.0 <= self.ratio < 1.0):
                raise ConfigError(f"random_pruning: ratio = {self.ratio!r} is out of range; it must be >= 0 and < 1.",
                                  "ratio")

    def _choose(self, trainer: pl.Trainer, epoch: int) -> None:
        dm = self.datamodule(trainer)
        dm.set_train_subset(random_subset(dm.train_size, self.params.ratio, dm.cfg.seed, epoch))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # epoch 0's subset; a resumed run restores the datamodule's saved choice after this
            self._choose(trainer, 0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = self.datamodule(trainer)
        current = dm.train_subset
        self.log_metric(pl_module, "kept", 1.0 if current is None else len(current) / dm.train_size)
        if trainer.current_epoch + 1 < trainer.max_epochs:
            self._choose(trainer, trainer.current_epoch + 1)
