"""CAL: covariance-assisted learning, a second-order correction of peer-regularised cross-entropy.

Zhu, Liu & Liu, "A Second-Order Approach to Learning with Instance-Dependent Label Noise", CVPR 2021; official code
UCSC-REAL/CAL (`lossfuncs/peerloss.py`: `PeerLossRegCE`, `CrossEntropyStableCALMultiple`; `models/peerreg_CAL.py`: the
sieve; `experiments/exptPeerReg.py`: T and the loss means; `run_exptPRLD_C10_CAL.py`: the two runs and their
schedules).

The paper's protocol is two trainings; here both run inside one fit, in two stages, with p = softmax(z):

1. **Sieve** (epochs [0, T₁)): peer-regularised cross-entropy against the square-root prior of the noisy labels
   (the official CIFAR-10 phase 1, `lossfunc: crossentropy`, `is_peerloss`):

       l_i = -log(p_{ỹ_i} + 1e-8) - alpha_sieve(e) * sum_k q_k log(p_k + 1e-5),   q ∝ sqrt(share of noisy label k)

   and in the last stage-1 epoch, sample by sample in training mode before its update (official `is_check_loss_dist`
   at epoch 65), the sieve: ŷ_i = ỹ_i where -log(p_ỹ + 1e-8) - mean_k(-log(p_k + 1e-8)) < -8 (the label is far
   cheaper than the average label: kept), otherwise ŷ_i = argmax_k p_k. Every sample gets weight 1 (official).
   From the sieve: the estimated transition T̂[i, j] = #(ŷ = i, ỹ = j) / #(ŷ = i) and the prior P(ŷ = i).
2. **CAL** (epochs [T₁, T)): a new network from fresh initial weights, a reset optimiser and its own learning-rate
   schedule (`restart`), trained with

       loss = mean_i [-log(p_{ỹ_i} + 1e-8) - alpha_cal(e) * sum_k P̃_k log(p_k + 1e-5)] - C,
       C = sum_c P(ŷ = c) sum_j (1 / m_c) sum_{i in batch: ŷ_i = c} (1[ỹ_i = j] - T̂[c, j]) (ℓ_ij - L̄_cj),

   with P̃ the prior of the noisy labels, ℓ_ij = -log(p_j(x_i) + 1e-5), m_c the batch's samples with ŷ = c (at least
   1) and L̄_cj the mean of ℓ_·j over the samples with ŷ = c in the previous epoch (0 in the first CAL epoch). C is
   the covariance between the label noise (1[ỹ = j] - T̂) and the loss given the sieved class, the second-order term
   the peer-regularised loss leaves biased under instance-dependent noise. A sample counts in C (and in m_c, L̄) when
   T̂[ŷ_i, ỹ_i] < 1, the official `T_mat_indicator`.

Schedules (official, 100 epochs each): alpha by `SegAlpha` with alpha_list [0, α, α], milestones [10, 40, 80]:
alpha(e) = α · clip((e - 10) / 30, 0, 1), α = 2 in the sieve run and 1 in the CAL run. The sieve is read in epoch
65, so the sieve run's 66 epochs and the CAL run's 100 split a run here as T₁ = round(66/166 · T) (`stage1_share`
0.4); the sieve stage follows the first 66 % of its 100-epoch alpha plan, the CAL stage all of its plan, both scaled
to their epochs. Defaults: alpha_sieve 2, alpha_cal 1, threshold 8 (official).

Departures: the official CAL run reads T from the sieve file of a separate run; here the same network's sieve is read
and the network then restarted, which is the same protocol. L̄ is the mean over the samples the epoch trained on
(the official code divides by the split's count: the same when every sample is seen once per epoch). Under several
ranks, the sieve buffer and the epoch sums are merged across ranks. CAL reads noisy labels only: practical, no oracle.

Logged: `cal/stage` (1, 2; the best-validation epoch is chosen in stage 2, the network the method delivers),
`cal/alpha`, `cal/covariance` (C, per-step epoch mean, stage 2), and at the boundary `cal/sieve_kept` (share whose
noisy label the sieve kept). `kept_mask()` is that set, for diagnostics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.noisy.cores2 import all_label_losses
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.strategies.restart import follow_stage, reinitialize_network, reset_optimizer, restart_schedule
from robustlearn.tuning.space import Float

CE_EPS, REG_EPS = 1e-8, 1e-5  # official CrossEntropyLossStable and the regulariser / CAL term
SIEVE_SHARE = 0.66  # the sieve run is read at epoch 65: its first 66 of 100 epochs
RESTART_SALT = 5113  # the stream of the CAL network's initial weights: (run seed, boundary epoch, this salt)


def seg_alpha(epoch: int, plan_epochs: float, alpha: float) -> float:
    """Official `SegAlpha` (alpha_list [0, α, α], milestones [10, 40, 80] of 100) scaled to a `plan_epochs` plan."""
    start, end = 0.1 * plan_epochs, 0.4 * plan_epochs
    return alpha * min(max((epoch - start) / max(end - start, 1e-12), 0.0), 1.0)


def sieve_labels(logits: torch.Tensor, y: torch.Tensor, threshold: float) -> torch.Tensor:
    """ŷ (B,): the noisy label where -log(p_y) - mean_k(-log p_k) < -threshold (eps 1e-8), else the prediction."""
    nll = all_label_losses(logits, CE_EPS)
    keep = nll.gather(1, y[:, None]).squeeze(1) - nll.mean(1) < -threshold
    return torch.where(keep, y, logits.argmax(1))


def sieve_estimates(sieved: torch.Tensor, y: torch.Tensor, k: int,
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(T̂ (K, K), P(ŷ) (K,)) from the sieve's labels (-1: not sieved, left out) and the noisy labels."""
    valid = sieved >= 0
    pairs = torch.zeros(k, k, dtype=dtype, device=y.device)
    pairs.index_put_((sieved[valid], y[valid]), torch.ones(int(valid.sum()), dtype=dtype, device=y.device),
                     accumulate=True)
    rows = pairs.sum(1)
    return pairs / rows.clamp_min(1.0)[:, None], rows / rows.sum().clamp_min(1.0)


