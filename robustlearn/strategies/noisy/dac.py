"""Deep abstaining classifier (DAC): train with an extra "abstain" output, drop the training samples it abstains on,
retrain a fresh network with cross-entropy on the rest; both stages inside one fit.

Thulasidasan, Bhattacharya, Bilmes, Chennupati & Mohd-Yusof, "Combating Label Noise in Deep Learning Using
Abstention", ICML 2019 (PMLR 97, arXiv 1905.10964); official code github.com/thulas/dac-label-noise (`dac_loss.py`,
driven by `train_dac.py`; the exclusion of samples in `utils/label_noise.py`).

**Stage 1, the DAC** (epochs 0 .. T₁ − 1). The network has K + 1 outputs (`extra_logits = 1`: the module builds it
so, and its metrics, validation and test read the first K); p = softmax over all K + 1 and p_{K+1} is the probability
of abstaining. Per sample (paper eq. 1)

    ℓ = (1 − p_{K+1}) · (−log(p_y / (1 − p_{K+1}))) + α · log(1 / (1 − p_{K+1}))

The first term is cross-entropy over the K classes, renormalised without the abstain class, scaled down as the
network abstains; the second charges α for abstaining. A sample whose label the network cannot fit (a flipped one) is
cheaper to abstain on than to fit, so abstention concentrates on the noisy labels. Computed in log space,
log(1 − p_{K+1}) = logsumexp(z_{1..K}) − logsumexp(z) and −log(p_y / (1 − p_{K+1})) = logsumexp(z_{1..K}) − z_y,
with log(1 − p_{K+1}) floored at log(1e-7): the official clamp p_{K+1} <= 1 − 1e-7, with the same value and
gradient (none through the clamped abstention).

α, as the official `dac_loss` sets it over the DAC run's epochs (epochs counted from 0, T₁ the stage-1 epochs, L the
warm-up epochs; the official code counts from 1 and warms up while `epoch <= learn_epochs`: L epochs as here):

- epochs e < L (warm-up): no abstention; the loss is cross-entropy over all K + 1 outputs (the abstain class is never
  a target, so it is pushed down), and every step updates an exponential moving average, weight μ = 0.05 (official
  `ewma_mu`), of the batch mean of (1 − p_{K+1})·(−log(p_y / (1 − p_{K+1}))), the first term of the loss;
- at the first step of epoch L the average takes that batch too and α₀ = average / `alpha_init_factor` (a small α, so
  that abstention can start at once);
- from then on α(e) = α₀ + (α_final − α₀)·(e − L)/(T₁ − 1 − L): one linear step per epoch, α_final at the last epoch
  of stage 1 (the official code adds (α_final − α₀)/(T₁ − L − 1) at the first step of each epoch). With one abstention
  epoch (L = T₁ − 1), α stays at α₀ (the official code divides by zero there).

α₀ and the running average are tensors on the training device (no read of the device in a step) and checkpointed.
Under DDP each rank averages its own batches; α₀ is all-reduced to the ranks' mean when it is set.

**The boundary** (end of epoch T₁ − 1, after its validation; `on_train_epoch_end`, an epoch-level host decision):

1. the whole training split is scored once in eval mode, without augmentation (`full_pass`), and the samples whose
   argmax over the K + 1 outputs is the abstain class are dropped: the rest is the training subset for every later
   epoch (`datamodule.set_train_subset`; all of them abstained: the run fails, saying so);
2. the module's network gets fresh initial weights (`restart.reinitialize_network`: `module.build_network()` drawn
   from a stream seeded by (run seed, T₁), copied in place), its optimiser state is emptied and its hyperparameters
   reset (`restart.reset_optimizer`), and the learning-rate schedule starts again over the T − T₁ epochs of stage 2
   (`restart.restart_schedule`);
3. the loss becomes plain cross-entropy over the K class outputs; the abstain output is ignored from then on.

**Stage 2** (epochs T₁ .. T − 1): CE(z_{1..K}, y) on the kept samples. The network keeps its K + 1 outputs; the
extra logit enters neither the loss nor the evaluation, so this trains exactly a K-output network (its row of the last
layer gets no gradient, and its initial values do not touch the K logits). The run's last epoch, what
`test_acc_last` reports, is this network, the one the paper evaluates. The stage-1 schedule also runs over its own
T₁ epochs (the official DAC run is a complete run with its own schedule): each stage is scheduled as a run of its
length (cosine and onecycle reach their floor at the end of each stage; multistep milestones count from the stage's
start; under a step or time budget each stage's schedule follows its epochs, not the budget).

State in the checkpoint (`state_attrs`): the running average and α₀, the stage, the dropped mask; the datamodule saves
the subset, the module the restarted network, optimiser and schedule. A run interrupted in either stage resumes
exactly (step-wise schedules are re-bound to their stage's progress in `on_train_start`).

Official protocol, as read in the official code (the README's "Training Protocol" for arbitrary noise: identify the
noise with the DAC, eliminate the abstained training samples, retrain on the cleaner set with regular cross-entropy):
stage 2 is a second run of `train_dac.py` without `--loss_fn` (plain `nn.CrossEntropyLoss`, a network with K outputs)
and with `--exclude_train_indices FILE` (the positions deleted from the training set): a new process, so a new network
(initialised from the same `--seed`), a new SGD optimiser and the step schedule of `networks/config.py` from epoch 1.
The repository has no script that writes the excluded positions; they come from the saved softmax scores over K + 1
(`--save_train_scores`, written after each epoch with the network still in train mode and the training transform;
`--eval_model`, eval mode) and the epoch is picked by the user (the README: "the best abstention occurs around epoch
75" of 200). Departures here: the positions are those abstained on at the end of stage 1 (no epoch is picked by
looking at abstention quality, which would need the clean labels), scored in eval mode without augmentation; the
fresh network is a new seeded draw rather than the DAC's own initial weights (same distribution).

Defaults and their sources (T = `trainer.epochs`):
- `stage1_share` = 0.5, T₁ = max(1, ⌊0.5·T⌋) (or `stage1_epochs` given as a number): the official protocol runs the
  same `train_dac.py` twice with the same `--epochs` (the README's runs are 200 epochs), so the two stages have equal
  length. 1.0: the DAC alone, no second stage (the network evaluated is then the DAC).
- `warmup_share` = 0.1, L = max(1, ⌊0.1·T₁⌋) (or `learn_epochs` given as a number): the README's two commands run
  `--learn_epochs 20` of `--epochs 200` (10 %); `train_dac.py` itself scales `learn_epochs` with the run's length
  (`--epoch-dilation` multiplies both). Its argparse default is 10 (with a default `--epochs` of 10, which never
  abstains). `learn_epochs: 20` with `stage1_epochs: 200` and `trainer.epochs: 400` is the README's DAC run followed
  by a retraining of the same length.
- `alpha_final` = 1.0, `alpha_init_factor` = 64: the official `train_dac.py` defaults (`--alpha_final`,
  `--alpha_init_factor`).
At least one stage-1 epoch must abstain (L < T₁), checked at config load.

Logged: `dac/stage` (1 or 2, the stage the epoch trained in), `dac/abstained` (stage 1, per step, its epoch mean: the
share of training samples whose argmax over the K + 1 outputs is the abstain class), `dac/alpha` (stage 1, per epoch;
0 during the warm-up), and from the boundary epoch on `dac/dropped` and `dac/dropped_share` (the samples dropped, and
their share of the training split). The strategy exposes the kept set (`kept_mask`), which `diagnostics` scores
against the true flip mask (`diagnostics/dac_kept_precision`, `..._recall`, and `subset_*`); the strategy itself never
reads the clean labels.

When to use it: symmetric or class-dependent noise, and structured noise (labels corrupted on an identifiable subset
of the inputs), with enough stage-1 epochs for abstention to start (it needs several epochs after the warm-up). Cost:
one more output, one eval pass over the training split at the boundary, no second network in memory. Reads no oracle
information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError, RunFailed
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.full_pass import full_pass
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.strategies.restart import follow_stage, reinitialize_network, reset_optimizer, restart_schedule

EWMA_MU = 0.05  # weight of the newest batch in the running first-term mean (official `ewma_mu`)
LOG_EPSILON = math.log(1e-7)  # floor of log(1 - p_abstain): the official clamp p_abstain <= 1 - 1e-7
RESTART_SALT = 4217  # the stream of the stage-2 network's initial weights: (run seed, boundary epoch, this salt)


def abstention_terms(logits: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log(1 − p_{K+1}) floored at log 1e-7, −log(p_y / (1 − p_{K+1}))) per sample, from the K + 1 `logits`."""
    z = logits[:, : k + 1]
    classes = torch.logsumexp(z[:, :k], dim=1)
    log_keep = (classes - torch.logsumexp(z, dim=1)).clamp(min=LOG_EPSILON)
    class_ce = classes - z.gather(1, y[:, None]).squeeze(1)
    return log_keep, class_ce


