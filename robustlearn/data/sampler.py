"""`EpochSampler`: the device loader's batch order for a torch DataLoader (`data.loader=dataloader`).

The same (seed, epoch) permutation, training subset and DDP shard as `DeviceLoader` (both use `epoch_order`), so
the two loader paths visit the same positions in the same order and a resumed run sees the batches an
uninterrupted one would. The sampler shards by rank itself; the Trainer runs with `use_distributed_sampler=False`
so that Lightning does not wrap it in a second `DistributedSampler`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler

from robustlearn.data.gpu_loader import epoch_order, shard_size, trained_length


class EpochSampler(Sampler[int]):
    def __init__(
        self,
        size: int,
        seed: int,
        epoch_fn: Callable[[], int],
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        drop_single: bool = False,
    ):
        self.size = size
        self.batch_size, self.drop_single = batch_size, drop_single  # never a last batch of one (`trained_length`)
        self.seed = seed
        self.epoch_fn = epoch_fn
        self.shuffle = shuffle
        self.rank, self.world_size = rank, world_size
        self.indices: torch.Tensor | None = None

    def set_indices(self, indices: torch.Tensor | None) -> None:
        """Restrict the following epochs to these positions (None: the whole split)."""
        self.indices = None if indices is None else indices.detach().to("cpu", torch.long)

    def __len__(self) -> int:
        per_rank = shard_size(self.size, self.indices, self.world_size)
        return trained_length(per_rank, self.batch_size, False, self.drop_single)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(self.size, self.indices, self.seed, int(self.epoch_fn()), self.shuffle, self.rank,
                            self.world_size)
        return iter(order[: trained_length(len(order), self.batch_size, False, self.drop_single)].tolist())
