"""Batches as slices of device-resident tensors: no DataLoader workers, no host-to-device copies per step.

The whole split lives on the device as a dict of tensors (`x`, `y`, `y_clean`, `index`). Each epoch draws a
permutation from a generator seeded by (seed, epoch), so the batch order and the augmentation of epoch e are the
same whether a run went straight through or resumed at e. Strategies may restrict the next epochs to a subset of
positions (`set_indices`); strategies do that through the datamodule (`set_train_subset`), which keeps the
subset in its checkpointed state and hands it to the loader each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from robustlearn.data.augment import random_crop_flip


def epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    """A well-mixed 63-bit seed from (seed, epoch, salt)."""
    x = (seed * 1_000_003 + epoch * 7919 + salt * 104_729 + 0x9E3779B97F4A7C15) & ((1 << 64) - 1)
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & ((1 << 64) - 1)
    x ^= x >> 33
    return x & ((1 << 63) - 1)


def epoch_order(
    size: int,
    indices: torch.Tensor | None,
    seed: int,
    epoch: int,
    shuffle: bool,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The positions one rank visits in `epoch`: a (seed, epoch) permutation of `indices` (all positions when
    None), dealt to the ranks in turn. Like `DistributedSampler`, the permutation is padded by wrapping around
    to a multiple of `world_size`, so every rank takes the same number of steps (unequal counts hang DDP); the
    few samples repeated then are the first of the permutation."""
    n = size if indices is None else len(indices)
    if shuffle:
        g = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=g, device=device)
    else:
        order = torch.arange(n, device=device)
    if indices is not None:
        order = indices.to(device)[order]
    if world_size > 1:
        padded = math.ceil(n / world_size) * world_size
        if padded > n:
            order = torch.cat([order, order[: padded - n]])
        order = order[rank::world_size]
    return order


def shard_size(size: int, indices: torch.Tensor | None, world_size: int) -> int:
    """How many positions each rank visits per epoch (`epoch_order`'s length)."""
    return math.ceil((size if indices is None else len(indices)) / world_size)


def trained_length(per_rank: int, batch_size: int, drop_last: bool, drop_single: bool) -> int:
    """How many of a rank's `per_rank` positions an epoch trains on: all of them, or with `drop_last` only full batches
    (one batch shape, for compiled runs), or with `drop_single` all but a lone last sample. A last batch of one sample
    cannot train a network with BatchNorm (it needs more than one value per channel), and pruned epochs (random
    pruning, InfoBatch) hit that size by chance; that one sample, a random one, sits out the epoch."""
    if drop_last and per_rank >= batch_size:
        return per_rank - per_rank % batch_size
    if drop_single and batch_size > 1 and per_rank > 1 and per_rank % batch_size == 1:
        return per_rank - 1
    return per_rank


class DeviceLoader:
    """An iterable of batch dicts over tensors that are moved to `device` once."""

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch_fn: Callable[[], int] = lambda: 0,
        crop_padding: int = 0,
        hflip: bool = False,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        drop_single: bool = False,
    ):
        self.tensors = tensors
        self.drop_last = drop_last  # one batch shape every step (compiled runs); never drops a whole epoch
        self.drop_single = drop_single  # training: never a last batch of one sample (`trained_length`)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch_fn = epoch_fn
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.rank, self.world_size = rank, world_size
        self.indices: torch.Tensor | None = None
        self.size = len(next(iter(tensors.values())))

    def to(self, device: torch.device | str) -> DeviceLoader:
        device = torch.device(device)
        for k, v in self.tensors.items():
            if v.device != device:
                self.tensors[k] = v.to(device, non_blocking=True)
        if self.indices is not None:
            self.indices = self.indices.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device

    def set_indices(self, indices: torch.Tensor | None) -> None:
        """Restrict the following epochs to these positions (None: the whole split)."""
        self.indices = None if indices is None else indices.to(self.device, torch.long)

    def __len__(self) -> int:
        per_rank = shard_size(self.size, self.indices, self.world_size)
        return math.ceil(trained_length(per_rank, self.batch_size, self.drop_last, self.drop_single) / self.batch_size)

    def _order(self, epoch: int) -> torch.Tensor:
        return epoch_order(self.size, self.indices, self.seed, epoch, self.shuffle, self.rank, self.world_size,
                           self.device)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = int(self.epoch_fn())
        order = self._order(epoch)
        augment = self.crop_padding > 0 or self.hflip
        gen = None
        if augment:
            gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch, salt=1))
        end = trained_length(len(order), self.batch_size, self.drop_last, self.drop_single)
        for start in range(0, end, self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = {k: v[idx] for k, v in self.tensors.items()}
            if augment:
                batch["x"] = random_crop_flip(batch["x"], self.crop_padding, self.hflip, gen)
            yield batch