def combine(log_keep: torch.Tensor, class_ce: torch.Tensor, alpha) -> torch.Tensor:
    """(1 − p_{K+1})·(−log(p_y / (1 − p_{K+1}))) − α·log(1 − p_{K+1}) from the two terms."""
    return log_keep.exp() * class_ce - alpha * log_keep


def abstention_loss(logits: torch.Tensor, y: torch.Tensor, alpha, k: int) -> torch.Tensor:
    """Per-sample (1 − p_{K+1})·(−log(p_y / (1 − p_{K+1}))) + α·log(1 / (1 − p_{K+1})) (paper eq. 1)."""
    return combine(*abstention_terms(logits, y, k), alpha)


def alpha_at(epoch: int, alpha0, alpha_final: float, learn_epochs: int, epochs: int):
    """α in epoch `epoch` (from 0) of a DAC run of `epochs` epochs: 0 during the warm-up, then α₀ rising linearly to
    α_final at the run's last epoch."""
    if epoch < learn_epochs:
        return 0.0
    span = epochs - 1 - learn_epochs
    frac = 0.0 if span <= 0 else min(1.0, (epoch - learn_epochs) / span)
    return alpha0 + (alpha_final - alpha0) * frac


def abstained(logits: torch.Tensor, k: int) -> torch.Tensor:
    """True where the argmax over the K + 1 outputs is the abstain class (the (K+1)-th, index K)."""
    return logits[:, : k + 1].argmax(1) == k


