"""`PerSampleBuffer`: per-sample state of the training split, on the training device, indexed by `batch["index"]`.

Loss histories, EMA targets (ELR), scores (InfoBatch, presampling), kept masks: one tensor of shape
`(train_size, *shape)` that never leaves the device during training, and is saved in the checkpoint when the
strategy lists it in `state_attrs`. Under DDP each rank sees its own shard of every epoch; `sync(trainer)` merges
what the ranks wrote since the last merge (the mean where several ranks wrote one sample), so that every rank holds
the same state before an epoch-level decision.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist


def train_size(trainer: pl.Trainer) -> int:
    """The number of training samples: the datamodule's, else the training DataLoader's dataset length (known from
    `on_train_start` on)."""
    size = getattr(trainer.datamodule, "train_size", None)
    if size is not None:
        return int(size)
    dataset = getattr(trainer.train_dataloader, "dataset", None)
    if dataset is None:
        raise RuntimeError("train_size: the training data is not known yet; allocate per-sample state in "
                           "on_train_start (or use robustlearn's datamodule, which knows it from setup on).")
    return len(dataset)


class PerSampleBuffer:
    def __init__(self, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32, fill: float = 0.0):
        self.shape, self.dtype, self.fill = tuple(shape), dtype, fill
        self.values: torch.Tensor | None = None
        self.touched: torch.Tensor | None = None

    def ensure(self, trainer: pl.Trainer, shape: tuple[int, ...] | None = None) -> PerSampleBuffer:
        """Allocate (or move) the buffer on the training device; restored values are kept. `shape` (per sample) may
        be given here when it is known only in a step (e.g. the number of classes from the logits)."""
        device = trainer.strategy.root_device
        if self.values is None:
            if shape is not None:
                self.shape = tuple(shape)
            self.values = torch.full((train_size(trainer), *self.shape), self.fill, dtype=self.dtype, device=device)
        elif self.values.device != device:
            self.values = self.values.to(device)
        if self.touched is None or self.touched.device != device:
            self.touched = torch.zeros(len(self.values), dtype=torch.bool, device=device)
        return self

    def __len__(self) -> int:
        return 0 if self.values is None else len(self.values)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.values[index]

    def update(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """Write `values` (detached) at `index`; a sample that appears twice keeps the last value."""
        self.values[index] = values.detach().to(self.dtype)
        self.touched[index] = True

    def sync(self, trainer: pl.Trainer) -> None:
        """Merge the ranks' writes since the last merge (no-op in a single process)."""
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            mask = self.touched.view(-1, *([1] * len(self.shape)))
            total = torch.where(mask, self.values.double(), torch.zeros((), dtype=torch.float64,
                                                                          device=self.values.device))
            count = self.touched.double()
            dist.all_reduce(total)
            dist.all_reduce(count)
            count = count.view_as(mask)
            merged = total / count.clamp_min(1)
            if not self.dtype.is_floating_point:
                merged = merged.round()
            self.values = torch.where(count > 0, merged.to(self.dtype), self.values)
        self.touched.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {"values": None if self.values is None else self.values.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        values = state.get("values")
        if values is not None and self.values is not None:
            values = values.to(self.values.device)
        if values is not None:
            self.shape = tuple(values.shape[1:])
        self.values = values
        self.touched = None  # allocated by ensure() on the values' device