def covariance_term(ell: torch.Tensor, y: torch.Tensor, sieved: torch.Tensor, transition: torch.Tensor,
                    prior: torch.Tensor, loss_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C, the counted mask (B,), the sieved class (B,)) for losses `ell` (B, K) = -log(p + 1e-5)."""
    valid = sieved >= 0
    c = sieved.clamp_min(0)
    counted = (valid & (transition[c, y] < 1.0)).to(ell.dtype)  # official T_mat_indicator
    noise = (F.one_hot(y, ell.shape[1]).to(ell.dtype) - transition[c].to(ell.dtype)) * valid[:, None].to(ell.dtype)
    centred = (ell - loss_mean[c].to(ell.dtype)) * counted[:, None]
    m = torch.zeros(len(prior), dtype=ell.dtype, device=ell.device).index_add_(0, c, counted).clamp_min(1.0)
    return ((prior[c].to(ell.dtype) / m[c]) * (noise * centred).sum(1)).sum(), counted, c


@STRATEGIES.register("cal")
class CAL(Strategy):
    """CAL (Zhu, Liu & Liu 2021): a sieve, then peer-regularised CE minus the noise-loss covariance, new network."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper's values lie inside
    search_space = {"alpha_cal": Float(0.1, 2.0), "alpha_sieve": Float(0.5, 4.0)}

    provides_loss = True
    needs = ("datamodule", "build_network")
    state_attrs = ("stage", "sieved", "transition", "class_prior", "loss_mean", "kept")

    @dataclass
    class Params:
        stage1_share: float = 0.4  # share of trainer.epochs in the sieve stage (official 66 of 166 epochs)
        stage1_epochs: int | None = None  # sieve-stage epochs; null: max(1, round(stage1_share · trainer.epochs))
        alpha_sieve: float = 2.0  # regulariser weight of the sieve stage, once ramped (official 2)
        alpha_cal: float = 1.0  # regulariser weight of the CAL stage, once ramped (official 1)
        threshold: float = 8.0  # the sieve keeps ỹ where its loss is this far below the mean label loss (official 8)

        def __post_init__(self):
            if not (is_number(self.stage1_share) and 0 < self.stage1_share < 1):
                raise ConfigError(f"cal: stage1_share = {self.stage1_share!r} must be a number in (0, 1).",
                                  "stage1_share")
            if self.stage1_epochs is not None and not (is_whole(self.stage1_epochs) and self.stage1_epochs >= 1):
                raise ConfigError(f"cal: stage1_epochs = {self.stage1_epochs!r} must be an integer >= 1 or null.",
                                  "stage1_epochs")
            for key in ("alpha_sieve", "alpha_cal", "threshold"):
                if not (is_number(getattr(self, key)) and getattr(self, key) >= 0):
                    raise ConfigError(f"cal: {key} = {getattr(self, key)!r} must be a number >= 0.", key)

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.stage = 1
        self.sieved = PerSampleBuffer(dtype=torch.long, fill=-1)  # ŷ of each sample (-1: not sieved)
        self.transition: torch.Tensor | None = None  # T̂ (K, K)
        self.class_prior: torch.Tensor | None = None  # P(ŷ) (K,)
        self.loss_mean: torch.Tensor | None = None  # L̄ (K, K) of the previous epoch
        self.kept: torch.Tensor | None = None  # (N,) bool: the sieve kept the noisy label
        self.noisy_prior: torch.Tensor | None = None  # P̃ (K,)
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg.get("trainer", {}).get("epochs", 0)
        if epochs and cls.split(params, epochs) >= epochs:
            raise ConfigError(f"the sieve stage takes {cls.split(params, epochs)} of trainer.epochs = {epochs}: no "
                              "epoch would train CAL. Lower stage1_epochs or train longer (at least 2 epochs).",
                              "stage1_epochs" if params.stage1_epochs is not None else "stage1_share")

    @staticmethod
    def split(params, epochs: int) -> int:
        """T₁, the sieve-stage epochs of a run of `epochs` epochs."""
        if params.stage1_epochs is not None:
            return int(params.stage1_epochs)
        return max(1, int(math.floor(params.stage1_share * epochs + 0.5)))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        epochs = int(trainer.max_epochs or 1)
        self.t1 = self.split(self.params, epochs)
        self.epochs = epochs
        dm = self.datamodule(trainer)
        y = dm.train_tensors()["y"].detach().to("cpu", torch.long)
        share = torch.bincount(y, minlength=dm.num_classes).float()
        share = share / share.sum()
        device = trainer.strategy.root_device
        self.noisy_prior = share.to(device)
        self.sqrt_prior = (share.sqrt() / share.sqrt().sum()).to(device)
        self.sieved.ensure(trainer)

    def alpha(self, epoch: int) -> float:
        if self.stage == 1:
            return seg_alpha(epoch, self.t1 / SIEVE_SHARE, self.params.alpha_sieve)
        return seg_alpha(epoch - self.t1, self.epochs - self.t1, self.params.alpha_cal)

    # ---- the step -----------------------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        ce = all_label_losses(logits, CE_EPS).gather(1, batch["y"][:, None]).squeeze(1)
        prior = self.sqrt_prior if self.stage == 1 else self.noisy_prior
        regulariser = -(all_label_losses(logits, REG_EPS) * prior.to(logits.device)).sum(1)
        return ce - self.alpha(module.trainer.current_epoch) * regulariser

    def penalty(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor | None:
        y, index = batch["y"], batch["index"]
        if self.stage == 1:
            if module.trainer.current_epoch == self.t1 - 1:  # the sieve, before this step's update
                self.sieved.update(index, sieve_labels(logits.detach(), y, self.params.threshold))
            return None
        ell = all_label_losses(logits, REG_EPS)
        term, counted, c = covariance_term(ell, y, self.sieved[index], self.transition, self.class_prior,
                                           self.loss_mean)
        k = ell.shape[1]
        if self._sums is None:
            self._sums = torch.zeros(k, k, device=ell.device)
            self._counts = torch.zeros(k, device=ell.device)
        self._sums.index_add_(0, c, ell.detach() * counted[:, None])
        self._counts.index_add_(0, c, counted.detach())
        self.log_step(module, "covariance", term.detach(), len(y))
        return -term

    # ---- the stages ---------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sieved.ensure(trainer)
        if self.stage == 1 and trainer.current_epoch == 0 and trainer.global_step == 0:  # a new run
            reset_optimizer(trainer, pl_module)
            restart_schedule(trainer, pl_module, 0, self.t1)
            return
        start, length = (0, self.t1) if self.stage == 1 else (self.t1, self.epochs - self.t1)
        for config in trainer.lr_scheduler_configs[:1]:  # resumed: the restored schedule re-bound to its stage
            follow_stage(config.scheduler, trainer, start, length)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sums = self._counts = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.log_metric(pl_module, "stage", float(self.stage))
        self.log_metric(pl_module, "alpha", self.alpha(epoch))
        if self.stage == 2 and self._sums is not None:
            sums, counts = self._sums, self._counts
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(sums)
                dist.all_reduce(counts)
            self.loss_mean = sums / counts.clamp_min(1.0)[:, None]
        if self.stage == 1 and epoch == self.t1 - 1:
            self.enter_cal(trainer, pl_module)

    def enter_cal(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """T̂ and P(ŷ) from the sieve, then a new network, optimiser and schedule for the CAL stage."""
        self.sieved.sync(trainer)
        y = self.datamodule(trainer).train_tensors()["y"].to(self.sieved.values.device)
        sieved = self.sieved.values
        self.transition, self.class_prior = sieve_estimates(sieved, y, len(self.noisy_prior))
        self.loss_mean = torch.zeros_like(self.transition)  # official: zeros before the first CAL epoch
        self.kept = sieved == y
        self.log_metric(pl_module, "sieve_kept", self.kept.float().mean())
        seed = int(pl_module.cfg.seed) if hasattr(pl_module, "cfg") else torch.initial_seed()
        reinitialize_network(pl_module, epoch_seed(seed, self.t1, salt=RESTART_SALT))
        reset_optimizer(trainer, pl_module)
        restart_schedule(trainer, pl_module, self.t1, self.epochs - self.t1)
        self.stage = 2

    def kept_mask(self) -> torch.Tensor | None:
        """The samples whose noisy label the sieve kept (None before the sieve)."""
        return self.kept
