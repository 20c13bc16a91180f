"""An input deficit during a window of training (critical learning periods).

Achille, Rovere & Soatto, "Critical Learning Periods in Deep Networks", ICLR 2019 (arXiv:1711.08856).

The training batches of a window [start, end) are transformed; every other batch, and every validation and test
batch, is left as it is:

    epoch e is in the window  ⇔  start ≤ e < end          (unit: epochs; e = trainer.current_epoch, from 0)
    step s is in the window   ⇔  start ≤ s < end          (unit: steps;  s = trainer.global_step before the step,
                                                            i.e. the optimiser steps already taken, from 0)

So `start: 0, end: 40` is the paper's "deficit removed at epoch 40": epochs 0..39 train with the deficit, epoch 40 is
the first clean one. `end = start` is the empty window, a run without deficit: the N = 0 control of a sweep over the
window's end (configs/sweeps/critical_periods_cpu.yaml). Kinds (`kind:`):

- `blur`: x ↦ up(down(x)), down = bilinear resize to (⌊H/factor⌋, ⌊W/factor⌋) with antialiasing
  (`F.interpolate(..., mode="bilinear", antialias=True, align_corners=False)`), up = bilinear resize back to (H, W)
  (`align_corners=False`). The paper blurs CIFAR-10 by downsampling 32 → 8 and upsampling back with bilinear
  interpolation (factor 4, the default); on 28×28 images factor 4 gives 28 → 7 → 28. The resize acts on the
  normalised tensors; its weights sum to one, so it commutes with the per-channel normalisation.
- `vflip`: the image upside down (rows reversed, `x.flip(-2)`): a high-level deficit that keeps every low-level
  statistic.
- `noise`: the image replaced by noise (sensory deprivation): every entry drawn i.i.d. from N(μ_c, σ_c²), where μ_c
  and σ_c are the per-channel mean and standard deviation (per feature for tabular inputs) of the whole normalised
  training split, computed once at the start of the fit (≈ 0 and 1 after the datamodule's normalisation). The paper
  says "random noise" without naming the distribution; Gaussian noise with the data's first two moments keeps the
  input scale the network sees. The draws come from a generator seeded by (run seed, rank, global step), so a resumed
  run draws what an uninterrupted one would.
- `label_permutation`: the labels y replaced by π(y), π a fixed random permutation of the K classes without fixed
  points (a derangement, so every class is affected), drawn once from the run seed and checkpointed. The paper calls
  this a deficit of "the last layer of the network": the classes are consistently renamed, not shuffled per sample
  (per-sample shuffling would be random labels, a memorisation task, not a relabelling). `y_clean` is not touched,
  so `train/acc_clean` stays the accuracy on the true classes and `train/acc` is against the labels trained on.

The deficit is a batch transform in `on_batch`, not a batch replacement (it does not take the exclusive
`replaces_batch` role): a batch-replacing strategy's `on_batch` runs first (see `strategies/step.py`), so the deficit
applies to the batch that is trained on, and it composes with any loss, weight, penalty or subset strategy. It returns
a new batch dict and never writes into the loader's tensors. The training augmentation (crop, flip) comes before it.

Defaults: kind `blur`, factor 4 (the paper's 32 → 8), unit `epochs`, window [0, 4). The paper trains ResNet-18 and
All-CNN on CIFAR-10 with SGD, learning rate 0.075 decayed by 0.97 after every epoch, weight decay 5e-4, and removes
the deficit at epochs between 0 and 140 (the critical period being the first few tens of epochs), then trains 160
more epochs; the default window scales "the first third of the run" to this repository's 8–20 epoch schedules. Set
`scheduler.name: exponential` with `scheduler.gamma: 0.97` for the paper's schedule.

When to use it: to study critical periods (how long an early deficit can last before the final accuracy suffers), or
as a controlled perturbation of the early phase in combination with another method (a robust loss, a sampler).
Cost: `blur` two resizes of the batch, `noise` one draw of its size, `vflip` and `label_permutation` one indexing
operation; nothing outside the window. No oracle information is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_whole

KINDS = ("blur", "vflip", "noise", "label_permutation")
UNITS = ("epochs", "steps")
NOISE_SALT = 7301  # seeds of the noise draws and of the permutation, apart from every other stream of the run
PERMUTATION_SALT = 7302


def blur(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Downsample (B, C, H, W) by `factor` (bilinear, antialiased) and upsample back to (H, W) (bilinear)."""
    if x.dim() != 4:
        raise ValueError(f"deficit: kind 'blur' needs image batches (B, C, H, W); got shape {tuple(x.shape)}.")
    h, w = x.shape[-2:]
    small = (h // factor, w // factor)
    if min(small) < 1:
        raise ValueError(f"deficit: factor = {factor} is larger than the image ({h}×{w}); it must be <= {min(h, w)}.")
    down = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)


