"""Co-teaching.

Han, Yao, Yu, Niu, Xu, Hu, Tsang & Sugiyama, "Co-teaching: Robust Training of Deep Neural Networks with Extremely
Noisy Labels", NeurIPS 2018, arXiv:1804.06872.

Two networks f (the module's) and g (a peer, `OwnedNetwork`) see the same batch of B samples. Each picks its
k = ⌊(1 − R(e))·B⌋ smallest-loss samples (at least one), and each is updated on the samples its **peer** picked:

    D_f = argmin_{|D| = k} ℓ(f, D),   D_g = argmin_{|D| = k} ℓ(g, D)
    f ← f − η ∇ (1/k) Σ_{i ∈ D_g} ℓ(f, x_i, y_i),    g ← g − η ∇ (1/k) Σ_{i ∈ D_f} ℓ(g, x_i, y_i)

with R(e) = τ^c · e / (T_k − 1) for e < T_k and τ afterwards (`robustlearn.strategies.noisy.selection`). The two
networks start from different weights and filter different errors, so one network's selection bias is not fed back
into itself. For f the weights are the 0/1 mask of D_g scaled by B/k (the mean over the kept samples); the peer
steps inside the main step, on (1/k) Σ_{D_f} w_i ℓ(g, x_i, y_i) with the same incoming weights w (1, or a
presampler's importance weights). ℓ is the run's per-sample loss for both networks (cross-entropy, or the loss
strategy's); penalties (ELR, ...) apply to f only. The peer follows the main optimiser's learning rate and momentum.

Defaults (official code, github.com/bhanML/Co-teaching): `forget_rate` τ = null, i.e. the true noise rate of the
run's labels, `noise_rate_actual` (the paper assumes it known: the run records `oracle = "true noise rate"`);
`ramp_epochs` T_k = 10 (`num_gradual`); `exponent` c = 1. T_k = 10 was set for 200 epochs; on 8–20-epoch schedules
set a few epochs to reach τ in time.

Evaluation: validation and test score the module's own network f, as the papers report one network's accuracy
(the official code prints both; they end close). The peer's weights and optimiser state are checkpointed with the
strategy, so a resumed run continues both networks exactly.

When to use it: symmetric or pair noise of known (or estimated) rate, when twice the training compute is
affordable. Cost: a second network's forward and backward pass per step (about 2× the step time), and its weights
and optimiser state in memory. Its weights are 0 on the samples f does not train on, so `diagnostics` scores the
set f trains on against the true flip mask (`diagnostics/batch_kept_precision`). Per epoch it logs
`coteaching/forget_rate` and `coteaching/peer_loss` (g's mean loss over its kept samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.registry import STRATEGIES
from robustlearn.strategies.noisy.selection import check_selection_params, small_loss_mask
from robustlearn.strategies.noisy.small_loss import SmallLoss
from robustlearn.strategies.owned import OwnedNetwork
from robustlearn.strategies.step import run_loss


@STRATEGIES.register("coteaching")
class CoTeaching(SmallLoss):
    """Co-teaching (Han et al. 2018): two networks, each trained on the small-loss share its peer selects."""

    state_attrs = ("peer",)

    @property
    def needs(self) -> tuple[str, ...]:
        return ("build_network", *super().needs)

    @dataclass
    class Params(SmallLoss.Params):
        def __post_init__(self):
            check_selection_params("coteaching", self.forget_rate, self.ramp_epochs, self.exponent)

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.peer: OwnedNetwork | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self.peer = OwnedNetwork(pl_module, salt=1 + self.position)

    def exchange(self, per_sample, peer_loss, weights, module) -> tuple[torch.Tensor, torch.Tensor, object]:
        """(mask of the samples f trains on, mask of those g trains on, their count k): each the other's k
        smallest-loss samples."""
        k = self.keep(module, per_sample.numel())
        for_main = small_loss_mask(peer_loss, k).to(weights.dtype)
        for_peer = small_loss_mask(per_sample, k).to(weights.dtype)
        return for_main, for_peer, k

    def weights(self, per_sample, logits, batch, weights, module):
        peer_loss = run_loss(module, self.peer(batch["x"]), batch, net=self.peer)
        for_main, for_peer, k = self.exchange(per_sample, peer_loss, weights, module)
        peer_mean = (weights * for_peer * peer_loss).sum() / k
        self.peer.step(peer_mean)
        self.log_step(module, "peer_loss", peer_mean.detach(), per_sample.numel())
        return weights * for_main * (per_sample.numel() / k)
