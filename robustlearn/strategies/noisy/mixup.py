"""mixup.

Zhang, Cisse, Dauphin & Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018; official code
facebookresearch/mixup-cifar10 (`train.py`: `mixup_data`, `mixup_criterion`).

Each training batch is replaced by the convex combinations of its own samples and a random permutation of them:

    lam ~ Beta(alpha, alpha)  (one per batch; lam = 1 where alpha = 0),   pi a uniform permutation of the batch
    x_i <- lam x_i + (1 - lam) x_pi(i),     loss_i = lam l(z_i, y_i) + (1 - lam) l(z_i, y_pi(i))

The batch carries the mixed targets (`y_b` = y[pi], `lam`, `index_b` = index[pi]; see the batch contract in
docs/design.md), and the run's loss is computed for both targets by whichever loss the run trains with (CE, GCE,
SCE, ...), so mixup composes with every loss strategy, with presampling and with selection. It transforms the batch
in config order after a batch replacement (a presampled batch is mixed within itself; its importance weights stay
with the first sample of each pair). Training metrics on a mixed batch follow the official code: `train/acc` is
lam * [pred = y] + (1 - lam) * [pred = y_b], `train/acc_clean` and `train/memorized` likewise, and `train/mixed`
is the share of training samples whose inputs were mixed; validation and test are never mixed.

lam and pi come from a generator seeded by (run seed, global step), so a resumed run mixes what an uninterrupted one
would, and no draw reads the device.

Defaults: alpha = 1 (the official code's default and the paper's CIFAR-10 setting; the paper uses 0.2 on ImageNet,
and its label-noise experiments alpha in {8, 32}).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number
from robustlearn.tuning.space import Float

_SALT = 7177


def mix(batch: dict, lam: float, perm: torch.Tensor) -> dict:
    """The batch mixed with its permutation `perm` at weight `lam` (a float): x, and the mixed targets."""
    out = dict(batch)
    x = batch["x"]
    perm = perm.to(x.device, non_blocking=True)
    out["x"] = lam * x + (1.0 - lam) * x[perm]
    out["y_b"] = batch["y"][perm]
    out["index_b"] = batch["index"][perm]
    if "y_clean" in batch:
        out["y_clean_b"] = batch["y_clean"][perm]  # for the training metrics only
    out["lam"] = torch.full((), lam, dtype=torch.float32).to(x.device, non_blocking=True)
    return out


def mix_draw(n: int, step: int, salt: int, alpha: float, keep_larger: bool = False) -> tuple[float, torch.Tensor]:
    """(lam, pi) of training step `step`: lam ~ Beta(alpha, alpha) (1 where alpha = 0; max(lam, 1 - lam) with
    `keep_larger`, as ELR+, DivideMix and PES-semi) as the ratio of two Gamma(alpha) draws of Python's generator, and a
    permutation of n from a CPU torch generator, both seeded by the run's seed, the step and `salt` alone: a resumed
    run draws what an uninterrupted one would, and nothing reads the device (no tensor is read to the host)."""
    seed = epoch_seed(torch.initial_seed(), step, salt=salt)
    lam = 1.0
    if alpha > 0:
        rng = random.Random(seed)
        a, b = rng.gammavariate(alpha, 1.0), rng.gammavariate(alpha, 1.0)
        lam = a / (a + b) if a + b > 0 else 0.5
        if keep_larger:
            lam = max(lam, 1.0 - lam)
    return lam, torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@STRATEGIES.register("mixup")
class Mixup(Strategy):
    """mixup (Zhang et al. 2018): train on lam x_i + (1 - lam) x_pi(i) with loss lam l(y_i) + (1 - lam) l(y_pi(i))."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"alpha": Float(0.1, 32.0, log=True)}

    @dataclass
    class Params:
        alpha: float = 1.0  # lam ~ Beta(alpha, alpha); 0: no mixing (official default 1)

        def __post_init__(self):
            if not (is_number(self.alpha) and self.alpha >= 0):
                raise ConfigError(f"mixup: alpha = {self.alpha!r} must be a number >= 0.", "alpha")

    def draw(self, batch_size: int, step: int) -> tuple[float, torch.Tensor]:
        """(lam, pi) of training step `step`, on the CPU, from the run's seed and the step alone."""
        return mix_draw(batch_size, step, _SALT + self.position, float(self.params.alpha))

    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        if "lam" in batch:
            raise ConfigError("mixup: the batch is mixed already (two mixing strategies in one run); keep one.",
                              "strategies")
        step = module.trainer.global_step if module._trainer is not None else 0
        lam, perm = self.draw(len(batch["y"]), step)
        return mix(batch, lam, perm)
