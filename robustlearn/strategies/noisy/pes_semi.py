"""PES (semi): progressive early stopping followed by MixMatch on the confident and the other samples.

Bai, Yang, Han, Yang, Li, Mao, Niu & Liu, NeurIPS 2021 (the semi-supervised variant); official code tmllab/PES
(`PES_semi.py`: `MixMatch_train`, `update_trainloader`, `linear_rampup`).

1. epochs [0, T1): cross-entropy on all the data;
2. at the end of epoch T1 - 1: the classifier re-initialised and trained alone for T2 passes over the training data
   (Adam, `pes_lr`), `pes`'s refinement (official `noisy_refine(model, train_loader, 0, T2)`);
3. then, every epoch from T1, one eval pass splits the training split into confident samples (prediction = noisy label:
   labelled, target the one-hot label) and the rest (unlabelled, target sharpen(mean of the network's predictions on
   two augmented views, T)); each step mixes the 2B view rows (lam ~ Beta(alpha, alpha), lam <- max(lam, 1 - lam),
   one permutation; alpha 4, then 0.75 from half of the run, as the official code) and trains on

       Lx = sum_k w_k mean_{labelled rows} (-t_k log q_k)        w_k = min(3, mean_j n_j / n_k), n the confident counts
       loss = Lx + lambda_u clip((t - T1) / 16, 0, 1) Lu,      Lu = mean over unlabelled rows and classes (q - t)^2

   with t = epoch + step / steps (the official `linear_rampup(epoch + batch_idx / num_iter, T1)`).

Defaults: the official CIFAR-10 values lambda_u 150, T 0.5, alpha 4, pes_lr 1e-4, T2 = 5 refinement passes and
T1 = 20 of 300 epochs, here 6.7 % of the run (at least one epoch). The per-sample values returned have the
step's loss as their mean (as DivideMix's, `mixmatch.semi_supervised_loss`). Departures: the official code draws
labelled and unlabelled batches from two loaders in the shares of the two sets; here every batch of the split holds
both kinds in the split's proportion; the second view is `datamodule.views` of the stored images; single process.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.noisy.mixmatch import guess_labels, mixup, unlabelled_rows
from robustlearn.strategies.noisy.mixup import mix_draw
from robustlearn.strategies.noisy.pes import PES, class_balance
from robustlearn.strategies.noisy.targets import one_hot
from robustlearn.strategies.params import is_number
from robustlearn.strategies.ramps import epochs_done, linear_ramp

WEIGHT_CAP = 3.0  # the official cap of the class weights
RAMP_EPOCHS = 16  # the official linear_rampup length


def pes_semi_loss(views, own, y, labelled, class_weight, forward, lam: float, perm, temperature: float,
                  lambda_u: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """B per-sample values whose mean is the official MixMatch_train loss of one batch (both kinds in it)."""
    b, k = len(y), own[0].shape[1]
    with torch.no_grad():
        guessed = guess_labels((own[0], own[1]), temperature)
        target = torch.where(labelled[:, None], one_hot(y, k), guessed)
        mixed_targets = mixup(torch.cat([target, target]), lam, perm)
    logits = forward(mixup(torch.cat([views[0], views[1]]), lam, perm)).float()
    lab = torch.cat([labelled, labelled]).float()  # a mixed row keeps the role of its leading (lam >= 1/2) sample
    n_lab, n_unl = lab.sum().clamp_min(1.0), (1.0 - lab).sum().clamp_min(1.0)
    lx_rows = -(torch.log_softmax(logits, 1) * mixed_targets * class_weight.to(logits.device)).sum(1)
    lu_rows = unlabelled_rows(logits, mixed_targets)
    rows = lab * lx_rows / n_lab + lambda_u * (1.0 - lab) * lu_rows / n_unl
    per_sample = b * (rows[:b] + rows[b:])
    parts = {"lx": (lab * lx_rows).sum().detach() / n_lab, "lu": ((1.0 - lab) * lu_rows).sum().detach() / n_unl}
    return per_sample, parts


@STRATEGIES.register("pes_semi")
class PESSemi(PES):
    """PES (semi) (Bai et al. 2021): CE, the classifier refined alone, then MixMatch with the confident samples
    labelled and the rest unlabelled."""

    sets_subset = False
    provides_loss = True
    needs = ("datamodule", "num_classes")

    @dataclass
    class Params(PES.Params):
        t2: int = 5  # passes refining the classifier (official 5)
        t3: int = 0  # no second refinement (official)
        renew_layers: int = 0  # the refinement renews the classifier only (official noisy_refine(model, 0, T2))
        temperature: float = 0.5  # sharpening temperature (official 0.5)
        alpha: float = 4.0  # Beta(alpha, alpha) of the mixing; 0.75 from half of the run (official)
        lambda_u: float = 150.0  # weight of Lu once ramped (official CIFAR-10 150)

        def __post_init__(self):
            super().__post_init__()
            for key in ("temperature", "alpha"):
                value = getattr(self, key)
                if not (is_number(value) and value > 0):
                    raise ConfigError(f"pes_semi: {key} = {value!r} must be a number > 0.", key)
            if not (is_number(self.lambda_u) and self.lambda_u >= 0):
                raise ConfigError(f"pes_semi: lambda_u = {self.lambda_u!r} must be a number >= 0.", "lambda_u")

    t1_share = 20 / 300  # official CIFAR-10: T1 = 20 of 300 epochs

    def _choose_confident(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The confident mask (labelled) and the capped class weights for the next epoch; every sample trains."""
        y, self._confident = self.predict_confident(trainer, pl_module)
        w = class_balance(y[self._confident], pl_module.num_classes).clamp(max=WEIGHT_CAP)
        self.class_weight = w.float().to(pl_module.device)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self.phase(trainer.current_epoch) == 2 and self._confident is None:
            self._choose_confident(trainer, pl_module)  # a resumed run: the split the uninterrupted one made

    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        trainer = module.trainer
        epoch, k, y = trainer.current_epoch, module.num_classes, batch["y"]
        if self.phase(epoch) < 2:
            return torch.nn.functional.cross_entropy(logits[:, :k].float(), y, reduction="none")
        step = trainer.global_step
        x2 = self.datamodule(trainer).views(batch["index"], 1)[0]
        with torch.no_grad():
            own = (torch.softmax(logits.detach()[:, :k].float(), 1), torch.softmax(module(x2)[:, :k].float(), 1))
        alpha = self.params.alpha if epoch < trainer.max_epochs / 2 else 0.75
        lam, perm = mix_draw(2 * len(y), step, 9100 + self.position, alpha, keep_larger=True)
        perm = perm.to(logits.device)
        labelled = self._confident.to(logits.device)[batch["index"]]
        t = epochs_done(trainer)
        lambda_u = self.params.lambda_u * linear_ramp(t, self.t1, RAMP_EPOCHS)
        per_sample, parts = pes_semi_loss((batch["x"], x2), own, y, labelled, self.class_weight,
                                          lambda z: module(z)[:, :k], lam, perm, self.params.temperature, lambda_u)
        self.log_step(module, "labelled", labelled.float().mean(), len(y))
        for key, value in parts.items():
            self.log_step(module, key, value, len(y))
        return per_sample

    def weights(self, per_sample, logits, batch, weights, module):
        return weights  # the class weights are inside Lx

