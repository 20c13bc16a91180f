"""PES: progressive early stopping.

Bai, Yang, Han, Yang, Li, Mao, Niu & Liu, "Understanding and Improving Early Stopping for Learning with Noisy
Labels", NeurIPS 2021; official code tmllab/PES (`PES_cs.py`: `noisy_refine`, `update_trainloader`,
`splite_confident`; `networks/ResNet.py`: `renew_layers`).

Layers closer to the output memorise noisy labels sooner, so each part of the network is stopped early at its own
time. In one run, with T1, T2, T3 epochs:

1. epochs [0, T1): cross-entropy on all the data, the run's optimiser (the early stop of the first layers);
2. epochs [T1, T1 + T2): the last `renew_layers` weight layers before the classifier and the classifier are
   re-initialised and trained alone (every other parameter frozen) with their own Adam (`pes_lr`, official 1e-4);
3. epochs [T1 + T2, T1 + T2 + T3): the classifier is re-initialised again and trained alone, the same way;
4. then every parameter trains again with the run's optimiser, each epoch on the *confident* samples only: those whose
   prediction (one eval-mode pass over the training split, before the epoch) equals their noisy label, with
   class-balanced cross-entropy, weight_k = mean_j(n_j) / n_k over the confident counts n_k (official
   `update_trainloader`); the batch's loss is the weighted mean, as PyTorch's weighted cross-entropy.

"Weight layers" are the network's Linear and Conv modules in forward (registration) order; re-initialising a layer
also re-initialises the normalisation layers registered after it (`reset_parameters`), from a generator seeded by the
run's seed. `pes/phase` (1-4) and `pes/confident_share` are logged per epoch; `kept_mask()` gives the diagnostics the
confident set.

Defaults: the official CIFAR-10 plan is T1 = 25 of 200 epochs and T2 = 7, T3 = 5 extra refinement epochs; here the
three are shares of the run (12.5 %, 3.5 %, 2.5 %, each at least one epoch), and `renew_layers: 1` (the official
re-initialises ResNet's last block, `layer4`, with the classifier). Departures: the refinement epochs are part of the
run's epochs, not extra ones; the official main optimiser keeps referring to the replaced layers' old parameters,
so after refinement it trains only the earlier layers; here the renewed layers train again too (their optimiser state
cleared); the confident set is predicted on unaugmented images. Single process only (refinement changes which
parameters take gradients, which DDP does not allow).
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


def epochs_plan(params, epochs: int) -> tuple[int, int, int]:
    share = lambda value, s: max(1, int(round(s * epochs))) if value is None else int(value)  # noqa: E731
    return share(params.t1, 0.125), share(params.t2, 0.035), share(params.t3, 0.025)


@STRATEGIES.register("pes")
class PES(Strategy):
    """PES (Bai et al. 2021): CE, re-initialise and refine the last layers alone, then train on confident samples."""

    sets_subset = True
    needs = ("datamodule", "num_classes")
    state_attrs = ("class_weight", "refiner_state")

    @dataclass
    class Params:
        t1: int | None = None  # epochs of CE on all data (null: 12.5 % of the run; official 25 of 200)
        t2: int | None = None  # epochs refining the renewed layers (null: 3.5 %; official 7)
        t3: int | None = None  # epochs refining the classifier alone (null: 2.5 %; official 5)
        renew_layers: int = 1  # weight layers before the classifier renewed in the first refinement (official: 1 block)
        pes_lr: float = 1e-4  # Adam learning rate of the refinements (official 1e-4)

        def __post_init__(self):
            for key in ("t1", "t2", "t3"):
                value = getattr(self, key)
                if value is not None and not (is_whole(value) and value >= 1):
                    raise ConfigError(f"pes: {key} = {value!r} must be an integer >= 1 or null.", key)
            if not (is_whole(self.renew_layers) and self.renew_layers >= 0):
                raise ConfigError(f"pes: renew_layers = {self.renew_layers!r} must be an integer >= 0.",
                                  "renew_layers")
            if not (is_number(self.pes_lr) and self.pes_lr > 0):
                raise ConfigError(f"pes: pes_lr = {self.pes_lr!r} must be a number > 0.", "pes_lr")

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        t1, t2, t3 = epochs_plan(params, epochs)
        if t1 + t2 + t3 >= epochs:
            raise ConfigError(f"t1 + t2 + t3 = {t1} + {t2} + {t3} is not below trainer.epochs = {epochs}: no epoch "
                              "would train on the confident samples. Train longer or shorten the stages.", "t1")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.class_weight: torch.Tensor | None = None  # (K,) on the training device, phase 4
        self.refiner_state: dict | None = None  # the refinement Adam's state (checkpoint)
        self.refiner: torch.optim.Optimizer | None = None
        self.plan = (1, 1, 1)
        self._confident: torch.Tensor | None = None

    # ---- phases -----------------------------------------------------------------------------------------------
    def phase(self, epoch: int) -> int:
        t1, t2, t3 = self.plan
        return 1 if epoch < t1 else 2 if epoch < t1 + t2 else 3 if epoch < t1 + t2 + t3 else 4

    def _net(self, pl_module: pl.LightningModule) -> nn.Module:
        return getattr(pl_module, "net", pl_module)

    def _refine(self, pl_module: pl.LightningModule, last: int, phase: int, fresh: bool) -> None:
        """Freeze every parameter but the last `last` weight layers' (renewed if `fresh`), and give those an Adam."""
        net = self._net(pl_module)
        seed = epoch_seed(torch.initial_seed(), phase, salt=600 + self.position)
        if fresh:
            params = renew(net, last, seed)
        else:
            params = [p for m in renewed_modules(net, last) for p in m.parameters(recurse=False)]
        keep = {id(p) for p in params}
        for p in net.parameters():
            p.requires_grad_(id(p) in keep)
        self.refiner = torch.optim.Adam(params, lr=self.params.pes_lr)

    def _release(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = self._net(pl_module)
        renewed = {id(p) for p in self.refiner.param_groups[0]["params"]} if self.refiner is not None else set()
        for p in net.parameters():
            p.requires_grad_(True)
        for opt in trainer.optimizers:  # stale momentum of the replaced weights
            for p in list(opt.state):
                if id(p) in renewed:
                    del opt.state[p]
        self.refiner, self.refiner_state = None, None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.world_size > 1:
            raise ConfigError("pes: runs in a single process only (its refinements change which parameters take "
                              "gradients, which DistributedDataParallel does not allow).", "strategies")
        self.plan = epochs_plan(self.params, int(trainer.max_epochs or 1))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        phase = self.phase(trainer.current_epoch)  # a resumed run re-enters its phase; the weights are restored
        subset = self.datamodule(trainer).train_subset
        if phase == 4 and subset is not None:
            self._confident = torch.zeros(self.datamodule(trainer).train_size, dtype=torch.bool)
            self._confident[subset] = True
        if phase in (2, 3):
            self._refine(pl_module, self.params.renew_layers + 1 if phase == 2 else 1, phase, fresh=False)
            if self.refiner_state is not None:
                self.refiner.load_state_dict(self.refiner_state)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        if self.refiner is not None:
            self.refiner.step()
            self.refiner.zero_grad(set_to_none=True)  # the run's optimiser sees no gradient in a refinement

    def weights(self, per_sample, logits, batch, weights, module):
        if self.class_weight is None or self.phase(module.trainer.current_epoch) < 4:
            return weights
        w = self.class_weight.to(weights.device)[batch["y"]].to(weights.dtype)
        return weights * w / w.mean().clamp_min(torch.finfo(w.dtype).tiny)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.log_metric(pl_module, "phase", float(self.phase(epoch)))
        nxt = self.phase(epoch + 1)
        if nxt != self.phase(epoch):
            if nxt == 2:
                self._refine(pl_module, self.params.renew_layers + 1, 2, fresh=True)
            elif nxt == 3:
                self._refine(pl_module, 1, 3, fresh=True)
            elif nxt == 4:
                self._release(trainer, pl_module)
        self.refiner_state = None if self.refiner is None else self.refiner.state_dict()
        if nxt == 4 and epoch + 1 < trainer.max_epochs:
            self._choose_confident(trainer, pl_module)
        if self._confident is not None and self.phase(epoch) == 4:
            self.log_metric(pl_module, "confident_share", float(self._confident.float().mean()))

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
