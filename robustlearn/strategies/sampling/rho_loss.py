"""RHO-LOSS: train on the candidates whose loss is high but learnable, by the reducible holdout loss.

Mindermann, Brauner, Razzak, Sharma, Kirsch, Xu, Höltgen, Gomez, Morisot, Farquhar & Gal, *Prioritized Training on
Points that are Learnable, Worth Learning, and Not Yet Learnt*, ICML 2022, arXiv 2206.07137; official code
github.com/OATML/RHO-Loss.

    score_i = L(y_i | x_i; current model) − L(y_i | x_i; irreducible-loss model)

with L the cross-entropy. The irreducible-loss (IL) model is trained once on held-out data before training starts
(`on_train_start`): a network from `module.build_network()` (its own seeded initial weights) with an optimiser from
`module.build_optimizer()` (the run's `optim.*`, learning rate annealed by a cosine over the IL training),
`il_epochs` epochs of the held-out split at `data.batch_size` with the training augmentation. Then the irreducible
loss of every training sample (eval mode, no augmentation) is cached in a `PerSampleBuffer`, checkpointed, so a
resumed run neither retrains nor changes it; the IL network itself is discarded. The IL training runs under a forked
RNG, so the run's own random stream is the same with and without it.

Per step (`replaces_batch`): draw B = `presample` · b candidates uniformly from the training subset (`dm.draw`,
augmented, from the datamodule's (seed, epoch, rank) stream), score them without gradient, and train on the b with
the largest score (`topk` on the device; no host sync). An epoch is N / b such steps, as with uniform training; each
costs a no-grad forward of B candidates besides the step itself (at the default B = 10 b, about 10 / 3 of a uniform
step's cost with backward ≈ 2 forwards) — RHO-LOSS saves steps to reach an accuracy, not time per step.

Which mode scores the candidates (`score_mode`). The official code scores in train mode: `MultiModels.training_step`
(`src/models/MultiModels.py`) calls `large_model.train()` before the selection (`selection_train_mode=True`, its
default; `.eval()` only when set False) and `reducible_loss_selection.__call__`
(`src/curricula/selection_methods.py`) computes the candidates' cross-entropy under `torch.no_grad()`. So BatchNorm
normalises the B candidates with their own batch statistics, dropout is active, and — `no_grad` does not stop it —
BatchNorm's running mean and variance take one momentum step with the candidate batch's statistics (and
`num_batches_tracked` counts it) before the training forward on the selected b takes another. `score_mode: train`
(default) does exactly that: the module scores the candidates under `torch.no_grad()` in the mode the training step
runs it (train mode; submodules a strategy keeps in eval mode stay so), and the running statistics it updates are
the network's own, checkpointed with it (resume stays exact; dropout draws from the run's global stream, which the
checkpoint restores). `score_mode: eval` scores with `scoring` (every layer in eval mode, running statistics used
and left unchanged, dropout off), the official `selection_train_mode=False`. The irreducible loss is the same in
both: the official default (`irreducible_loss_generator: precomputed_loss.yaml`) looks up losses precomputed once
after the IL training with `model.eval()` under `torch.inference_mode()` (`src/train_irreducible.py`), as the cache
here is; no IL network runs per step. (Its optional `irreducible_loss_model.yaml` keeps the IL network as a
submodule, which Lightning puts in train mode; not offered.)

Held-out data (`holdout`): the validation split (`data.val_fraction` > 0), whose labels are noisy like the training
labels — the held-out data this repository has. The paper trains the IL model on a held-out half of the training set
(or the validation set) from the same, possibly noisy, distribution; a sample with a wrong label then has a high
irreducible loss as well and a low score, which is why RHO-LOSS skips noisy points. Caveats: the validation split
also selects the best epoch (`val_acc_best`), so it is no longer independent of training; and a small validation
split makes a weak IL model (scores close to the plain loss). Holding out a share of the training split instead is
not offered: it would need the training subset, which belongs to `sets_subset` strategies.

Defaults: `presample` = 10 (the paper selects 10 % of each large batch), `il_epochs` = 10 (the paper trains the IL
model to a good holdout fit and finds that a small, cheaply trained IL model suffices; raise it for large datasets),
`score_mode` = train (the official default, above).
Biased by design: the b selected samples are not reweighted. The selection uses cross-entropy whatever the training
loss (a loss provider such as GCE still sets the loss trained on). No oracle (no clean labels).
`rho_loss/score` logs the mean score of the selected samples, `rho_loss/irreducible` their mean irreducible loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.full_pass import full_pass
from robustlearn.strategies.params import is_whole
from robustlearn.strategies.passes import train_pass
from robustlearn.strategies.scoring import scoring

_SALT = 7505
SCORE_MODES = ("train", "eval")


def select_top(score: torch.Tensor, b: int) -> torch.Tensor:
    """The positions of the b largest scores."""
    return torch.topk(score, b).indices


def train_irreducible_model(module: pl.LightningModule, dm, x: torch.Tensor, y: torch.Tensor, epochs: int,
                            batch_size: int, seed: int) -> torch.nn.Module:
    """A network like the module's trained on (x, y) for `epochs` epochs; the global RNG is left as it was."""
    device = module.device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(epoch_seed(seed, 0, salt=_SALT))
        net = module.build_network().to(device)
        optimizer = module.build_optimizer(net.parameters())
        steps = max(1, epochs * math.ceil(len(y) / batch_size))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        order = torch.Generator().manual_seed(epoch_seed(seed, 1, salt=_SALT))
        views = torch.Generator(device=device).manual_seed(epoch_seed(seed, 2, salt=_SALT))
        net.train()
        for _ in range(epochs):
            batches = torch.randperm(len(y), generator=order).split(batch_size)
            train_pass(net, dm, x, y, batches, views, optimizer, device, schedule=schedule)
    return net


