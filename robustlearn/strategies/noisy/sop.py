"""Sparse over-parameterisation (SOP) and SOP+.

Liu, Zhu, Qu & You, "Robust Training under Label Noise by Over-parameterization", ICML 2022; official code
shengliu66/SOP (`model/loss.py`, `overparametrization_loss`; `train.py` for the optimisers).

The label noise of sample i is modelled as a sparse term s_i = u_i^2 y_i - v_i^2 (1 - y_i), with a scalar u_i and a
vector v_i in R^K of per-sample trainable parameters (initialised N(0, 1e-8^2)), learnt by plain SGD with their own
learning rates beside the network. With y_i the one-hot noisy label and p_i = softmax(z_i):

    U_i = clamp(u_i^2 y_i, 0, 1)          V_i = clamp(v_i^2 (1 - y_i), 0, 1)
    q_i = clamp(p_i + U_i - sg(V_i), eps) / max(||.||_1, eps), clamped to [eps, 1]           (eps = 1e-4)
    loss_i = -sum_k y_ik log q_ik  +  sum_k (onehot(argmax z_i)_k + U_ik - V_ik - y_ik)^2

sg: no gradient (V learns from the second term only; U and the network from the first). The second term asks
U - V to explain the gap between the label and the network's hard prediction, so on a flipped sample v absorbs the
mass of the network's class and u the label's, and the cross-entropy of q no longer pushes p towards the noisy label.
The batch mean of loss_i is the official loss. Gradients flow through the clamps as in the official code (zero where a
clamp is active). Validation and test score the network's own logits.

SOP+ adds two terms of the official code:
- class balance, `ratio_balance` * (-(1/K) sum_k log clamp(mean_i q_ik, eps, 1)), a batch-level penalty;
- consistency, `ratio_consistency` * KL(sg(p_i) || softmax(z'_i)), z' the logits of a second augmented view of the
  same images (`datamodule.views`) run through the network whose loss it is.

Defaults: `lr_u` 1, `lr_v` 10, SGD without momentum or weight decay: the official README's CIFAR-100 symmetric
command (its asymmetric one: 0.1 and 100); SOP+'s `ratio_consistency` 0.9 and `ratio_balance` 0.1 are the official
CIFAR-100 config's. The paper's Table A.1 holds per-dataset values; none is given for Fashion-MNIST.

Departures, on purpose: u and v are a `PerSampleParameter` (stepped after the network's backward, gradients averaged
across DDP ranks so every rank holds the same u and v; the official code is single-GPU). The official SOP+ scores the
first view on the loader's augmentation and the second on AutoAugment; here the second is another draw of the run's
own augmentation (crop and flip), the only one the datamodule has.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number
from robustlearn.strategies.per_sample_params import PerSampleParameter
from robustlearn.tuning.space import Float

EPS = 1e-4  # the official code's eps


def sop_terms(logits: torch.Tensor, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(q, per-sample loss) of SOP for `logits` (B, K), labels `y` (B,), rows `u` (B, 1) and `v` (B, K)."""
    onehot = F.one_hot(y, logits.shape[1]).to(torch.float32)
    big_u = (u.float() ** 2 * onehot).clamp(0.0, 1.0)
    big_v = (v.float() ** 2 * (1.0 - onehot)).clamp(0.0, 1.0)
    p = torch.softmax(logits.float(), dim=1)
    q = (p + big_u - big_v.detach()).clamp_min(EPS)
    q = F.normalize(q, p=1, dim=1, eps=EPS).clamp(EPS, 1.0)
    hard = F.one_hot(logits.detach().argmax(1), logits.shape[1]).to(torch.float32)
    loss = -(onehot * torch.log(q)).sum(1) + ((hard + big_u - big_v - onehot) ** 2).sum(1)
    return q, loss


def balance_term(q: torch.Tensor) -> torch.Tensor:
    """-(1/K) sum_k log clamp(mean_i q_ik, eps, 1): the official SOP+ class-balance term."""
    mean = q.mean(0).clamp(EPS, 1.0)
    return -(torch.log(mean) / q.shape[1]).sum()


@STRATEGIES.register("sop")
class SOP(Strategy):
    """Sparse over-parameterisation (Liu et al. 2022): the noise as u^2 y - v^2 (1 - y), per-sample u, v by SGD."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"lr_u": Float(0.01, 10.0, log=True), "lr_v": Float(1.0, 1000.0, log=True)}

    provides_loss = True
    state_attrs = ("u", "v")

    @property
    def needs(self) -> tuple[str, ...]:
        return ("datamodule",) if self.params.ratio_consistency > 0 else ()  # the second view

    @dataclass
    class Params:
        lr_u: float = 1.0  # learning rate of u (official CIFAR-100 symmetric: 1; asymmetric 0.1)
        lr_v: float = 10.0  # learning rate of v (official CIFAR-100 symmetric: 10; asymmetric 100)
        init_std: float = 1e-8  # u, v ~ N(0, init_std^2) (official: 1e-8)
        ratio_consistency: float = 0.0  # weight of the two-view consistency KL (SOP+: 0.9)
        ratio_balance: float = 0.0  # weight of the class-balance term (SOP+: 0.1)

        def __post_init__(self):
            for key in ("lr_u", "lr_v"):
                value = getattr(self, key)
                if not (is_number(value) and value > 0):
                    raise ConfigError(f"sop: {key} = {value!r} must be a number > 0.", key)
            for key in ("init_std", "ratio_consistency", "ratio_balance"):
                value = getattr(self, key)
                if not (is_number(value) and value >= 0):
                    raise ConfigError(f"sop: {key} = {value!r} must be a number >= 0.", key)

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        p = self.params
        self.u = PerSampleParameter((1,), lr=p.lr_u, init_std=p.init_std, salt=2 * position)
        self.v = PerSampleParameter(lr=p.lr_v, init_std=p.init_std, salt=2 * position + 1)

    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule, net=None) -> torch.Tensor:
        trainer = module.trainer
        index = batch["index"]
        self.u.ensure(trainer)
        self.v.ensure(trainer, shape=(logits.shape[1],))
        _, per_sample = sop_terms(logits, batch["y"], self.u[index], self.v[index])
        if self.params.ratio_consistency > 0:
            second = self.datamodule(trainer).views(index, 1)[0]
            logits2 = (net if net is not None else module)(second)
            kl = F.kl_div(F.log_softmax(logits2.float(), 1), torch.softmax(logits.detach().float(), 1),
                          reduction="none").sum(1)
            per_sample = per_sample + self.params.ratio_consistency * kl
        return per_sample

    def penalty(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor | None:
        if self.params.ratio_balance <= 0:
            return None
        index = batch["index"]
        q, _ = sop_terms(logits, batch["y"], self.u[index], self.v[index])
        return self.params.ratio_balance * balance_term(q)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        self.u.step(trainer)
        self.v.step(trainer)

    def noise_estimate(self) -> torch.Tensor | None:
        """Per-sample sum_k v_ik^2 (clamped per class to 1) off the label: how much of the label SOP explains as
        noise; None before the first step."""
        if self.v.param is None:
            return None
        return (self.v.values ** 2).clamp(0.0, 1.0).sum(1)


@STRATEGIES.register("sop_plus")
class SOPPlus(SOP):
    """SOP+ (Liu et al. 2022): SOP with a two-view consistency KL (0.9) and a class-balance term (0.1)."""

    @dataclass
    class Params(SOP.Params):
        ratio_consistency: float = 0.9  # official CIFAR-100 config
        ratio_balance: float = 0.1  # official CIFAR-100 config
