"""T-revision: importance reweighting with an estimated transition matrix, then the matrix revised by a learnt slack.

Xia, Liu, Han, Wang, Gong, Liu, Niu & Sugiyama, "Are Anchor Points Really Indispensable in Label-Noise Learning?",
NeurIPS 2019; official code xiaoboxia/T-Revision (`main.py`, `loss.py`: `reweight_loss`, `reweighting_revision_loss`).

Three stages in one run, with p = softmax(z) and T[i, j] = P(observed j | true i):

1. estimation, epochs [0, warmup_epochs): cross-entropy; at the end, T from anchor points (the 97th-percentile
   anchors of forward correction, `transition.estimate_transition`), or the generator's T with `matrix: true`
   (oracle, marked);
2. reweighting, epochs [warmup_epochs, revision_epoch): loss_i = sg(beta_i) CE(z_i, y_i),
   beta_i = p_{y_i} / (T^T p)_{y_i}: importance weights that turn the noisy-label risk into the clean one (the
   official `reweight_loss` detaches beta);
3. revision, epochs [revision_epoch, end): T + dT with a slack dT (K x K, initialised to 0) learnt beside the network,
   loss_i = beta_i(T + dT) CE(z_i, y_i) with the gradient through beta (as the official `reweighting_revision_loss`),
   which is the only way dT gets a gradient. dT has its own Adam (official lr 5e-7, `lr_revision`), a
   `StrategyParameter`: checkpointed, averaged over DDP ranks.

The denominator (T^T p)_y is clamped at 1e-7 (the revised T may leave the simplex). `t_revision/stage` (0, 1, 2) is
logged every epoch, so the run's best-validation epoch is chosen within the revision stage (the network the method
delivers), and `t_revision/delta_abs_mean` (mean |dT|) from the revision on.

Defaults: `warmup_epochs` 5 (the official code uses 20 estimation epochs of 220-420; as forward correction, a
quarter to a half of a short run), `revision_epoch` null (half-way through the epochs after the estimate: the
official reweighting and revision stages are equally long, 200 each on CIFAR-10), `lr_revision` 5e-7 (official).
Departures: the official code restarts stage 2 and 3 from the best-validation model of the stage before and trains
the network in stage 3 with Adam at 5e-7 too; here the network continues with the run's optimiser and schedule, and
only dT has the revision optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.noisy.transition import TransitionCorrection
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.strategies.per_sample_params import StrategyParameter

FLOOR = 1e-7


def reweighted(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor, detach_beta: bool) -> torch.Tensor:
    """beta CE per sample, beta = p_y / (T^T p)_y (detached where `detach_beta`)."""
    p = torch.softmax(logits.float(), dim=1)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    noisy_y = (p * t.float().t().index_select(0, y)).sum(1)  # sum_i p_i T[i, y]
    beta = p_y / noisy_y.clamp_min(FLOOR)
    if detach_beta:
        beta = beta.detach()
    return beta * F.cross_entropy(logits.float(), y, reduction="none")


@STRATEGIES.register("t_revision")
class TRevision(TransitionCorrection):
    """T-revision (Xia et al. 2019): CE, T from anchors, reweighting by T, then T revised by a learnt slack."""

    state_attrs = ("transition", "delta")

    @dataclass
    class Params(TransitionCorrection.Params):
        revision_epoch: int | None = None  # first epoch of the revision (null: half-way after the estimate)
        lr_revision: float = 5e-7  # Adam learning rate of the slack dT (official 5e-7)

        def __post_init__(self):
            super().__post_init__()
            if self.revision_epoch is not None and not (is_whole(self.revision_epoch) and self.revision_epoch >= 1):
                raise ConfigError(f"t_revision: revision_epoch = {self.revision_epoch!r} must be an integer >= 1 or "
                                  "null.", "revision_epoch")
            if not (is_number(self.lr_revision) and self.lr_revision > 0):
                raise ConfigError(f"t_revision: lr_revision = {self.lr_revision!r} must be a number > 0.",
                                  "lr_revision")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        lr = self.params.lr_revision
        self.delta = StrategyParameter(optimizer=lambda ps: torch.optim.Adam(ps, lr=lr), salt=400 + position)
        self.revision_from: int | None = None

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        super().check_config(params, cfg)
        epochs = cfg["trainer"]["epochs"]
        start = revision_start(params, epochs)
        first = params.warmup_epochs if params.matrix == "estimated" else 0
        if not first < start < epochs:
            raise ConfigError(f"revision_epoch = {start} must lie after the estimate (epoch {first}) and before "
                              f"trainer.epochs = {epochs}, so that both reweighting and revision train.",
                              "revision_epoch")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self.revision_from = revision_start(self.params, int(trainer.max_epochs or 1))

    def prepare(self, t: torch.Tensor) -> torch.Tensor:
        return t.float()

    def stage(self, epoch: int) -> int:
        """0 estimation (CE), 1 reweighting, 2 revision."""
        if self._prepared is None:
            return 0
        return 2 if epoch >= self.revision_from else 1

    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule = None) -> torch.Tensor:
        stage = 0 if module is None else self.stage(module.trainer.current_epoch)
        if stage == 0:
            return super().loss(logits, batch, module)
        if self._prepared.device != logits.device:
            self._prepared = self._prepared.to(logits.device)
        t = self._prepared
        if stage == 2:
            delta = self.delta.ensure(module.trainer, shape=tuple(t.shape)).param
            return reweighted(logits, batch["y"], t + delta, detach_beta=False)
        return reweighted(logits, batch["y"], t, detach_beta=True)

    def corrected(self, logits: torch.Tensor, y: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        return reweighted(logits, y, prepared, detach_beta=True)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        if self.delta.param is not None:
            self.delta.step(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.log_metric(pl_module, "stage", float(self.stage(epoch)))
        super().on_train_epoch_end(trainer, pl_module)
        if self.delta.param is not None:
            self.log_metric(pl_module, "delta_abs_mean", self.delta.values.abs().mean())


def revision_start(params, epochs: int) -> int:
    """The first revision epoch: `revision_epoch`, or half-way between the estimate and the end."""
    if params.revision_epoch is not None:
        return int(params.revision_epoch)
    first = params.warmup_epochs if params.matrix == "estimated" else 0
    return first + max(1, (epochs - first) // 2)
