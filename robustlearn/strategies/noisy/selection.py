"""The small-loss selection shared by `small_loss`, `coteaching`, `coteaching_plus` and `jocor`.

Forget-rate schedule of Han et al. 2018 ("Co-teaching", NeurIPS), as the official code writes it
(github.com/bhanML/Co-teaching, `rate_schedule`): over the first `ramp_epochs` epochs the forget rate rises linearly
from 0 to τ^c, then stays at τ:

    R(e) = τ^c · e / (T_k − 1)   for e < T_k,        R(e) = τ   for e ≥ T_k

with τ the forget rate, c the exponent (default 1, so the two branches meet) and T_k = `ramp_epochs` (default 10).
Each batch keeps its ⌊(1 − R(e))·B⌋ smallest-loss samples (at least one), as `num_remember = int(remember_rate *
len(loss_sorted))` does there.

The default τ is the true noise rate, as the papers assume it known: the *actual* share of flipped labels that the
run's noise draw produced (`noise_rate_actual`, from the datamodule's `noise_info`), not the nominal `noise.rate`.
The two differ where a noise kind flips only some classes: Fashion-MNIST's asymmetric map flips 4 of 10 classes, so
`noise.rate: 0.4` flips 16 % of the labels, and a forget rate of 0.4 would drop 40 % of every batch to remove 16 %.
A strategy that takes τ from there reads oracle information and says so (`oracle = "true noise rate"`).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError
from robustlearn.strategies.params import is_number, is_whole


def forget_rate_at(epoch: int, forget_rate: float, ramp_epochs: int, exponent: float = 1.0) -> float:
    """R(e): the share of each batch dropped at epoch `epoch` (0-based)."""
    if epoch >= ramp_epochs:
        return float(forget_rate)
    if ramp_epochs <= 1:
        return float(forget_rate) ** exponent
    return float(forget_rate) ** exponent * epoch / (ramp_epochs - 1)


def keep_count(batch_size: int, forget: float) -> int:
    """⌊(1 − R)·B⌋ samples kept of a batch of B, at least one."""
    return max(1, int((1.0 - forget) * batch_size))


def small_loss_mask(losses: torch.Tensor, k: int) -> torch.Tensor:
    """A float mask with ones on the `k` smallest `losses` (ties broken by `topk`); no read of the device."""
    k = min(k, losses.numel())
    mask = torch.zeros_like(losses, dtype=torch.float32)
    return mask.scatter_(0, losses.detach().topk(k, largest=False).indices, 1.0)


def resolve_forget_rate(forget_rate: float | None, trainer: pl.Trainer) -> float:
    """The forget rate to use: the given one, or the actual noise rate of the run's labels (the oracle default)."""
    if forget_rate is not None:
        return float(forget_rate)
    info = getattr(getattr(trainer, "datamodule", None), "noise_info", None)
    if info is None:
        raise ConfigError("forget_rate is null, which means the true noise rate of the training labels, but this run "
                          "has no robustlearn datamodule whose noise_info records it; set forget_rate (the share of "
                          "each batch to drop, e.g. 0.2).", "forget_rate")
    return float(info.rate_actual)


def check_selection_params(name: str, forget_rate: float | None, ramp_epochs: int, exponent: float) -> None:
    """The `ConfigError`s of the three selection parameters, naming the key."""
    if forget_rate is not None and not (is_number(forget_rate) and 0.0 <= forget_rate < 1.0):
        raise ConfigError(f"{name}: forget_rate = {forget_rate!r} must be a number >= 0 and < 1 (the share of each "
                          "batch dropped), or null for the true noise rate of the training labels.", "forget_rate")
    if not (is_whole(ramp_epochs) and ramp_epochs >= 1):
        raise ConfigError(f"{name}: ramp_epochs = {ramp_epochs!r} must be an integer >= 1 (official code: 10).",
                          "ramp_epochs")
    if not (is_number(exponent) and exponent > 0):
        raise ConfigError(f"{name}: exponent = {exponent!r} must be a number > 0 (official code: 1).", "exponent")
