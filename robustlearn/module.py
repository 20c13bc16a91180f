"""RobustClassifier: the one LightningModule. It runs the strategy protocol and logs; it knows no method by name."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from robustlearn.errors import ConfigError, RunFailed
from robustlearn.models import build_model
from robustlearn.optim import build_optimizer, build_scheduler
from robustlearn.schema import ModelCfg, entry_params
from robustlearn.strategies.base import Strategy


class RobustClassifier(pl.LightningModule):
    def __init__(self, cfg: DictConfig, num_classes: int, input_shape: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        model_params = entry_params(cfg.model, ModelCfg)
        self.net = build_model(cfg.model.name, model_params, tuple(input_shape), num_classes)
        if len(input_shape) == 3:  # images arrive channels_last (batch contract); convolutions run best so
            self.net = self.net.to(memory_format=torch.channels_last)
        if cfg.trainer.compile:
            self.net = torch.compile(self.net)
        acc = lambda: MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.train_acc, self.train_acc_clean = acc(), acc()
        self.val_acc, self.test_acc = acc(), acc()
        self.train_memorized = MeanMetric()
        self._strategies: list[Strategy] | None = None
        self._provider: Strategy | None = None

    # ---- strategies ------------------------------------------------------------------------------------
    def _find_strategies(self) -> None:
        """The trainer's strategies in config order and the one loss provider, found once."""
        found = [cb for cb in self.trainer.callbacks if isinstance(cb, Strategy)] if self._trainer else []
        providers = [s for s in found if s.provides_loss]
        if len(providers) > 1:
            names = " and ".join(s.name for s in providers)
            raise ConfigError(f"strategies: {names} both provide the training loss; keep one of them.", "strategies")
        self._provider = providers[0] if providers else None
        self._strategies = sorted(found, key=lambda s: s.position)

    @property
    def strategies(self) -> list[Strategy]:
        if self._strategies is None:
            self._find_strategies()
        return self._strategies

    def loss_provider(self) -> Strategy | None:
        if self._strategies is None:
            self._find_strategies()
        return self._provider

    def criterion(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Per-sample training loss: the providing strategy's, else cross-entropy against the observed label."""
        provider = self.loss_provider()
        if provider is not None:
            return provider.loss(logits, batch)
        return F.cross_entropy(logits.float(), batch["y"], reduction="none")

    # ---- steps -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        for s in self.strategies:
            batch = s.on_batch(batch, self)
        logits = self(batch["x"])
        per_sample = self.criterion(logits, batch)
        weights = batch.get("weight")
        weights = torch.ones_like(per_sample) if weights is None else weights.to(per_sample.dtype)
        for s in self.strategies:
            weights = s.weights(per_sample, logits, batch, weights)
        loss = (weights * per_sample).sum() / per_sample.numel()
        for s in self.strategies:
            extra = s.penalty(logits, batch)
            if extra is not None:
                loss = loss + extra
        if self.cfg.trainer.check_finite and not torch.isfinite(loss):
            raise RunFailed(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, step {self.global_step}; "
                "lower optim.lr, set trainer.grad_clip, or check the strategy's parameters."
            )
        self._log_train(logits.detach(), per_sample.detach(), loss.detach(), batch)
        # Handed to on_train_batch_end hooks through `outputs`.
        return {"loss": loss, "per_sample": per_sample.detach(), "logits": logits.detach(), "batch": batch}

    def _log_train(self, logits: torch.Tensor, per_sample: torch.Tensor, loss: torch.Tensor, batch: dict) -> None:
        pred = logits.argmax(1)
        n = len(pred)
        self.train_acc(pred, batch["y"])
        self.train_acc_clean(pred, batch["y_clean"])
        flipped = batch["y"] != batch["y_clean"]
        if flipped.any():
            self.train_memorized.update((pred[flipped] == batch["y"][flipped]).float())
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc_clean", self.train_acc_clean, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        if self.train_memorized.update_count:
            self.log("train/memorized", self.train_memorized.compute())
        self.train_memorized.reset()

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch["x"])
        pred = logits.argmax(1)
        split = self.trainer.datamodule.val_split_names[dataloader_idx]
        metric = self.val_acc if split == "val" else self.test_acc
        metric(pred, batch["y"])
        self.log(f"{split}/acc", metric, on_epoch=True, prog_bar=True, add_dataloader_idx=False)
        loss = F.cross_entropy(logits.float(), batch["y"])
        self.log(f"{split}/loss", loss, on_epoch=True, add_dataloader_idx=False, batch_size=len(pred))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        pred = self(batch["x"]).argmax(1)
        self.test_acc(pred, batch["y"])
        self.log("test/acc", self.test_acc, on_epoch=True)

    def configure_optimizers(self) -> Any:
        opt = build_optimizer(self.cfg.optim, self.net.parameters())
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
