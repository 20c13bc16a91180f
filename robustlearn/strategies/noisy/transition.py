"""The transition matrix T of loss correction, shared by forward and backward correction.

Patrini, Rozza, Menon, Nock & Qu, "Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach",
CVPR 2017.

T[i, j] = P(observed label j | true label i). It comes from one of two places (`matrix`):

- ``true``: the nominal matrix of the run's noise generator (`noise_info.transition`). Oracle information: the
  strategy's `oracle` is "true T" and the run records it.
- ``estimated`` (default): plain cross-entropy for `warmup_epochs` epochs; at the end of the last warm-up epoch one
  eval-mode pass over the training split gives p(·|x) for every sample, and for each class i the anchor is the sample
  whose p(i|x) is the largest one below the `percentile`-th percentile of p(i|x) over the split (the paper's robust
  variant of the argmax; the official code's `NoiseEstimator(filter_outlier=True)`, percentile 97 with numpy's
  "higher" interpolation). Row i of T is p(·|anchor_i), normalised to sum to one. `percentile: 100` is the plain
  argmax. The true T is never read.

The estimate is made once, checkpointed (`state_attrs`) and logged from the epoch that made it on (the same values
every epoch): `t_diag_mean` (the mean estimated probability that a label is kept) and `t_cond` (its condition
number).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError, RunFailed
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.full_pass import full_pass
from robustlearn.strategies.params import is_number, is_whole

MATRICES = ("estimated", "true")
# Beyond this condition number a float32 inverse of T is dominated by rounding: backward correction refuses it.
MAX_CONDITION = 1e6


def estimate_transition(probs: torch.Tensor, percentile: float = 97.0) -> torch.Tensor:
    """T (K, K) from the softmax outputs `probs` (N, K) of a network trained on the noisy labels.

    Row i is p(·|x_a) for the anchor a of class i: the sample with the largest p(i|x) strictly below the
    `percentile`-th percentile of column i ("higher" interpolation), or the argmax of column i for percentile 100.
    Rows are normalised to sum to one."""
    probs = probs.double()
    if percentile >= 100.0:
        anchors = probs.argmax(0)
    else:
        threshold = torch.quantile(probs, percentile / 100.0, dim=0, interpolation="higher")
        anchors = probs.masked_fill(probs >= threshold, 0.0).argmax(0)
    t = probs[anchors]
    return t / t.sum(1, keepdim=True)


def condition_number(t: torch.Tensor) -> float:
    """The 2-norm condition number of T (inf where T is singular or not finite)."""
    t = t.detach().double().cpu()
    if not torch.isfinite(t).all():
        return math.inf
    cond = float(torch.linalg.cond(t))
    return cond if math.isfinite(cond) else math.inf


def check_invertible(t: torch.Tensor, who: str, source: str) -> None:
    """RunFailed naming the reason where T cannot be inverted reliably (backward correction needs T⁻¹)."""
    cond = condition_number(t)
    if cond > MAX_CONDITION:
        raise RunFailed(
            f"{who}: the {source} transition matrix is singular or nearly so (condition number {cond:.3g} > "
            f"{MAX_CONDITION:.0e}), so T⁻¹ does not exist or is meaningless; backward correction cannot run. "
            "Symmetric noise at rate (K-1)/K, for example, makes every row equal. Use forward_correction, or noise "
            "that leaves T invertible."
        )


class TransitionCorrection(Strategy):
    """The shared part of forward and backward correction: T from the noise generator or estimated after a
    warm-up; `corrected(logits, y, prepared)` is the subclass's loss, `prepare(T)` what it needs of T."""

    provides_loss = True
    state_attrs: ClassVar[tuple[str, ...]] = ("transition",)

    @property
    def needs(self) -> tuple[str, ...]:
        return ("datamodule", *(("noise_transition",) if self.params.matrix == "true" else ()))

    @dataclass
    class Params:
        matrix: str | bool = "estimated"  # estimated (anchor points after a CE warm-up) | true (the oracle T)
        warmup_epochs: int = 5  # estimated: CE epochs before T is estimated (see the method's docs)
        percentile: float = 97.0  # estimated: anchor at this percentile of p(i|x); 100 = argmax

        def __post_init__(self):
            if self.matrix is True:  # YAML reads `matrix: true` as a boolean
                self.matrix = "true"
            if self.matrix not in MATRICES:
                raise ConfigError(f"matrix = {self.matrix!r} is not allowed; use one of: {', '.join(MATRICES)}.",
                                  "matrix")
            if not (is_whole(self.warmup_epochs) and self.warmup_epochs >= 1):
                raise ConfigError(f"warmup_epochs = {self.warmup_epochs!r} must be an integer >= 1 (T is estimated "
                                  "from a network trained on the noisy labels).", "warmup_epochs")
            if not (is_number(self.percentile) and 0.0 < self.percentile <= 100.0):
                raise ConfigError(f"percentile = {self.percentile!r} must lie in (0, 100].", "percentile")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.transition: torch.Tensor | None = None  # float64 (K, K); None while warming up
        self._prepared: torch.Tensor | None = None

    @property
    def oracle(self) -> str | None:
        return "true T" if self.params.matrix == "true" else None

    # ---- what a subclass provides -----------------------------------------------------------------------------
    def prepare(self, t: torch.Tensor) -> torch.Tensor:
        """What the loss needs of T (float64 in, float32 out): T itself, or its inverse."""
        raise NotImplementedError

    def corrected(self, logits: torch.Tensor, y: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- T ----------------------------------------------------------------------------------------------------
    def set_transition(self, t) -> None:
        """Use T (array-like (K, K), rows P(observed | true)) from now on."""
        t = torch.as_tensor(np.asarray(t, dtype=np.float64) if not isinstance(t, torch.Tensor) else t)
        t = t.detach().to(torch.float64)
        if t.ndim != 2 or t.shape[0] != t.shape[1]:
            raise RunFailed(f"{self.name}: the transition matrix must be square (K, K), got {tuple(t.shape)}.")
        self.transition = t
        self._prepared = self.prepare(t.cpu())

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        if self.transition is not None:
            self.set_transition(self.transition)

    # ---- the loss ---------------------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        logits = logits.float()
        if self._prepared is None:  # warming up: plain cross-entropy
            return torch.nn.functional.cross_entropy(logits, batch["y"], reduction="none")
        if self._prepared.device != logits.device:  # once: T follows the logits' device
            self._prepared = self._prepared.to(logits.device)
        return self.corrected(logits, batch["y"], self._prepared)

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        if params.matrix == "estimated" and params.warmup_epochs >= epochs:
            raise ConfigError(
                f"warmup_epochs = {params.warmup_epochs} is not below trainer.epochs = {epochs}: T would never be "
                "estimated and the whole run would be plain cross-entropy. Lower warmup_epochs or train longer.",
                "warmup_epochs",
            )

    # ---- Lightning hooks --------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.params.matrix == "true":
            info = getattr(self.datamodule(trainer), "noise_info", None)
            if info is None:
                raise RunFailed(f"{self.name}: matrix=true needs the noise generator's transition matrix; the "
                                "datamodule has none.")
            self.set_transition(info.transition)  # oracle, by the user's choice (recorded as `oracle`)
        elif self.transition is None:
            self.check_against_trainer(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.params.matrix != "estimated":
            return
        if self.transition is None and trainer.current_epoch + 1 >= self.params.warmup_epochs:
            probs = torch.softmax(full_pass(pl_module, self.datamodule(trainer)), dim=1)  # once per run
            self.set_transition(estimate_transition(probs, self.params.percentile).cpu())
        if self.transition is not None:
            # the same values every epoch from the estimate on, so that a resumed run's rows match
            self.log_metric(pl_module, "t_diag_mean", float(self.transition.diagonal().mean()))
            self.log_metric(pl_module, "t_cond", condition_number(self.transition))
