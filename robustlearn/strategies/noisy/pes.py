"""PES: progressive early stopping.

Bai, Yang, Han, Yang, Li, Mao, Niu & Liu, "Understanding and Improving Early Stopping for Learning with Noisy
Labels", NeurIPS 2021; official code tmllab/PES (`PES_cs.py`: `noisy_refine`, `update_trainloader`,
`splite_confident`; `networks/ResNet.py`: `renew_layers`).

Layers closer to the output memorise noisy labels sooner, so each part of the network is stopped early at its own
time. In one run of E epochs:

1. epochs [0, T1): cross-entropy on all the data, the run's optimiser (the early stop of the first layers);
2. at the end of epoch T1 - 1, the refinement, as the official `noisy_refine` (extra passes over the training data,
   not epochs of the run): the last `renew_layers` weight layers before the classifier and the classifier are
   re-initialised and trained alone (every other parameter frozen) for T2 passes with their own Adam (`pes_lr`,
   official 1e-4) on cross-entropy; then the classifier is re-initialised again and trained alone for T3 passes;
3. epochs [T1, E): every parameter trains again with the run's optimiser, each epoch on the *confident* samples
   only: those whose prediction (one eval-mode pass over the training split, before the epoch) equals their noisy
   label, with class-balanced cross-entropy, weight_k = mean_j(n_j) / n_k over the confident counts n_k (official
   `update_trainloader`); the batch's loss is the weighted mean, as PyTorch's weighted cross-entropy.

"Weight layers" are the network's Linear and Conv modules in forward (registration) order; re-initialising a layer
also re-initialises the normalisation layers registered after it (`reset_parameters`), from a generator seeded by the
run's seed. A refinement pass visits the training split once in batches of the run's batch size (the last partial
batch dropped), shuffled and augmented from generators seeded by (run seed, pass), in train mode. `pes/stage` (1, 2:
the best-validation epoch is chosen in stage 2, the network the method delivers) and `pes/confident_share` are
logged per epoch, `pes/refine_loss` (the last refinement pass's mean loss) once;
`kept_mask()` gives the diagnostics the confident set.

Defaults: the official CIFAR-10 plan, T1 = 25 of 200 epochs (here 12.5 % of the run, at least one epoch) and T2 = 7,
T3 = 5 refinement passes (as official: whole passes, whatever the run's length), `renew_layers: 1` (the official
re-initialises ResNet's last block, `layer4`, with the classifier). Departures: the official code refines at the start
of epoch T1 and trains no ordinary step in that epoch (as the noisypy port reads it); here the refinement runs between
epochs T1 - 1 and T1 and epoch T1 trains on the confident samples. The refinement's loss is cross-entropy even where a
loss strategy runs (the official criterion at that point). The official main optimiser keeps referring to the
replaced layers' old parameters, so after refinement it trains only the earlier layers; here the renewed layers train
again too (their optimiser state cleared); the confident set is predicted on unaugmented images. Single process only
(refinement changes which parameters take gradients, which DDP does not allow).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch import nn

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.full_pass import full_pass
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.strategies.passes import train_pass

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_layers(net: nn.Module) -> list[nn.Module]:
    """The Linear and Conv modules of `net` in registration (forward) order."""
    return [m for m in net.modules() if isinstance(m, WEIGHT_LAYERS)]


def renew(net: nn.Module, last: int, seed: int) -> list[nn.Parameter]:
    """Re-initialise the last `last` weight layers (and the modules registered after the first of them) in place;
    returns their parameters."""
    layers = weight_layers(net)
    if not 1 <= last <= len(layers):
        raise ConfigError(f"pes: the network has {len(layers)} weight layers; cannot renew the last {last}.",
                          "renew_layers")
    renewed = renewed_modules(net, last)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in renewed:
            m.reset_parameters()
    return [p for m in renewed for p in m.parameters(recurse=False)]


def renewed_modules(net: nn.Module, last: int) -> list[nn.Module]:
    """The modules the last `last` weight layers' renewal resets: from the first of them on, those with
    `reset_parameters` (the layers and the normalisations registered after them)."""
    first = weight_layers(net)[-last]
    modules = list(net.modules())
    return [m for m in modules[modules.index(first):] if hasattr(m, "reset_parameters")]


def class_balance(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """weight_k = mean of the non-zero counts / n_k, 0 for an absent class (official `update_trainloader`)."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    w = torch.zeros(num_classes, dtype=torch.float64)
    w[present] = counts[present].mean() / counts[present]
    return w


def first_stage(t1: int | None, epochs: int, share: float) -> int:
    """T1: `t1`, or null -> `share` of the run (at least one epoch)."""
    return max(1, int(round(share * epochs))) if t1 is None else int(t1)


def refine_passes(module: pl.LightningModule, dm, params: list[nn.Parameter], lr: float, passes: int, seed: int,
                  salt: int) -> torch.Tensor | None:
    """`passes` passes over the training split training only `params` (every other parameter frozen by the caller)
    with Adam(lr) on cross-entropy, in train mode; returns the last pass's mean loss (a tensor), None if no pass."""
    optimizer = torch.optim.Adam(params, lr=lr)
    tensors, device = dm.train_tensors(), module.device
    n, size = dm.train_size, dm.train_batch_size
    module.train()
    last = None
    for p in range(passes):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, p, salt=salt)))
        views = torch.Generator(device=device).manual_seed(epoch_seed(seed, p, salt=salt + 1))
        batches = [order[start:start + size] for start in range(0, max(n - size + 1, 1), size)]  # last partial dropped
        last = train_pass(module, dm, tensors["x"], tensors["y"], batches, views, optimizer, device,
                          classes=module.num_classes)
    return last