def vflip(x: torch.Tensor) -> torch.Tensor:
    """The images upside down (rows reversed)."""
    if x.dim() < 3:
        raise ValueError(f"deficit: kind 'vflip' needs image batches (B, C, H, W); got shape {tuple(x.shape)}.")
    return x.flip(-2)


def derangement(k: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly drawn permutation of range(k) with no fixed point (rejection sampling; about e draws)."""
    while True:
        perm = torch.randperm(k, generator=generator)
        if not bool((perm == torch.arange(k)).any()):  # at set-up, on the host
            return perm


def channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (dim 1) mean and standard deviation over every other dimension, shaped (1, C, 1, ...)."""
    dims = [d for d in range(x.dim()) if d != 1]
    xf = x.float()
    mean = xf.mean(dim=dims, keepdim=True)
    std = xf.std(dim=dims, keepdim=True, correction=0)
    return mean[0:1], std[0:1]


@STRATEGIES.register("deficit")
class Deficit(Strategy):
    """Achille et al. 2019: blur, flip, noise or relabel the training batches of the window [start, end)."""

    state_attrs = ("permutation",)

    @property
    def needs(self) -> tuple[str, ...]:
        return {"noise": ("datamodule",), "label_permutation": ("num_classes",)}.get(self.params.kind, ())

    @dataclass
    class Params:
        kind: str = "blur"  # blur, vflip, noise or label_permutation
        start: int = 0  # first epoch (or step) of the window, included, counted from 0
        end: int = 4  # first epoch (or step) after the window, excluded; >= start (= start: no deficit)
        unit: str = "epochs"  # epochs (trainer.current_epoch) or steps (trainer.global_step)
        factor: int = 4  # blur: downsampling factor, >= 2 (paper: 32 -> 8 on CIFAR, factor 4)

        def __post_init__(self):
            if self.kind not in KINDS:
                raise ConfigError(f"deficit: kind = {self.kind!r} is not one of {', '.join(KINDS)}.", "kind")
            if self.unit not in UNITS:
                raise ConfigError(f"deficit: unit = {self.unit!r} is not one of {', '.join(UNITS)}.", "unit")
            if not (is_whole(self.start) and self.start >= 0):
                raise ConfigError(f"deficit: start = {self.start!r} must be an integer >= 0.", "start")
            if not (is_whole(self.end) and self.end >= self.start):
                raise ConfigError(f"deficit: end = {self.end!r} must be an integer >= start = {self.start!r} "
                                  "(end = start is the empty window: no deficit).", "end")
            if not (is_whole(self.factor) and self.factor >= 2):
                raise ConfigError(f"deficit: factor = {self.factor!r} must be an integer >= 2.", "factor")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.permutation: torch.Tensor | None = None  # label_permutation: y -> permutation[y], on the host
        self.seed = 0
        self._moments: tuple[torch.Tensor, torch.Tensor] | None = None  # noise: per-channel (mean, std)
        self._on_device: dict[str, torch.Tensor] = {}
        self._generators: dict[torch.device, torch.Generator] = {}

    # ---- the window ---------------------------------------------------------------------------------------------
    def active(self, epoch: int, step: int) -> bool:
        """Whether the training batch of `epoch` (trainer.current_epoch) and `step` (optimiser steps already taken)
        is in the window [start, end) of the configured unit."""
        t = epoch if self.params.unit == "epochs" else step
        return self.params.start <= t < self.params.end

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        trainer = cfg["trainer"]
        if params.end == params.start:
            return  # the empty window: a control run without deficit
        if params.unit == "epochs" and params.start >= trainer["epochs"]:
            raise ConfigError(
                f"start = {params.start} is not below trainer.epochs = {trainer['epochs']}: no epoch would train with "
                "the deficit. Lower start or train longer.", "start")
        max_steps = trainer.get("max_steps")
        if params.unit == "steps" and max_steps and params.start >= max_steps:
            raise ConfigError(
                f"start = {params.start} is not below trainer.max_steps = {max_steps}: no step would train with the "
                "deficit. Lower start or train longer.", "start")

    # ---- set-up -------------------------------------------------------------------------------------------------
    def prepare(self, seed: int, num_classes: int | None = None, train_x: torch.Tensor | None = None) -> None:
        """What the transform needs, from the run: its seed, K (label_permutation) and the training inputs (noise)."""
        self.seed = int(seed)
        self._on_device.clear()
        if self.params.kind == "label_permutation":
            if num_classes is None or num_classes < 2:
                raise ValueError(f"deficit: label_permutation needs the number of classes (>= 2); got {num_classes}.")
            if self.permutation is None or len(self.permutation) != num_classes:
                g = torch.Generator().manual_seed(epoch_seed(self.seed, 0, salt=PERMUTATION_SALT))
                self.permutation = derangement(num_classes, g)
        if self.params.kind == "noise" and train_x is not None:
            self._moments = channel_moments(train_x)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.check_against_trainer(trainer)
        cfg = getattr(pl_module, "cfg", None)
        seed = cfg.seed if cfg is not None and "seed" in cfg else torch.initial_seed()
        self.prepare(seed, getattr(pl_module, "num_classes", None))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.params.kind == "noise":  # the datamodule's tensors are on the training device from here on
            x = self.datamodule(trainer).train_tensors()["x"]
            self.prepare(self.seed, getattr(pl_module, "num_classes", None), x)

    # ---- the step -----------------------------------------------------------------------------------------------
    def _device_copy(self, name: str, value: torch.Tensor, device: torch.device) -> torch.Tensor:
        cached = self._on_device.get(name)
        if cached is None or cached.device != device:
            cached = self._on_device[name] = value.to(device)
        return cached

    def _generator(self, device: torch.device, step: int, rank: int) -> torch.Generator:
        g = self._generators.get(device)
        if g is None:
            g = self._generators[device] = torch.Generator(device=device)
        return g.manual_seed(epoch_seed(self.seed, step, salt=NOISE_SALT + 1009 * rank))

    def transform(self, batch: dict, step: int = 0, rank: int = 0) -> dict:
        """The batch with the deficit applied (a new dict; the input's tensors are not written)."""
        kind = self.params.kind
        out = dict(batch)
        x = batch["x"]
        if kind == "blur":
            out["x"] = blur(x, self.params.factor)
        elif kind == "vflip":
            out["x"] = vflip(x)
        elif kind == "noise":
            if self._moments is None:
                raise RuntimeError("deficit: kind 'noise' used before prepare() gave it the data's moments.")
            mean = self._device_copy("mean", self._moments[0], x.device)
            std = self._device_copy("std", self._moments[1], x.device)
            g = self._generator(x.device, step, rank)
            z = torch.randn(x.shape, generator=g, device=x.device, dtype=torch.float32)
            out["x"] = (z * std + mean).to(x.dtype)
        else:
            if self.permutation is None:
                raise RuntimeError("deficit: kind 'label_permutation' used before prepare() drew the permutation.")
            perm = self._device_copy("permutation", self.permutation, batch["y"].device)
            out["y"] = perm[batch["y"]]
        return out

    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        trainer = module.trainer
        on = self.active(trainer.current_epoch, trainer.global_step)
        self.log_step(module, "active", 1.0 if on else 0.0, len(batch["y"]))
        if not on:
            return batch
        return self.transform(batch, trainer.global_step, trainer.global_rank)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._on_device.clear()
