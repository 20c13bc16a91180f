"""Deep abstaining classifier (DAC): an extra "abstain" output and a loss that lets the network decline a sample.

Thulasidasan, Bhattacharya, Bilmes, Chennupati & Mohd-Yusof, "Combating Label Noise in Deep Learning Using
Abstention", ICML 2019 (PMLR 97, arXiv 1905.10964); official code github.com/thulas/dac-label-noise
(`dac_loss`, used by `train_dac.py`).

The network has K + 1 outputs (`extra_logits = 1`: the module builds it so, and its metrics and validation read the
first K); p = softmax over all K + 1 and p_{K+1} is the probability of abstaining. Per sample (paper eq. 1)

    ℓ = (1 − p_{K+1}) · (−log(p_y / (1 − p_{K+1}))) + α · log(1 / (1 − p_{K+1}))

The first term is cross-entropy over the K classes, renormalised without the abstain class, scaled down as the
network abstains; the second charges α for abstaining. A sample whose label the network cannot fit (a flipped one) is
cheaper to abstain on than to fit, so abstention concentrates on the noisy labels. Computed in log space,
log(1 − p_{K+1}) = logsumexp(z_{1..K}) − logsumexp(z) and −log(p_y / (1 − p_{K+1})) = logsumexp(z_{1..K}) − z_y,
with log(1 − p_{K+1}) floored at log(1e-7): the official code's clamp p_{K+1} <= 1 − 1e-7, with the same value and
gradient (none through the clamped abstention).

α, as the official code sets it (epochs counted from 0, T = `trainer.epochs`, L = `learn_epochs`):

- epochs e < L (warm-up): no abstention; the loss is cross-entropy over all K + 1 outputs (the abstain class is never
  a target, so it is pushed down), and every step updates an exponential moving average, weight μ = 0.05 (official
  `ewma_mu`), of the batch mean of (1 − p_{K+1})·(−log(p_y / (1 − p_{K+1}))), the first term of the loss;
- at the first step of epoch L the average takes that batch too and α₀ = average / `alpha_init_factor` (a small α, so
  that abstention can start at once);
- from then on α(e) = α₀ + (α_final − α₀)·(e − L)/(T − 1 − L): one linear step per epoch, α_final at the last epoch
  (the official code adds (α_final − α₀)/(T − L − 1) at the first step of each epoch). With one abstention epoch
  (L = T − 1), α stays at α₀ (the official code divides by zero there).

α₀ and the running average are tensors on the training device (no read of the device in a step) and checkpointed
(`state_attrs`), so a resumed run trains with the α of an uninterrupted one. Under DDP each rank averages its own
batches; α₀ is all-reduced to the ranks' mean when it is set (every rank reaches that step together).

Defaults and their sources:
- `alpha_final` = 1.0, `alpha_init_factor` = 64: the official `train_dac.py` defaults (`--alpha_final`,
  `--alpha_init_factor`).
- `learn_epochs` = 2: the official argparse default is 10 and its README runs 20 warm-up epochs of 200 (10 %) on
  STL-10; 2 scales that to this repository's 8–20-epoch schedules (the warm-up must end before training does: at
  least one epoch must abstain, checked at config load). Set 20 for the official 200-epoch protocol.

Logged: `dac/abstained` (per step, its epoch mean: the share of training samples whose argmax over the K + 1 outputs
is the abstain class) and `dac/alpha` (per epoch; 0 during the warm-up).

Evaluation: validation and test predict the argmax of the K class outputs, on every sample (abstention is not an
answer there), which is what the run's test accuracy measures. The paper's label-noise protocol has a second stage
that this strategy does not run: drop the training samples the DAC abstains on and retrain a plain network with
cross-entropy on the rest; it is future work here (a `sets_subset` stage after the abstention epochs, or two runs).

When to use it: symmetric or class-dependent noise, and structured noise (labels corrupted on an identifiable subset
of the inputs), where abstention on the training set is also a noise detector. Cost: one more output, no extra pass;
the abstention term needs no other hyperparameter than the α schedule. Reads no oracle information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number, is_whole

EWMA_MU = 0.05  # weight of the newest batch in the running first-term mean (official `ewma_mu`)
LOG_EPSILON = math.log(1e-7)  # floor of log(1 - p_abstain): the official clamp p_abstain <= 1 - 1e-7


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
    """α in epoch `epoch` (from 0): 0 during the warm-up, then α₀ rising linearly to α_final at the last epoch."""
    if epoch < learn_epochs:
        return 0.0
    span = epochs - 1 - learn_epochs
    frac = 0.0 if span <= 0 else min(1.0, (epoch - learn_epochs) / span)
    return alpha0 + (alpha_final - alpha0) * frac


@STRATEGIES.register("dac")
class DAC(Strategy):
    """Deep abstaining classifier (Thulasidasan et al. 2019): a (K+1)-th abstain output and the abstention loss."""

    provides_loss = True
    extra_logits = 1
    state_attrs = ("ewma", "alpha0")

    @dataclass
    class Params:
        learn_epochs: int = 2  # warm-up epochs of cross-entropy before abstention (official 10; README 20 of 200)
        alpha_final: float = 1.0  # α at the last epoch, > 0 (official --alpha_final)
        alpha_init_factor: float = 64.0  # α₀ = running first-term mean / this, > 0 (official --alpha_init_factor)

        def __post_init__(self):
            if not (is_whole(self.learn_epochs) and self.learn_epochs >= 0):
                raise ConfigError(f"dac: learn_epochs = {self.learn_epochs!r} must be an integer >= 0 (the warm-up "
                                  "epochs without abstention).", "learn_epochs")
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

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        if params.learn_epochs >= epochs:
            raise ConfigError(
                f"learn_epochs = {params.learn_epochs} is not below trainer.epochs = {epochs}: no epoch would abstain "
                "and the run would be cross-entropy over K + 1 outputs. Lower learn_epochs or train longer.",
                "learn_epochs")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_against_trainer(trainer)

    def alpha(self, epoch: int, epochs: int):
        """α in `epoch`: 0 (a float) during the warm-up, then a tensor on the device."""
        if self.alpha0 is None:
            return 0.0
        return alpha_at(epoch, self.alpha0, self.params.alpha_final, self.params.learn_epochs, epochs)

    def _update_ewma(self, log_keep: torch.Tensor, class_ce: torch.Tensor) -> None:
        current = (log_keep.exp() * class_ce).mean().detach()
        self.ewma = current if self.ewma is None else EWMA_MU * current + (1.0 - EWMA_MU) * self.ewma.to(current)

    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        k = getattr(module, "num_classes", logits.shape[1] - 1)  # the abstain output is the (K+1)-th
        z, y = logits.to(torch.promote_types(logits.dtype, torch.float32)), batch["y"]  # bf16/fp16 -> float32
        self.log_step(module, "abstained", (z[:, : k + 1].argmax(1) == k).float().mean(), len(y))
        log_keep, class_ce = abstention_terms(z, y, k)
        self._update_ewma(log_keep, class_ce)
        trainer = module.trainer
        if trainer.current_epoch < self.params.learn_epochs:
            return F.cross_entropy(z[:, : k + 1], y, reduction="none")
        if self.alpha0 is None:  # the first abstention step: α₀ from the running mean, this batch included
            self.alpha0 = self.ewma / self.params.alpha_init_factor
            if dist.is_available() and dist.is_initialized():  # one α₀ for every rank: the mean of theirs
                dist.all_reduce(self.alpha0)
                self.alpha0 = self.alpha0 / dist.get_world_size()
        return combine(log_keep, class_ce, self.alpha(trainer.current_epoch, trainer.max_epochs).to(z))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        alpha = self.alpha(trainer.current_epoch, trainer.max_epochs)
        self.log_metric(pl_module, "alpha", float(alpha))
