"""`EpochMeans`: per-epoch means of training-step values, summed on the device and logged once per epoch.

Lightning's `self.log` costs Python time on every call (metadata, a result-collection lookup and a device move of the
stored value); a torchmetrics object passed to it costs far more, since the move walks the metric's whole state. At a
few calls per step that was most of the difference between robustlearn's step and a plain PyTorch loop on a GPU
(docs/performance.md). Here a step value costs one multiply-add on the device; `flush` logs every mean at the end of the
training epoch (one all-reduce under DDP, so the means are over every rank's samples).

A mean is Σ value·n / Σ n over the epoch's steps (`add_mean`), exactly what `self.log(..., batch_size=n)` gives; a
ratio of two sums (`add_ratio`, e.g. flipped samples memorised / flipped samples seen) is logged only where its
denominator is positive. The sums restart every epoch and are not checkpointed: checkpoints are taken at epoch ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytorch_lightning as pl
import torch
import torch.distributed as dist


class EpochMeans:
    def __init__(self):
        self._num: dict[str, torch.Tensor | float] = {}
        self._den: dict[str, torch.Tensor | float] = {}
        self._ratio: set[str] = set()

    def add_mean(self, key: str, value: torch.Tensor | float, n: int) -> None:
        """Add a step's mean `value` (a tensor, or a number known on the host) over `n` samples (`n` from a shape: no
        read of the device)."""
        self._add(key, value.detach().float() * n if torch.is_tensor(value) else float(value) * n, float(n))

    def add_ratio(self, key: str, numerator: torch.Tensor, denominator: torch.Tensor) -> None:
        """Add to the two sums of a ratio; logged as Σ numerator / Σ denominator where Σ denominator > 0."""
        self._ratio.add(key)
        self._add(key, numerator.detach().float(), denominator.detach().float())

    def add_sum(self, key: str, value: float) -> None:
        """Add to a total logged as it is (e.g. seconds spent in an epoch's full passes)."""
        self._add(key, float(value), 1.0 if key not in self._num else 0.0)

    def _add(self, key: str, num: torch.Tensor | float, den: torch.Tensor | float) -> None:
        if key in self._num:
            self._num[key] = self._num[key] + num
            self._den[key] = self._den[key] + den
        else:
            self._num[key], self._den[key] = num, den

    def __contains__(self, key: str) -> bool:
        return key in self._num

    def flush(self, log: Callable[..., None], device: torch.device, prog_bar: Iterable[str] = ()) -> None:
        """Log every mean through `log` (a LightningModule's `log`) and reset; one host read."""
        if not self._num:
            return
        keys = list(self._num)
        scalar = lambda v: torch.as_tensor(v, dtype=torch.float32, device=device).reshape(())  # noqa: E731
        num = torch.stack([scalar(self._num[k]) for k in keys])
        den = torch.stack([scalar(self._den[k]) for k in keys])
        if dist.is_available() and dist.is_initialized():
            both = torch.stack([num, den])
            dist.all_reduce(both)
            num, den = both[0], both[1]
        positive = (den > 0).tolist()  # once per epoch
        means = num / den.clamp_min(torch.finfo(den.dtype).tiny)
        bar = set(prog_bar)
        for i, key in enumerate(keys):
            if positive[i] or key not in self._ratio:
                log(key, means[i], on_step=False, on_epoch=True, prog_bar=key in bar)
        self.reset()

    def reset(self) -> None:
        self._num.clear()
        self._den.clear()
        self._ratio.clear()


def log_step_mean(module: pl.LightningModule, key: str, value: torch.Tensor | float, n: int) -> None:
    """Log a training step's `value` (the mean over `n` samples) as its epoch mean: on the module's `EpochMeans` when
    it has one (`RobustClassifier`), else through Lightning's `self.log` (a LightningModule of your own)."""
    means = getattr(module, "epoch_means", None)
    if isinstance(means, EpochMeans):
        means.add_mean(key, value, n)
    else:
        value = value.detach() if torch.is_tensor(value) else float(value)
        module.log(key, value, on_step=False, on_epoch=True, batch_size=n)


def logs_this_step(trainer: pl.Trainer | None) -> bool:
    """Whether Lightning writes step metrics to the loggers after this training step (every `log_every_n_steps`).
    Values logged with `on_step=True` on other steps are dropped, so a step value is only worth logging here."""
    if trainer is None:
        return True
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))
