"""M-correction: a beta mixture on the per-sample losses drives dynamic bootstrapping (optionally with mixup).

Arazo, Ortego, Albert, O'Connor & McGuinness, "Unsupervised Label Noise Modeling and Loss Correction", ICML 2019
(arXiv 1904.11238); official code github.com/PaulAlbert31/LabelNoiseCorrection.

Once per epoch, from the end of epoch `start_epoch − 1` on (epochs counted from 0), one eval-mode pass over the
training split (`full_pass`, not augmented) gives every sample's cross-entropy l_i against its observed label. As in
the official code the losses are normalised with the 5th and 95th percentiles, ℓ̃ = (l − (p5 + 1e-5)) / (p95 − p5 −
1e-5 + 1e-6), values ≥ 1 set to 1 − 1e-3 and ≤ 0 to 1e-3; only the samples between the two percentiles are fitted
(outliers left out), with a two-component beta mixture (`beta_mixture.py`, weighted-moments EM, 10 iterations from
(α, β) = (1, 2), (2, 1) each epoch). Then

    w_i = P(noisy | ℓ̃_i),   the posterior of the component with the larger mean, clamped to [1e-4, 1 − 1e-4]

kept in a `PerSampleBuffer` (checkpointed). Beyond the loss where the posterior peaks it is held at its peak (the
official lookup table does `lookup[argmax:] = max`: the clean component's heavier tail must not make a very
high loss look clean again); the official code reads the posterior from a 100-bin table, this evaluates it
exactly. The next epoch trains with dynamic bootstrapping, the prediction detached as in the official code:

    hard:  ℓ_i = −(1 − w_i) log p_{y_i} − w_i log p_{argmax p_i}
    soft:  ℓ_i = −Σ_k ((1 − w_i) y_ik + w_i p_ik) log p_ik

and, as the official runs do (RunScripts.sh: `--reg-term 1.0`), the penalty of Tanaka et al. (2018) that keeps the
mean prediction of a batch from collapsing onto one class, `reg_term · Σ_c (1/K) log((1/K) / p̄_c)`, p̄ the batch's
mean softmax, added only while bootstrapping (the official code adds it only there). Before the first fit w = 0:
plain cross-entropy (or plain mixup), the official warm-up.

Mixup (`mixup_alpha` > 0; the paper's best variant M-DYR-H uses α = 32): the batch is replaced by
x̃ = λ x + (1 − λ) x[π], λ ~ Beta(α, α) once per step and π a random permutation of the batch, both drawn on the
device from the global torch RNG (whose state the checkpoint keeps). The predictions that bootstrapping needs come
from an extra forward pass on the un-mixed batch in training mode and without gradient (the official code does the
same), and the loss of mixed sample i is the cross-entropy against the mixed target

    t̃_i = λ t_i + (1 − λ) t_{π(i)},   t_i = (1 − w_i) onehot(y_i) + w_i q_i,   q_i = onehot(argmax p_i) or p_i

which equals the official λ[(1 − w_i) CE(y_i) + w_i CE(q_i)] + (1 − λ)[same for π(i)] because cross-entropy is
linear in its target. The module's `train/acc` is then measured on the mixed inputs against y.

Defaults and their sources: bootstrap = hard and mixup_alpha = 32 (M-DYR-H, the official script's first and the
paper's best variant at 80 % noise on CIFAR-10); reg_term = 1 (official scripts); max_iters = 10 (official);
start_epoch = 5: the official code warms up for 105 of 300 epochs (the first LR milestone + 5); 5 is about a third
of this repository's 8–20 epoch schedules (set 105 for the paper's). `mixup_alpha: 0` gives the paper's DYR-H/DYR-S
(no mixup).

Differences from the official code: w_i is computed once per epoch from the end-of-epoch network (the official code
recomputes each batch's loss in eval mode at every step and reads the posterior of the last fitted mixture); the
pass is not augmented (the official tracking loader augments).

When to use it: symmetric or heavy noise (the paper reports it at 20–90 % on CIFAR), where clean and noisy samples
have well-separated losses after a warm-up. Cost: one forward pass over the training split per epoch plus a
float64 EM on the host; with mixup one extra forward pass per step. Nothing oracle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.full_pass import full_pass
from robustlearn.strategies.noisy.beta_mixture import BetaMixture
from robustlearn.strategies.noisy.targets import one_hot, soft_cross_entropy
from robustlearn.strategies.params import is_number, is_whole

W_CLAMP = 1e-4  # w clamped to [W_CLAMP, 1 - W_CLAMP] (official)
PEAK_GRID = 1000  # grid on [0, 1] where the posterior's peak is located


def bootstrap_targets(y: torch.Tensor, pred_logits: torch.Tensor, w: torch.Tensor, kind: str) -> torch.Tensor:
    """(1 − w) onehot(y) + w q, q = onehot(argmax p) (`hard`) or p (`soft`), p = softmax(pred_logits) detached."""
    pred_logits = pred_logits.detach().float()
    k = pred_logits.shape[1]
    q = one_hot(pred_logits.argmax(1), k) if kind == "hard" else torch.softmax(pred_logits, dim=1)
    w = w.float()[:, None]
    return (1.0 - w) * one_hot(y, k) + w * q


def noise_posterior(losses: torch.Tensor, max_iters: int = 10) -> tuple[torch.Tensor, BetaMixture]:
    """w_i = P(high-loss component | l_i) for every sample (same device as `losses`), and the fitted mixture.

    The official normalisation (5th/95th percentiles, fit on the samples between them) and monotone tail."""
    loss = losses.detach().double().cpu().numpy()
    hi, lo = np.percentile(loss, 95), np.percentile(loss, 5)
    fit_on = loss[(loss <= hi) & (loss >= lo)]
    lo = lo + 1e-5

    def normalise(v: np.ndarray) -> np.ndarray:
        v = (v - lo) / (hi - lo + 1e-6)
        return np.where(v >= 1.0, 1.0 - 1e-3, np.where(v <= 0.0, 1e-3, v))

    mixture = BetaMixture().fit(normalise(fit_on), max_iters)
    noisy = mixture.high_component()
    grid = np.linspace(0.0, 1.0, PEAK_GRID)
    peak = grid[int(np.argmax(mixture.posterior(grid, noisy)))]
    w = mixture.posterior(np.minimum(normalise(loss), peak), noisy)
    w = np.clip(w, W_CLAMP, 1.0 - W_CLAMP)
    return torch.as_tensor(w, dtype=torch.float32, device=losses.device), mixture


def class_balance_penalty(logits: torch.Tensor) -> torch.Tensor:
    """Σ_c (1/K) log((1/K) / p̄_c), p̄ the batch's mean softmax: KL(uniform ‖ p̄) (Tanaka et al. 2018)."""
    mean_p = torch.softmax(logits.float(), dim=1).mean(0)
    k = mean_p.numel()
    return (math.log(1.0 / k) - torch.log(mean_p)).sum() / k


