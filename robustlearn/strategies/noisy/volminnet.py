"""VolMinNet: the transition matrix learnt end to end with a volume penalty.

Li, Liu, Han & Tao, "Provably End-to-end Label-noise Learning without Anchor
Points", ICML 2021; official code xuefeng-li1/Provably-end-to-end-label-noise-learning-without-anchor-points
(`models.py`, `sig_t`; `main.py` for the loss and the optimisers).

The network's clean-class posterior p = softmax(z) is mapped to the noisy one through a learnt transition matrix T,
and T's volume is minimised so that, among the (T, p) pairs that fit the noisy labels, the one with the smallest
simplex is found, which is the true T when the clean posteriors are sufficiently scattered (no anchor points needed):

    T = normalise_rows(I + sigmoid(W) * (1 - I))          W in R^{K x K}, initialised to -2 (official `init`)
    loss_i = -log (p_i^T T)_{y_i}                         penalty = lam * log|det T|

T's parameter W has its own optimiser (official CIFAR-10: SGD, lr 0.01, momentum 0.9; MNIST: Adam, lr 0.01), decayed
with the network's schedule (the official code steps one MultiStepLR for both; here it follows the run's schedule:
`StrategyParameter(follow_schedule=True)`), and its gradient is averaged over DDP ranks. Validation and test score
the network's own (clean) prediction, as the official test does. The estimate's mean diagonal is logged per epoch
(`volminnet/t_diag_mean`); `transition()` returns T.

Defaults: lam = 1e-4 (official `--lam`), init 2, the CIFAR-10 optimiser; the method YAML applies the MNIST one on
MNIST-like data. Departure: the official code selects the model on the noisy validation loss of p^T T; here the
run's usual rule (best noisy validation accuracy of the network's own prediction) applies.
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
from robustlearn.strategies.per_sample_params import StrategyParameter
from robustlearn.tuning.space import Float

OPTIMIZERS = ("sgd", "adam")


def transition_from_logits(w: torch.Tensor) -> torch.Tensor:
    """T = rows of I + sigmoid(W) off the diagonal, each normalised to sum 1."""
    eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
    t = eye + torch.sigmoid(w) * (1.0 - eye)
    return F.normalize(t, p=1, dim=1)


def forward_nll(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """-log (softmax(z) T)_y per sample."""
    noisy = torch.softmax(logits.float(), dim=1) @ t.float()
    return -torch.log(noisy.gather(1, y[:, None]).squeeze(1))


@STRATEGIES.register("volminnet")
class VolMinNet(Strategy):
    """VolMinNet (Li et al. 2021): forward loss through a learnt T plus lam log|det T|."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"lam": Float(1e-5, 1.0, log=True)}

    provides_loss = True
    state_attrs = ("w",)

    @dataclass
    class Params:
        lam: float = 1e-4  # weight of the volume penalty log|det T| (official 1e-4)
        init: float = 2.0  # W starts at -init: off-diagonal sigmoid(-2) = 0.12 before normalising (official 2)
        t_lr: float = 0.01  # learning rate of W (official 0.01, as the network's)
        t_optimizer: str = "sgd"  # sgd (momentum 0.9; official CIFAR) or adam (official MNIST)

        def __post_init__(self):
            for key in ("lam", "init", "t_lr"):
                value = getattr(self, key)
                if not (is_number(value) and value >= 0) or (key == "t_lr" and value == 0):
                    raise ConfigError(f"volminnet: {key} = {value!r} must be a number >= 0 (t_lr > 0).", key)
            if self.t_optimizer not in OPTIMIZERS:
                raise ConfigError(f"volminnet: t_optimizer = {self.t_optimizer!r} must be one of {OPTIMIZERS}.",
                                  "t_optimizer")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        p = self.params
        make = (lambda ps: torch.optim.Adam(ps, lr=p.t_lr)) if p.t_optimizer == "adam" else (
            lambda ps: torch.optim.SGD(ps, lr=p.t_lr, momentum=0.9))
        self.w = StrategyParameter(init_mean=-p.init, optimizer=make, follow_schedule=True, salt=300 + position)

    def transition(self) -> torch.Tensor | None:
        """The current estimate of T (detached), or None before the first step."""
        return None if self.w.param is None else transition_from_logits(self.w.values)

    def _t(self, module: pl.LightningModule, k: int) -> torch.Tensor:
        return transition_from_logits(self.w.ensure(module.trainer, shape=(k, k)).param)

    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        return forward_nll(logits, batch["y"], self._t(module, logits.shape[1]))

    def penalty(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor | None:
        if self.params.lam == 0:
            return None
        return self.params.lam * torch.linalg.slogdet(self._t(module, logits.shape[1]).float()).logabsdet

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        self.w.step(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        t = self.transition()
        if t is not None:
            self.log_metric(pl_module, "t_diag_mean", t.diagonal().mean())
