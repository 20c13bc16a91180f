"""InfoBatch: unbiased dynamic data pruning by loss, with the kept low-loss samples rescaled.

Qin, Wang, Zheng, Gu, Peng, Xu, Zhou, Shang, Sun, Xie & You, *InfoBatch: Lossless Training Speed Up by Unbiased
Dynamic Data Pruning*, ICLR 2024 (oral), arXiv 2303.04947; official code github.com/NUS-HPC-AI-Lab/InfoBatch.

Every sample's last training loss s_i is kept (a `PerSampleBuffer`, written in `on_train_batch_end` from the step's
unweighted per-sample losses, merged across DDP ranks with `sync` before the epoch's decision). At the end of each
epoch, for the next one:

    L = {i : s_i < mean_j s_j}                       the "well-learned" samples
    keep a uniformly random int((1 − r) |L|) of L;   the others of L are pruned from the next epoch
    w_i = 1 / (1 − r) for the kept members of L,     w_i = 1 for every other sample

so that E[Σ_{i kept} w_i ∇ℓ_i] = Σ_i ∇ℓ_i: the epoch's summed gradient is the full epoch's in expectation (exactly
when (1 − r)|L| is whole; `tests/test_data_selection.py` checks it statistically). Epoch e (counted from 0) is pruned
iff e ≥ 1 and e + 1 ≤ δ · epochs, as in the official sampler (its first epoch has no scores, its pass counter starts
at 1 and stops pruning after δ · epochs passes); the last (1 − δ) of training is on the full data with weights 1
("annealing"). An epoch is one pass over its kept set: |kept| / b steps. Samples never scored (a dropped last partial
batch under `trainer.compile`) are kept and left out of the mean.

Defaults (official code and paper): `ratio` r = 0.5, `delta` δ = 0.875. The official code clamps the kept share
1 − r to >= 0.1; here r <= 0.9 is required.

Learning-rate schedule. The official CIFAR example rebuilds `OneCycleLR` at every epoch with the pruned epoch's
length, positioned at e / epochs of the cycle: each epoch covers 1/epochs of the schedule whatever its length. That
is what this repository's schedules do by construction: `onecycle` is a function of training progress (epoch +
steps done / steps in this epoch) / epochs (`robustlearn/schedules.py`), and `cosine` / `multistep` count epochs. A
pruned run therefore follows the same learning-rate curve per epoch as the full run, in fewer steps; nothing is
rescaled and no step count is fixed in advance.

Cost and saving: the per-sample losses are those the step computes anyway (no extra forward pass); the epoch-level
decision sorts nothing (a mean and a random choice). It saves r · |L| / N of the steps of each pruned epoch: on the
synthetic smoke data the test measures the saved share of steps (docs/methods/data_selection.md); the paper claims
about 40 % of the total cost saved on CIFAR-10/100 at full accuracy, independent reproductions measured 25–28 %
wall-clock saved on CIFAR. When to use it: to cut training time at (nearly) no accuracy cost on clean data. On noisy
labels the kept set is biased towards high-loss samples, many of them mislabelled: pruning low-loss samples speeds
up memorisation of noise (it is not a noise-robust method). No oracle. `infobatch/kept` logs the share of the
split each epoch trained on, `infobatch/threshold` the mean loss the last decision used.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.params import is_number

_SALT = 7202


def infobatch_prune(scores: torch.Tensor, ratio: float, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One pruning decision: (kept positions, sorted; weights of the whole split; the mean threshold).

    `scores` holds the last loss of every sample (NaN where never scored: kept, weight 1, not in the mean). Runs on
    the CPU with `generator` (a CPU generator)."""
    s = scores.detach().to("cpu", torch.float64)
    seen = ~torch.isnan(s)
    threshold = float(s[seen].mean()) if bool(seen.any()) else float("nan")
    low = seen & (s < threshold)
    low_idx = torch.nonzero(low).squeeze(1)
    n_keep = int((1.0 - ratio) * len(low_idx))
    kept_low = low_idx[torch.randperm(len(low_idx), generator=generator)[:n_keep]]
    keep = ~low
    keep[kept_low] = True
    weights = torch.ones(len(s), dtype=torch.float32)
    weights[kept_low] = 1.0 / (1.0 - ratio)
    return torch.nonzero(keep).squeeze(1), weights, threshold


@STRATEGIES.register("infobatch")
class InfoBatch(Strategy):
    """Prune a share r of the below-mean-loss samples each epoch, rescale the kept ones by 1 / (1 − r)."""

    needs = ("datamodule",)

    sets_subset = True
    state_attrs = ("score", "boost")

    @dataclass
    class Params:
        ratio: float = 0.5  # share r of the below-mean-loss samples pruned per epoch, 0 < r <= 0.9 (official 0.5)
        delta: float = 0.875  # epochs e + 1 <= delta * epochs may be pruned, the rest train on all (official 0.875)

        def __post_init__(self):
            if not (is_number(self.ratio) and 0.0 < self.ratio <= 0.9):
                raise ConfigError(f"infobatch: ratio = {self.ratio!r} is out of range; it must be > 0 and <= 0.9.",
                                  "ratio")
            if not (is_number(self.delta) and 0.0 < self.delta <= 1.0):
                raise ConfigError(f"infobatch: delta = {self.delta!r} is out of range; it must be > 0 and <= 1.",
                                  "delta")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.score = PerSampleBuffer(fill=float("nan"))  # last loss; NaN: never scored
        self.boost = PerSampleBuffer(fill=1.0)  # this epoch's weight of each sample

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        if params.delta * epochs < 2:
            raise ConfigError(
                f"delta = {params.delta} with trainer.epochs = {epochs}: delta * epochs < 2, so no epoch would be "
                "pruned (epoch 0 never is). Raise delta or train longer.", "delta")

    def pruned(self, epoch: int, epochs: int) -> bool:
        """True where epoch `epoch` (from 0) of `epochs` trains on a pruned set."""
        return epoch >= 1 and epoch + 1 <= self.params.delta * epochs + 1e-9

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_against_trainer(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.score.ensure(trainer)
        self.boost.ensure(trainer)

    def weights(self, per_sample, logits, batch, weights, module):
        if self.boost.values is None:
            return weights
        return weights * self.boost[batch["index"]]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.score.update(outputs["batch"]["index"], outputs["per_sample"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = self.datamodule(trainer)
        current = dm.train_subset
        self.log_metric(pl_module, "kept", 1.0 if current is None else len(current) / dm.train_size)
        self.score.sync(trainer)
        following = trainer.current_epoch + 1
        if following >= trainer.max_epochs:
            return
        if not self.pruned(following, trainer.max_epochs):
            dm.set_train_subset(None)
            self.boost.values = torch.ones_like(self.boost.values)
            return
        g = torch.Generator().manual_seed(epoch_seed(dm.cfg.seed, following, salt=_SALT))
        keep, weights, threshold = infobatch_prune(self.score.values, self.params.ratio, g)
        dm.set_train_subset(keep)
        self.boost.values = weights.to(self.boost.values.device)
        self.log_metric(pl_module, "threshold", threshold)