@STRATEGIES.register("rho_loss")
class RhoLoss(Strategy):
    """Train on the top b of B = presample · b candidates by training loss − irreducible (holdout-model) loss."""

    needs = ("datamodule", "validation_split")

    replaces_batch = True
    state_attrs = ("irreducible",)

    @dataclass
    class Params:
        presample: int = 10  # candidates per trained sample, B = presample * b, >= 2 (paper: select 10 %)
        il_epochs: int = 10  # epochs the irreducible-loss model trains on the held-out split, >= 1
        holdout: str = "val"  # held-out data of the irreducible-loss model: the validation split
        score_mode: str = "train"  # train | eval: the network's mode when it scores the candidates (official: train)

        def __post_init__(self):
            if not (is_whole(self.presample) and self.presample >= 2):
                raise ConfigError(f"rho_loss: presample = {self.presample!r} must be an integer >= 2.", "presample")
            if not (is_whole(self.il_epochs) and self.il_epochs >= 1):
                raise ConfigError(f"rho_loss: il_epochs = {self.il_epochs!r} must be an integer >= 1.", "il_epochs")
            if self.holdout != "val":
                raise ConfigError(f"rho_loss: holdout = {self.holdout!r} is not offered; the one choice is 'val' "
                                  "(the validation split).", "holdout")
            if self.score_mode not in SCORE_MODES:
                raise ConfigError(f"rho_loss: score_mode = {self.score_mode!r} is not one of "
                                  f"{', '.join(SCORE_MODES)}.", "score_mode")

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        val_fraction = cfg.get("data", {}).get("val_fraction", 0.1)
        if not val_fraction or val_fraction <= 0:
            raise ConfigError("holdout = 'val' needs a validation split, and data.val_fraction is 0: the "
                              "irreducible-loss model would have no data. Set data.val_fraction > 0.", "holdout")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.irreducible = PerSampleBuffer(fill=float("nan"))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.dm = self.datamodule(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.irreducible.ensure(trainer)
        if not bool(torch.isnan(self.irreducible.values).any()):
            return  # restored from the checkpoint
        held = self.dm.holdout_tensors()
        if held is None:
            raise ConfigError("rho_loss: the run has no validation split for the irreducible-loss model; set "
                              "data.val_fraction > 0.", "holdout")
        net = train_irreducible_model(pl_module, self.dm, held["x"], held["y"], self.params.il_epochs,
                                      self.dm.data_cfg.batch_size, self.dm.cfg.seed)
        logits = full_pass(pl_module, self.dm, net=net)
        y = self.dm.train_tensors()["y"].to(logits.device)
        self.irreducible.values = F.cross_entropy(logits, y, reduction="none").to(self.irreducible.dtype)

    def candidate_losses(self, x: torch.Tensor, y: torch.Tensor, module: pl.LightningModule) -> torch.Tensor:
        """The cross-entropy of the candidates under the current model, without gradient, in `score_mode`: train (the
        module as the training step runs it; BatchNorm uses and updates batch statistics, dropout on) or eval
        (`scoring`)."""
        if self.params.score_mode == "eval":
            with scoring(module):
                logits = module(x)
        else:
            with torch.no_grad():
                logits = module(x)
        return F.cross_entropy(logits.float(), y, reduction="none")

    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        b = len(batch["index"])
        big = self.dm.draw(self.params.presample * b)
        loss = self.candidate_losses(big["x"], big["y"], module)
        irreducible = self.irreducible[big["index"]]
        score = loss - irreducible
        top = select_top(score, b)
        out = {k: v[top] for k, v in big.items()}
        self.log_step(module, "score", score[top].mean(), b)
        self.log_step(module, "irreducible", irreducible[top].mean(), b)
        return out
