"""`diagnostics`: what label noise does to a run, measured beside any method. It reads the clean labels, for
diagnostics only: nothing it computes reaches the loss, the weights or the data.

Per epoch, under `diagnostics/`:

- `loss_clean`, `loss_flipped`: the mean training loss (the per-sample loss the step trained with, before weights) of
  the samples whose observed label is correct, and of those whose label was flipped. A method that resists
  memorisation keeps `loss_flipped` high while `loss_clean` falls.
- `batch_kept_precision`, `batch_kept_recall`: where some step gave samples weight 0 (small-loss selection, abstention,
  truncation through weights), the kept samples (weight > 0) against the true flip mask: precision = share of kept
  samples that are clean, recall = share of clean samples that were kept.
- `<name>_kept_precision`, `<name>_kept_recall`: the same for every strategy that exposes its kept set over the whole
  training split (`Strategy.kept_mask()`, e.g. truncated GCE's weights), at the end of the epoch.
- `subset_precision`, `subset_recall`, `subset_size`: the same for the epoch's training subset
  (`datamodule.train_subset`, set by pruning or selection strategies), for the epoch just trained.

The memorisation share (`train/memorized`: flipped samples predicted as their noisy label) is logged by the module
already and is not repeated here. Sums are kept on the device during the epoch and read once at its end.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy


def precision_recall(kept: torch.Tensor, clean: torch.Tensor) -> tuple[float, float]:
    """(|kept ∩ clean| / |kept|, |kept ∩ clean| / |clean|); NaN where a denominator is 0."""
    both = (kept & clean).sum().double()
    n_kept, n_clean = kept.sum().double(), clean.sum().double()
    precision = float(both / n_kept) if n_kept > 0 else float("nan")
    recall = float(both / n_clean) if n_clean > 0 else float("nan")
    return precision, recall


@STRATEGIES.register("diagnostics")
class Diagnostics(Strategy):
    """Per-epoch loss of clean vs flipped samples, and precision/recall of kept sets against the true flip mask."""

    needs = ("datamodule",)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tensors = self.datamodule(trainer).train_tensors()
        device = pl_module.device
        self.clean = (tensors["y"] == tensors["y_clean"]).to(device)  # diagnostics only
        self._reset(device)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._subset = self.datamodule(trainer).train_subset  # the one this epoch trains on

    def _reset(self, device: torch.device) -> None:
        # loss sum clean, count clean, loss sum flipped, count flipped, kept&clean, kept, clean seen, dropped
        self.sums = torch.zeros(8, dtype=torch.float64, device=device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        b = outputs["batch"]
        clean = b["y"] == b["y_clean"]
        loss = outputs["per_sample"].double()
        kept = outputs["weights"] > 0
        c, k = clean.double(), kept.double()
        self.sums += torch.stack([
            (loss * c).sum(), c.sum(), (loss * (1 - c)).sum(), (1 - c).sum(),
            (k * c).sum(), k.sum(), c.sum(), (1 - k).sum(),
        ])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        s = self.sums.tolist()  # once per epoch
        if s[1] > 0:
            self.log_metric(pl_module, "loss_clean", s[0] / s[1])
        if s[3] > 0:
            self.log_metric(pl_module, "loss_flipped", s[2] / s[3])
        if s[7] > 0:  # some step dropped samples
            self.log_metric(pl_module, "batch_kept_precision", s[4] / s[5] if s[5] > 0 else float("nan"))
            self.log_metric(pl_module, "batch_kept_recall", s[4] / s[6] if s[6] > 0 else float("nan"))
        for strategy in (cb for cb in trainer.callbacks if isinstance(cb, Strategy) and cb is not self):
            mask = strategy.kept_mask()
            if mask is not None:
                p, r = precision_recall(mask.to(self.clean.device).bool(), self.clean)
                self.log_metric(pl_module, f"{strategy.name}_kept_precision", p)
                self.log_metric(pl_module, f"{strategy.name}_kept_recall", r)
        subset = self._subset
        if subset is not None:
            kept = torch.zeros_like(self.clean)
            kept[subset.to(self.clean.device)] = True
            p, r = precision_recall(kept, self.clean)
            self.log_metric(pl_module, "subset_precision", p)
            self.log_metric(pl_module, "subset_recall", r)
            self.log_metric(pl_module, "subset_size", float(len(subset)))
        self._reset(self.sums.device)
