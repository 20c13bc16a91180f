"""RobustClassifier: the one LightningModule. It runs the strategy protocol (`strategy_step`) and logs; it knows no
method by name. Strategies build peers with `build_network()` / `build_optimizer()` and score with `scoring()`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from robustlearn.epoch_means import EpochMeans, logs_this_step
from robustlearn.finite import FiniteLossWatch
from robustlearn.models import build_model
from robustlearn.optim import build_optimizer, build_scheduler
from robustlearn.schema import ModelCfg, entry_params
from robustlearn.strategies.scoring import scoring
from robustlearn.strategies.step import StepPlan, strategy_step


class RobustClassifier(pl.LightningModule):
    def __init__(self, cfg: DictConfig, num_classes: int, input_shape: tuple[int, ...], compile: bool | None = None,
                 extra_logits: int = 0):
        super().__init__()
        self.cfg = cfg
        self.compiled = cfg.trainer.compile if compile is None else compile  # the runner may fall back to eager
        self.num_classes = num_classes
        # Outputs past the K class logits that a strategy asks for (DAC's abstention logit); metrics read the first K.
        self.extra_logits = int(extra_logits)
        self.input_shape = tuple(input_shape)
        self.net = self.build_network()
        # validate_args=False: torchmetrics' input checks read tensors on the host.
        acc = lambda: MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)
        self.val_acc, self.test_acc = acc(), acc()
        # Training metrics are epoch means summed on the device, logged once per epoch (cheap per step).
        self.epoch_means = EpochMeans()
        self.finite = FiniteLossWatch()
        self.check_finite = bool(cfg.trainer.check_finite)  # read per step: a plain attribute, not an OmegaConf lookup

    # ---- what strategies build and use -------------------------------------------------------------------
    def build_network(self) -> nn.Module:
        """A fresh network like the module's: the same model config, layout and compilation (not its weights).
        The module builds its own with it; an `OwnedNetwork` builds a peer with it."""
        net = build_model(self.cfg.model.name, entry_params(self.cfg.model, ModelCfg), self.input_shape,
                          self.num_classes + self.extra_logits)
        if len(self.input_shape) == 3:  # images arrive channels_last (batch contract); convolutions run best so
            net = net.to(memory_format=torch.channels_last)
        if self.compiled:
            net = torch.compile(net, mode=self.cfg.trainer.compile_mode)
        return net

    def build_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """An optimiser over `params` from the run's `optim.*` keys."""
        return build_optimizer(self.cfg.optim, params)

    def scoring(self, *nets: nn.Module):
        """Context: no gradient, the module (and `nets`) in eval mode, every mode restored after."""
        return scoring(self, *nets)

    # ---- steps -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The K class logits the run is evaluated on: the network's, or what a strategy makes of them (DivideMix
        evaluates the mean of its two networks) through `Strategy.eval_logits`."""
        logits = self(x)
        for s in StepPlan.of(self).evaluators:
            logits = s.eval_logits(x, logits, self)
        return logits[:, : self.num_classes]

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        """No host sync here (nor in the strategies' step hooks): the GPU runs ahead of the Python loop."""
        out = strategy_step(self, batch)
        loss, batch = out["loss"], out["batch"]
        if self.check_finite:
            self.finite.watch(loss.detach(), self.current_epoch, self.global_step)
        self._log_train(out["logits"], loss.detach(), batch)
        return out  # handed to on_train_batch_end hooks as `outputs`

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The one read of the device in a step, every log_every_n_steps steps: a non-finite loss stops the run within
        # that many steps, naming where it first happened (and always before the epoch's checkpoint).
        if self.check_finite and (batch_idx + 1) % self.trainer.log_every_n_steps == 0:
            self.finite.raise_if_seen()

    def _log_train(self, logits: torch.Tensor, loss: torch.Tensor, batch: dict) -> None:
        """Training metrics of the batch trained on. On a mixed batch (mixed targets `y_b`, `lam`) each is the
        lam-weighted mean of its value against y and against y_b (mixup's official accuracy), and `train/mixed`
        (the share of samples whose inputs were mixed) says so."""
        pred = logits[:, : self.num_classes].argmax(1)
        n = len(pred)
        means = self.epoch_means
        means.add_mean("train/loss", loss, n)
        sides = [(1.0, batch["y"], batch["y_clean"])]
        mixed = "lam" in batch and "y_b" in batch
        if mixed:
            lam = batch["lam"]
            sides = [(lam, batch["y"], batch["y_clean"]), (1.0 - lam, batch["y_b"], batch.get("y_clean_b"))]
        acc = acc_clean = memorized = flipped_count = 0.0
        for w, y, y_clean in sides:
            hit = (pred == y).float()
            flipped = (y != y_clean).float() if y_clean is not None else torch.zeros_like(hit)
            acc = acc + w * hit.mean()
            if y_clean is not None:
                acc_clean = acc_clean + w * (pred == y_clean).float().mean()
            # train/memorized = (flipped samples predicted as their noisy label) / (flipped samples)
            memorized = memorized + w * (flipped * hit).sum()
            flipped_count = flipped_count + w * flipped.sum()
        means.add_mean("train/acc", acc, n)
        means.add_mean("train/acc_clean", acc_clean, n)
        means.add_ratio("train/memorized", memorized, flipped_count)
        if mixed or "train/mixed" in means:
            means.add_mean("train/mixed", torch.ones((), device=pred.device) if mixed else
                           torch.zeros((), device=pred.device), n)
        if logs_this_step(self._trainer):  # the step loss, to the loggers only, on the steps they write
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=n)

    def on_train_epoch_end(self) -> None:
        if self.check_finite:
            self.finite.raise_if_seen()
        self.epoch_means.flush(self.log, self.device, prog_bar=("train/acc",))

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self.eval_logits(batch["x"])
        pred = logits.argmax(1)
        split = self.trainer.datamodule.val_split_names[dataloader_idx]
        metric = self.val_acc if split == "val" else self.test_acc
        metric(pred, batch["y"])
        self.log(f"{split}/acc", metric, on_epoch=True, prog_bar=True, add_dataloader_idx=False)
        loss = F.cross_entropy(logits.float(), batch["y"])
        self.log(f"{split}/loss", loss, on_epoch=True, add_dataloader_idx=False, batch_size=len(pred))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        pred = self.eval_logits(batch["x"]).argmax(1)
        self.test_acc(pred, batch["y"])
        self.log("test/acc", self.test_acc, on_epoch=True)

    def configure_optimizers(self) -> Any:
        opt = self.build_optimizer(self.net.parameters())
        sched = build_scheduler(self.cfg.scheduler, opt, self.cfg.trainer.epochs, self.trainer)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    # ---- reproducible resume: the RNG state travels with the checkpoint -------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["rng_cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_cpu" in checkpoint:
            torch.set_rng_state(checkpoint["rng_cpu"])
        if "rng_cuda" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["rng_cuda"])