@STRATEGIES.register("m_correction")
class MCorrection(Strategy):
    """M-correction (Arazo et al. 2019): beta mixture on the losses, dynamic bootstrapping, optional mixup."""

    needs = ("datamodule", "num_classes")

    provides_loss = True
    state_attrs = ("noisy_prob", "active", "mixture")

    @dataclass
    class Params:
        bootstrap: str = "hard"  # hard or soft dynamic bootstrapping (official M-DYR-H: hard)
        start_epoch: int = 5  # first epoch trained with bootstrapping, >= 1 (official: 105 of 300)
        mixup_alpha: float = 32.0  # mixup Beta(α, α), >= 0; 0: no mixup (official M-DYR-H: 32)
        reg_term: float = 1.0  # weight of the class-balance penalty while bootstrapping, >= 0 (official scripts: 1)
        max_iters: int = 10  # EM iterations per fit, >= 1 (official: 10)

        def __post_init__(self):
            if self.bootstrap not in ("hard", "soft"):
                raise ConfigError(f"m_correction: bootstrap = {self.bootstrap!r}; allowed: hard, soft.", "bootstrap")
            if not (is_whole(self.start_epoch) and self.start_epoch >= 1):
                raise ConfigError(f"m_correction: start_epoch = {self.start_epoch!r} must be an integer >= 1 "
                                  "(epochs of cross-entropy before the first mixture fit).", "start_epoch")
            if not (is_number(self.mixup_alpha) and self.mixup_alpha >= 0):
                raise ConfigError(f"m_correction: mixup_alpha = {self.mixup_alpha!r} must be a number >= 0 "
                                  "(0: no mixup).", "mixup_alpha")
            if not (is_number(self.reg_term) and self.reg_term >= 0):
                raise ConfigError(f"m_correction: reg_term = {self.reg_term!r} must be a number >= 0.", "reg_term")
            if not (is_whole(self.max_iters) and self.max_iters >= 1):
                raise ConfigError(f"m_correction: max_iters = {self.max_iters!r} must be an integer >= 1.",
                                  "max_iters")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.noisy_prob = PerSampleBuffer(fill=0.0)  # w_i; 0 until the first fit (cross-entropy)
        self.active = False  # True once a mixture was fitted: bootstrapping (and the penalty) on
        self.mixture: dict | None = None  # the last fit's parameters, for the record

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        if params.start_epoch >= epochs:
            raise ConfigError(
                f"start_epoch = {params.start_epoch} is not below trainer.epochs = {epochs}: no epoch would "
                "bootstrap and the run would be plain cross-entropy. Lower start_epoch or train longer.",
                "start_epoch")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_against_trainer(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.noisy_prob.ensure(trainer)

    # ---- the step -----------------------------------------------------------------------------------------
    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        if self.params.mixup_alpha <= 0:
            return batch
        x = batch["x"]
        n = len(batch["index"])
        if self.active:  # predictions on the un-mixed batch (train mode, no gradient: as the official code)
            with torch.no_grad():
                pred = module(x)
        else:
            pred = None
        alpha = torch.full((), float(self.params.mixup_alpha), device=x.device)
        lam = torch.distributions.Beta(alpha, alpha, validate_args=False).sample()  # no host check of alpha
        perm = torch.randperm(n, device=x.device)
        out = dict(batch)
        out["x"] = lam.to(x.dtype) * x + (1.0 - lam).to(x.dtype) * x[perm]
        out["mixup_lam"] = lam.expand(n)
        out["mixup_perm"] = perm
        if pred is not None:
            out["mixup_pred"] = pred.detach()
        return out

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        y = batch["y"]
        if self.active:
            w = self.noisy_prob[batch["index"]]
            pred = batch.get("mixup_pred", logits)
            targets = bootstrap_targets(y, pred, w, self.params.bootstrap)
        else:
            targets = one_hot(y, logits.shape[1])
        if "mixup_lam" in batch:
            lam = batch["mixup_lam"].float()[:, None]
            targets = lam * targets + (1.0 - lam) * targets[batch["mixup_perm"]]
        return soft_cross_entropy(logits, targets)

    def penalty(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor | None:
        if not self.active or self.params.reg_term == 0:
            return None
        return self.params.reg_term * class_balance_penalty(logits)

    # ---- once per epoch -----------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active:  # the w this epoch trained with
            w = self.noisy_prob.values
            self.log_metric(pl_module, "w_mean", float(w.mean()))
            self.log_metric(pl_module, "noisy_share", float((w > 0.5).float().mean()))
        epoch = trainer.current_epoch
        if epoch + 1 < self.params.start_epoch or epoch + 1 >= trainer.max_epochs:
            return
        dm = self.datamodule(trainer)
        logits = full_pass(pl_module, dm)
        y = dm.train_tensors()["y"].to(logits.device)
        losses = F.cross_entropy(logits[:, : pl_module.num_classes], y, reduction="none")
        w, mixture = noise_posterior(losses, self.params.max_iters)
        self.noisy_prob.values = w.to(self.noisy_prob.dtype)
        self.active = True
        noisy = mixture.high_component()
        self.mixture = {**mixture.state_dict(), "noisy": noisy}
        self.log_metric(pl_module, "clean_mean", float(mixture.means[1 - noisy]))
        self.log_metric(pl_module, "noisy_mean", float(mixture.means[noisy]))
        self.log_metric(pl_module, "noisy_weight", float(mixture.weights[noisy]))