def _share(share: float, n: int) -> int:
    return math.floor(share * n + 1e-9)  # 0.1 * 30 is 3.0000000000000004, 0.29 * 100 is 28.999999999999996


def stage_split(params, epochs: int) -> tuple[int, int]:
    """(T₁, L): the stage-1 epochs and the warm-up epochs for a run of `epochs` epochs."""
    t1 = params.stage1_epochs if params.stage1_epochs is not None else max(1, _share(params.stage1_share, epochs))
    warm = params.learn_epochs if params.learn_epochs is not None else max(1, _share(params.warmup_share, t1))
    return t1, warm


@STRATEGIES.register("dac")
class DAC(Strategy):
    """Deep abstaining classifier (Thulasidasan et al. 2019): an abstain output and the abstention loss, then a fresh
    network retrained with cross-entropy on the samples not abstained on."""

    needs = ("datamodule",)

    provides_loss = True
    sets_subset = True
    extra_logits = 1
    state_attrs = ("ewma", "alpha0", "stage", "dropped")

    @dataclass
    class Params:
        stage1_share: float = 0.5  # share of trainer.epochs in stage 1 (the DAC); 1: no retraining stage
        stage1_epochs: int | None = None  # stage-1 epochs; null: max(1, ⌊stage1_share · trainer.epochs⌋)
        warmup_share: float = 0.1  # share of stage 1 trained with CE before abstention (README: 20 of 200)
        learn_epochs: int | None = None  # warm-up epochs; null: max(1, ⌊warmup_share · stage-1 epochs⌋)
        alpha_final: float = 1.0  # α at the last stage-1 epoch, > 0 (official --alpha_final)
        alpha_init_factor: float = 64.0  # α₀ = running first-term mean / this, > 0 (official --alpha_init_factor)

        def __post_init__(self):
            if not (is_number(self.stage1_share) and 0 < self.stage1_share <= 1):
                raise ConfigError(f"dac: stage1_share = {self.stage1_share!r} must be a number in (0, 1] (the share "
                                  "of trainer.epochs that trains the DAC; 1: no retraining stage).", "stage1_share")
            if self.stage1_epochs is not None and not (is_whole(self.stage1_epochs) and self.stage1_epochs >= 1):
                raise ConfigError(f"dac: stage1_epochs = {self.stage1_epochs!r} must be an integer >= 1 or null "
                                  "(from stage1_share).", "stage1_epochs")
            if not (is_number(self.warmup_share) and 0 < self.warmup_share < 1):
                raise ConfigError(f"dac: warmup_share = {self.warmup_share!r} must be a number in (0, 1) (the share "
                                  "of stage 1 without abstention; learn_epochs: 0 for none).", "warmup_share")
            if self.learn_epochs is not None and not (is_whole(self.learn_epochs) and self.learn_epochs >= 0):
                raise ConfigError(f"dac: learn_epochs = {self.learn_epochs!r} must be an integer >= 0 or null (from "
                                  "warmup_share).", "learn_epochs")
            if not (is_number(self.alpha_final) and self.alpha_final > 0):
                raise ConfigError(f"dac: alpha_final = {self.alpha_final!r} must be a number > 0 (the cost of "
                                  "abstaining at the end of training).", "alpha_final")
            if not (is_number(self.alpha_init_factor) and self.alpha_init_factor > 0):
                raise ConfigError(f"dac: alpha_init_factor = {self.alpha_init_factor!r} must be a number > 0 "
                                  "(α₀ is the running loss divided by it).", "alpha_init_factor")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.ewma: torch.Tensor | None = None  # running mean of the first term, from the first step on
        self.alpha0: torch.Tensor | None = None  # α₀, set at the first abstention step
        self.stage = 1  # 2 from the boundary on
        self.dropped: torch.Tensor | None = None  # bool over the training split (CPU), set at the boundary

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        if params.stage1_epochs is not None and params.stage1_epochs > epochs:
            raise ConfigError(f"stage1_epochs = {params.stage1_epochs} is more than trainer.epochs = {epochs}. Lower "
                              "it (trainer.epochs: no retraining stage) or train longer.", "stage1_epochs")
        t1, warm = stage_split(params, epochs)
        if warm < t1:
            return
        if params.learn_epochs is not None:
            key, why = "learn_epochs", f"learn_epochs = {warm}"
        else:
            key = "stage1_epochs" if params.stage1_epochs is not None else "stage1_share"
            why = f"the warm-up of max(1, ⌊warmup_share · {t1}⌋) = {warm} epoch(s)"
        raise ConfigError(
            f"{why} is not below the {t1} stage-1 epoch(s) of trainer.epochs = {epochs} (stage1_share "
            f"{params.stage1_share}, stage1_epochs {params.stage1_epochs}): no epoch would abstain. Train longer, give "
            "stage 1 more epochs, or lower learn_epochs (0: abstain from the first step).", key)

    def split(self, epochs: int) -> tuple[int, int]:
        """(T₁, L) for a run of `epochs` epochs."""
        return stage_split(self.params, epochs)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_against_trainer(trainer)

    # ---- stage 1: the abstention loss -----------------------------------------------------------------------
    def alpha(self, epoch: int, epochs: int):
        """α in `epoch` of a run of `epochs` epochs: 0 (a float) during the warm-up, then a tensor on the device."""
        if self.alpha0 is None:
            return 0.0
        t1, warm = self.split(epochs)
        return alpha_at(epoch, self.alpha0, self.params.alpha_final, warm, t1)

    def _update_ewma(self, log_keep: torch.Tensor, class_ce: torch.Tensor) -> None:
        current = (log_keep.exp() * class_ce).mean().detach()
        self.ewma = current if self.ewma is None else EWMA_MU * current + (1.0 - EWMA_MU) * self.ewma.to(current)

    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        k = getattr(module, "num_classes", logits.shape[1] - 1)  # the abstain output is the (K+1)-th
        z, y = logits.to(torch.promote_types(logits.dtype, torch.float32)), batch["y"]  # bf16/fp16 -> float32
        if self.stage == 2:  # the retrained network: plain cross-entropy over the K classes
            return F.cross_entropy(z[:, :k], y, reduction="none")
        self.log_step(module, "abstained", abstained(z, k).float().mean(), len(y))
        log_keep, class_ce = abstention_terms(z, y, k)
        self._update_ewma(log_keep, class_ce)
        trainer = module.trainer
        _, warm = self.split(trainer.max_epochs)
        if trainer.current_epoch < warm:
            return F.cross_entropy(z[:, : k + 1], y, reduction="none")
        if self.alpha0 is None:  # the first abstention step: α₀ from the running mean, this batch included
            self.alpha0 = self.ewma / self.params.alpha_init_factor
            if dist.is_available() and dist.is_initialized():  # one α₀ for every rank: the mean of theirs
                dist.all_reduce(self.alpha0)
                self.alpha0 = self.alpha0 / dist.get_world_size()
        return combine(log_keep, class_ce, self.alpha(trainer.current_epoch, trainer.max_epochs).to(z))

    # ---- the stages ---------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epochs = trainer.max_epochs
        t1, _ = self.split(epochs)
        if t1 >= epochs:  # the DAC alone: the run's own schedule
            return
        if self.stage == 1 and trainer.current_epoch == 0 and trainer.global_step == 0:  # a new run
            reset_optimizer(trainer, pl_module)  # the learning rate back at its start, then stage 1's schedule
            restart_schedule(trainer, pl_module, 0, t1)
            return
        start, length = (0, t1) if self.stage == 1 else (t1, epochs - t1)  # resumed: restored, re-bound to its stage
        for config in trainer.lr_scheduler_configs[:1]:
            follow_stage(config.scheduler, trainer, start, length)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch, epochs = trainer.current_epoch, trainer.max_epochs
        t1, _ = self.split(epochs)
        self.log_metric(pl_module, "stage", float(self.stage))  # the stage this epoch trained in
        if self.stage == 1:
            self.log_metric(pl_module, "alpha", float(self.alpha(epoch, epochs)))
            if epoch == t1 - 1 and t1 < epochs:
                self.enter_stage_two(trainer, pl_module, t1)
        if self.dropped is not None:
            n = int(self.dropped.sum())
            self.log_metric(pl_module, "dropped", float(n))
            self.log_metric(pl_module, "dropped_share", n / len(self.dropped))

    def enter_stage_two(self, trainer: pl.Trainer, pl_module: pl.LightningModule, t1: int) -> None:
        """Drop the samples abstained on, restart the network, its optimiser and schedule, and switch to CE."""
        dm = self.datamodule(trainer)
        k = getattr(pl_module, "num_classes", None)
        logits = full_pass(pl_module, dm)  # eval mode, not augmented, the whole training split
        dropped = abstained(logits, logits.shape[1] - 1 if k is None else k).cpu()  # once, at the boundary
        if trainer.world_size > 1:  # one decision for every rank: the first rank's
            dropped = trainer.strategy.broadcast(dropped, src=0)
        if bool(dropped.all()):
            raise RunFailed(f"dac: the DAC abstained on all {len(dropped)} training samples at the end of stage 1 "
                            f"(epoch {t1 - 1}); nothing is left to retrain on. Raise alpha_final (abstaining costs "
                            "more) or change the stage split.")
        self.dropped = dropped
        dm.set_train_subset(torch.nonzero(~dropped).squeeze(1) if bool(dropped.any()) else None)
        seed = int(pl_module.cfg.seed) if hasattr(pl_module, "cfg") else torch.initial_seed()
        reinitialize_network(pl_module, epoch_seed(seed, t1, salt=RESTART_SALT))
        reset_optimizer(trainer, pl_module)
        restart_schedule(trainer, pl_module, t1, trainer.max_epochs - t1)
        self.stage = 2

    def kept_mask(self) -> torch.Tensor | None:
        return None if self.dropped is None else ~self.dropped