@STRATEGIES.register("pes")
class PES(Strategy):
    """PES (Bai et al. 2021): CE, re-initialise and refine the last layers alone, then train on confident samples."""

    sets_subset = True
    needs = ("datamodule", "num_classes")
    state_attrs = ("class_weight",)
    t1_share = 0.125  # official CIFAR-10: T1 = 25 of 200 epochs

    @dataclass
    class Params:
        t1: int | None = None  # epochs of CE on all data (null: 12.5 % of the run; official 25 of 200)
        t2: int = 7  # passes refining the renewed layers (official 7)
        t3: int = 5  # passes refining the classifier alone (official 5)
        renew_layers: int = 1  # weight layers before the classifier renewed in the first refinement (official: 1 block)
        pes_lr: float = 1e-4  # Adam learning rate of the refinements (official 1e-4)

        def __post_init__(self):
            if self.t1 is not None and not (is_whole(self.t1) and self.t1 >= 1):
                raise ConfigError(f"pes: t1 = {self.t1!r} must be an integer >= 1 or null.", "t1")
            for key in ("t2", "t3"):
                value = getattr(self, key)
                if not (is_whole(value) and value >= 0):
                    raise ConfigError(f"pes: {key} = {value!r} must be an integer >= 0 (refinement passes).", key)
            if not (is_whole(self.renew_layers) and self.renew_layers >= 0):
                raise ConfigError(f"pes: renew_layers = {self.renew_layers!r} must be an integer >= 0.",
                                  "renew_layers")
            if not (is_number(self.pes_lr) and self.pes_lr > 0):
                raise ConfigError(f"pes: pes_lr = {self.pes_lr!r} must be a number > 0.", "pes_lr")

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        t1 = first_stage(params.t1, epochs, cls.t1_share)
        if t1 >= epochs:
            raise ConfigError(f"t1 = {t1} is not below trainer.epochs = {epochs}: no epoch would train after the "
                              "refinement. Train longer or lower t1.", "t1")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.class_weight: torch.Tensor | None = None  # (K,) on the training device, phase 2
        self.t1 = 1
        self._confident: torch.Tensor | None = None

    def phase(self, epoch: int) -> int:
        return 1 if epoch < self.t1 else 2

    def refinements(self) -> list[tuple[int, int]]:
        """(weight layers renewed, passes) of each refinement, in order."""
        return [(self.params.renew_layers + 1, self.params.t2), (1, self.params.t3)]

    def _net(self, pl_module: pl.LightningModule) -> nn.Module:
        return getattr(pl_module, "net", pl_module)

    def refine(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The official noisy_refine, each refinement in turn; then every parameter trains again."""
        net, dm = self._net(pl_module), self.datamodule(trainer)
        renewed: set[int] = set()
        loss = None
        for i, (last, passes) in enumerate(self.refinements()):
            if passes <= 0:
                continue  # official: refine_times <= 0 leaves the model as it is
            seed = epoch_seed(torch.initial_seed(), i, salt=600 + self.position)
            params = renew(net, last, seed)
            keep = {id(p) for p in params}
            renewed |= keep
            for p in net.parameters():
                p.requires_grad_(id(p) in keep)
            loss = refine_passes(pl_module, dm, params, self.params.pes_lr, passes, seed, salt=700 + self.position)
        for p in net.parameters():
            p.requires_grad_(True)
        for opt in trainer.optimizers:  # stale momentum of the replaced weights
            for p in list(opt.state):
                if id(p) in renewed:
                    del opt.state[p]
        if loss is not None:
            self.log_metric(pl_module, "refine_loss", loss)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.world_size > 1:
            raise ConfigError("pes: runs in a single process only (its refinements change which parameters take "
                              "gradients, which DistributedDataParallel does not allow).", "strategies")
        self.t1 = first_stage(self.params.t1, int(trainer.max_epochs or 1), self.t1_share)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        subset = self.datamodule(trainer).train_subset
        if self.phase(trainer.current_epoch) == 2 and subset is not None:  # a resumed run: its confident set
            self._confident = torch.zeros(self.datamodule(trainer).train_size, dtype=torch.bool)
            self._confident[subset] = True

    def weights(self, per_sample, logits, batch, weights, module):
        if self.class_weight is None or self.phase(module.trainer.current_epoch) < 2:
            return weights
        w = self.class_weight.to(weights.device)[batch["y"]].to(weights.dtype)
        return weights * w / w.mean().clamp_min(torch.finfo(w.dtype).tiny)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.log_metric(pl_module, "stage", float(self.phase(epoch)))
        if self._confident is not None and self.phase(epoch) == 2:
            self.log_metric(pl_module, "confident_share", float(self._confident.float().mean()))
        if epoch + 1 == self.t1:
            self.refine(trainer, pl_module)
        if self.phase(epoch + 1) == 2 and epoch + 1 < trainer.max_epochs:
            self._choose_confident(trainer, pl_module)

    def predict_confident(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[torch.Tensor, ...]:
        """(noisy labels, confident mask), both on the CPU: one eval pass, confident where prediction = label."""
        dm = self.datamodule(trainer)
        y = dm.train_tensors()["y"].cpu()
        pred = full_pass(pl_module, dm)[:, : pl_module.num_classes].argmax(1).cpu()
        return y, pred == y

    def _choose_confident(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        y, confident = self.predict_confident(trainer, pl_module)
        if not bool(confident.any()):
            confident = torch.ones_like(confident)  # nothing agrees: train on everything rather than nothing
        self._confident = confident
        self.datamodule(trainer).set_train_subset(torch.nonzero(confident).squeeze(1))
        self.class_weight = class_balance(y[confident], pl_module.num_classes).float().to(pl_module.device)

    def kept_mask(self) -> torch.Tensor | None:
        return self._confident
