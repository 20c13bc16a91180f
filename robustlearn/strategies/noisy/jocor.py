"""JoCoR: joint training of two networks with co-regularisation, on one shared small-loss selection.

Wei, Feng, Chen & An, "Combating Noisy Labels by Agreement: A Joint Training Method with Co-Regularization",
CVPR 2020 (arXiv 2003.02752); official code github.com/hongxin001/JoCoR (`loss_jocor` in `loss.py`).

Two networks see the same batch; with p₁ = softmax(z₁) (the module's network) and p₂ = softmax(z₂) (a peer), each
sample gets the joint loss (the paper's L = (1 − λ)·L_sup + λ·L_con; official `loss_jocor`)

    ℓ_i = (1 − λ)·(CE(p₁, y) + CE(p₂, y)) + λ·(KL(p₁‖p₂) + KL(p₂‖p₁)),    KL(p‖q) = Σ_k p_k (log p_k − log q_k)

The ⌊(1 − R(e))·B⌋ samples with the smallest ℓ_i form one selection shared by both networks (not exchanged, as in
Co-teaching), and the mean of ℓ over it trains both. R(e) is Co-teaching's forget-rate schedule
(`strategies/noisy/selection.py`): 0 rising linearly to τ^c over `ramp_epochs` epochs, then τ.

Neither probability is detached in the co-regularisation term, in the paper (both networks are "updated
simultaneously" by the joint loss) and in the official code (`F.kl_div(log_softmax(z₁), softmax(z₂))` keeps z₂ in
the graph, and both directions are summed), so each network gets the gradient of both KL directions.

**Two optimisers, the official gradient.** The official code sums everything into one scalar L(θ₁, θ₂) and steps one
Adam over both networks' parameters. Here the module's optimiser steps the main network and the peer
(`OwnedNetwork`) steps its own, on two copies of the same joint loss: the main network's per-sample loss is
ℓ(z₁, sg(z₂)) and the peer's ℓ(sg(z₁), z₂), sg = stop-gradient. Both have ℓ's value, and ∂ℓ(z₁, sg(z₂))/∂θ₁ =
∂L/∂θ₁, ∂ℓ(sg(z₁), z₂)/∂θ₂ = ∂L/∂θ₂: each network receives exactly the gradient the official joint backward gives it
(tested). The optimisers are per-parameter (SGD, Adam), so two of them with the same settings step as one over both
parameter lists; only a global gradient-norm clip (`trainer.grad_clip`, which the official code does not use) differs,
clipping each network's norm instead of the joint one. The main network's loss goes through the step as per-sample ℓ
with `weights` = the small-loss mask / its mean (so Σ w ℓ / B is the mean over the kept set, times any weights that
arrived before, e.g. a presampler's); the peer steps on the same weighted sum of its copy, inside `weights`.

Defaults and their sources:
- `co_lambda` = 0.9: the official README ("generally the best lambda is between 0.5–0.9"; 0.9 for CIFAR-10 at 20 %,
  50 % symmetric and 40 % asymmetric noise, 0.65 at 80 %, 0.85 for CIFAR-100). The argparse default of the
  official `main.py` is 0.1; set it for a comparison with that default.
- `forget_rate` = null: τ is the true noise rate, the actual share of flipped labels (`noise_rate_actual`), as the
  official code takes the known noise rate (it halves the nominal rate for its asymmetric CIFAR-10 map, which flips
  half of the classes: the actual rate, which is what this default reads for any noise kind). This reads oracle
  information and the run records `oracle = "true noise rate"`; set a number to run without it.
- `ramp_epochs` = 10, `exponent` = 1: the official `num_gradual` and `exponent` (for 200-epoch runs; with the
  8–20-epoch schedules of this repository τ is reached late or not at all: lower `ramp_epochs` there).

Evaluation: validation and test score the module's network, network 1, whose accuracy the paper reports (the
official code evaluates both; co-regularisation keeps them close); the peer is not evaluated. Per epoch it logs
`jocor/forget_rate` (R(e)) and `jocor/agreement` (the share of training samples on which the two networks' predicted
classes agree, which co-regularisation drives up).

When to use it: symmetric and pair-flip noise with a rough idea of the noise rate, where small-loss selection works;
the paper reports it ahead of Co-teaching and Co-teaching+ on MNIST, CIFAR-10/100 and Clothing1M. Cost: two networks,
so about twice the time and memory of cross-entropy per step (one more forward and backward), and the peer's weights
and optimiser in every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.noisy.selection import (
    check_selection_params,
    forget_rate_at,
    keep_count,
    resolve_forget_rate,
    small_loss_mask,
)
from robustlearn.strategies.owned import OwnedNetwork
from robustlearn.strategies.params import is_number


def joint_loss(z1: torch.Tensor, z2: torch.Tensor, y: torch.Tensor, co_lambda: float) -> torch.Tensor:
    """Per-sample (1 − λ)(CE(p₁, y) + CE(p₂, y)) + λ (KL(p₁‖p₂) + KL(p₂‖p₁)) from the logits z₁, z₂ (float32 or
    float64 in, the same out); gradients flow into whichever of z₁, z₂ requires them."""
    log_p1, log_p2 = torch.log_softmax(z1, dim=1), torch.log_softmax(z2, dim=1)
    ce = F.nll_loss(log_p1, y, reduction="none") + F.nll_loss(log_p2, y, reduction="none")
    # KL(p1||p2) + KL(p2||p1) = sum_k (p1_k - p2_k)(log p1_k - log p2_k)
    symmetric_kl = ((log_p1.exp() - log_p2.exp()) * (log_p1 - log_p2)).sum(1)
    return (1.0 - co_lambda) * ce + co_lambda * symmetric_kl


@STRATEGIES.register("jocor")
class JoCoR(Strategy):
    """JoCoR (Wei et al. 2020): two networks, joint loss with symmetric-KL co-regularisation, one small-loss set."""

    provides_loss = True
    state_attrs = ("peer",)

    @property
    def needs(self) -> tuple[str, ...]:
        return ("build_network", *(("noise_rate",) if self.params.forget_rate is None else ()))

    @dataclass
    class Params:
        co_lambda: float = 0.9  # weight λ of the co-regularisation, 0 <= λ < 1 (official README: 0.5-0.9; 0.9 CIFAR-10)
        forget_rate: float | None = None  # τ, share of each batch dropped; null: the true noise rate (oracle)
        ramp_epochs: int = 10  # epochs over which R rises from 0 to τ^c (official num_gradual: 10)
        exponent: float = 1.0  # c in τ^c at the end of the ramp (official: 1)

        def __post_init__(self):
            if not (is_number(self.co_lambda) and 0.0 <= self.co_lambda < 1.0):
                raise ConfigError(f"jocor: co_lambda = {self.co_lambda!r} must be a number >= 0 and < 1 (at 1 the "
                                  "labels drop out of the loss and the networks only agree with each other).",
                                  "co_lambda")
            check_selection_params("jocor", self.forget_rate, self.ramp_epochs, self.exponent)

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.peer: OwnedNetwork | None = None
        self.tau: float | None = None  # the resolved forget rate, set at fit set-up
        self._peer_loss: torch.Tensor | None = None  # the peer's copy of ℓ, from loss() to weights()

    @property
    def oracle(self) -> str | None:
        return "true noise rate" if self.params.forget_rate is None else None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.tau = resolve_forget_rate(self.params.forget_rate, trainer)
        self.peer = OwnedNetwork(pl_module, salt=1 + self.position)

    # ---- the step ---------------------------------------------------------------------------------------------
    def forget_at(self, epoch: int) -> float:
        """R(e), the share of each batch dropped in epoch `epoch` (from 0)."""
        return forget_rate_at(epoch, self.tau, self.params.ramp_epochs, self.params.exponent)

    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        wide = torch.promote_types(logits.dtype, torch.float32)  # at least float32 (bf16 and fp16 logits)
        z1, z2 = logits.to(wide), self.peer(batch["x"]).to(wide)
        y, lam = batch["y"], self.params.co_lambda
        # Two copies of ℓ with one value: the main network's gradient through z1, the peer's through z2.
        self._peer_loss = joint_loss(z1.detach(), z2, y, lam)
        agree = (z1.detach().argmax(1) == z2.detach().argmax(1)).float().mean()
        self.log_step(module, "agreement", agree, len(y))
        return joint_loss(z1, z2.detach(), y, lam)

    def weights(self, per_sample: torch.Tensor, logits: torch.Tensor, batch: dict, weights: torch.Tensor,
                module: pl.LightningModule) -> torch.Tensor:
        n = per_sample.numel()
        k = keep_count(n, self.forget_at(module.trainer.current_epoch))
        mask = small_loss_mask(per_sample, k)  # one selection for both networks
        w = (weights * mask * (n / k)).detach()  # mask / mask.mean() (k <= n): Σ w ℓ / B = mean over the kept set
        peer_loss, self._peer_loss = self._peer_loss, None
        self.peer.step((w * peer_loss).sum() / n)
        return w

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.log_metric(pl_module, "forget_rate", self.forget_at(trainer.current_epoch))
