"""Per-class loss weights (`class_weights`).

Byrd & Lipton, "What is the Effect of Importance Weighting in Deep Learning?", ICML 2019, arXiv:1812.03372.

    w_i ← w_i · c · v_{y_i},      loss = Σ_i w_i ℓ_i / B      (the step's reduction, docs/design.md)

v (K,) is one weight per class, read at the sample's observed label y_i (the only label training has; under label
noise a sample counts with the weight of the class it is labelled as). The incoming w_i are multiplied, not
replaced: they may already hold a presampler's importance weights or another strategy's mask. v is given in one of
two forms, exactly one of them:

- `weights: [v_0, …, v_{K-1}]`, one per class, each > 0 and finite;
- `ratio: r` with `label: c`: class c weighs r, every other class 1 (the r:1 weighting of Byrd & Lipton, whose
  ratios range from 1/256 to 256; the allowed range is that one, 1/256 <= r <= 256). The class key is
  `label` because `class` is a reserved word in Python and cannot be a dataclass field.

`normalize` (default true) sets c = N / Σ_j v_{y_j} = 1 / Σ_k (n_k / N) v_k, with n_k the count of observed label k
over the whole training split, computed once in `setup`: the mean weight over the training set is one, so an epoch
takes steps of the same average size as unweighted training. Without it (c = 1, `normalize: false`, as Byrd &
Lipton train) the effective learning rate is scaled by the mean weight Σ_k (n_k / N) v_k, which changes with r: on
balanced K = 10 classes, r = 256 trains about 26.5 times faster on average and r = 1/256 about 0.9 times, so a
sweep over r also sweeps the step size. Normalising is this repository's default because its runs share one
learning rate across methods; set `normalize: false` to reproduce the paper's setting. The mean is over the whole
training split even where another strategy trains an epoch on a subset.

The weight vector is a device tensor looked up by `batch["y"]` (no host sync in the step). It is derived from the
config and the training labels, which the config fixes, so a resumed run rebuilds the same vector in `setup` and
nothing is checkpointed.

When to use it: class imbalance, or studies of importance weighting. Byrd & Lipton find that for deep networks
trained long enough to separate the training data, importance weights have an effect that fades as training goes on
(on separable data the solution becomes weight-agnostic); L2 regularisation and batch normalisation, but not
dropout, restore some of the effect. The weights matter most early in training. Cost: one gather and one multiply
per step. Not oracle: it reads only the observed labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import DATASETS, STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number, is_whole

RATIO_MIN = 1.0 / 256.0  # Byrd & Lipton's range of r
RATIO_MAX = 256.0


def configured_num_classes(cfg: dict) -> int | None:
    """The number of classes the config's dataset has, where it is known before loading the data; else None."""
    data = cfg.get("data") or {}
    if data.get("classes") is not None:  # data.classes keeps (and relabels) these classes only
        return len(data["classes"])
    name = data.get("name")
    if name is None:
        return None
    try:
        entry = DATASETS.get(name)
    except ConfigError:
        return None
    k = getattr(entry, "num_classes", None)
    if is_whole(k) and k > 0:
        return k
    names = getattr(entry, "class_names", None)
    if isinstance(names, (list, tuple)) and names:
        return len(names)
    if name == "synthetic":  # generated data: K is a data key (blobs) or 2 (moons)
        k = 2 if data.get("kind") == "moons" else data.get("n_classes")
        return k if is_whole(k) else None
    return None


def class_weight_vector(params: Any, num_classes: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    """v (K,) float64 from the parameters; normalised so that the mean of v[labels] is one where `normalize` is set
    (`labels`: the observed labels of the whole training split)."""
    if params.weights is not None:
        v = torch.tensor([float(w) for w in params.weights], dtype=torch.float64)
    else:
        v = torch.ones(num_classes, dtype=torch.float64)
        v[params.label] = float(params.ratio)
    if params.normalize:
        if labels is None:
            raise ValueError("class_weight_vector: normalize needs the training labels")
        counts = torch.bincount(labels.detach().to("cpu", torch.long), minlength=num_classes).to(torch.float64)
        v = v / ((counts * v).sum() / counts.sum())
    return v


@STRATEGIES.register("class_weights")
class ClassWeights(Strategy):
    """Per-class loss weights v_{y_i} (Byrd & Lipton 2019), multiplied into the incoming weights."""

    @property
    def needs(self) -> tuple[str, ...]:
        return ("datamodule",) if self.params.normalize else ("num_classes",)

    @dataclass
    class Params:
        weights: list[float] | None = None  # one weight per class, each > 0 (or give ratio and label)
        ratio: float | None = None  # r of the r:1 weighting of class `label` against the rest, 1/256 <= r <= 256
        label: int | None = None  # the class that weighs `ratio` (0 <= label < K); only with ratio
        normalize: bool = True  # mean weight over the training split = 1 (Byrd & Lipton: false; see the docstring)

        def __post_init__(self):
            if (self.weights is None) == (self.ratio is None):
                raise ConfigError(
                    "class_weights: give exactly one of `weights` (a list, one per class) and `ratio` (with "
                    f"`label`); got weights = {self.weights!r}, ratio = {self.ratio!r}.",
                    "ratio" if self.ratio is not None else "weights")
            if self.weights is not None:
                if isinstance(self.weights, Sequence) and not isinstance(self.weights, str):
                    self.weights = list(self.weights)  # a config's list arrives as an OmegaConf ListConfig
                if not isinstance(self.weights, list) or len(self.weights) < 1:
                    raise ConfigError(f"class_weights: weights = {self.weights!r} must be a non-empty list of numbers "
                                      "> 0, one per class.", "weights")
                for i, w in enumerate(self.weights):
                    if not (is_number(w) and w > 0):
                        raise ConfigError(f"class_weights: weights[{i}] = {w!r} must be a finite number > 0.",
                                          "weights")
                if self.label is not None:
                    raise ConfigError(f"class_weights: label = {self.label!r} is used only with `ratio`; with "
                                      "`weights` give every class its weight in the list.", "label")
            else:
                if not (is_number(self.ratio) and RATIO_MIN <= self.ratio <= RATIO_MAX):
                    raise ConfigError(f"class_weights: ratio = {self.ratio!r} is out of range; it must be >= 1/256 "
                                      f"({RATIO_MIN}) and <= {RATIO_MAX:g} (Byrd & Lipton's range).", "ratio")
                if self.label is None:
                    raise ConfigError("class_weights: `ratio` needs `label`, the class that weighs ratio:1 against "
                                      "the rest.", "label")
                if not (is_whole(self.label) and self.label >= 0):
                    raise ConfigError(f"class_weights: label = {self.label!r} must be a class index, an integer "
                                      ">= 0.", "label")
            if not isinstance(self.normalize, bool):
                raise ConfigError(f"class_weights: normalize = {self.normalize!r} must be true or false.",
                                  "normalize")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.vector: torch.Tensor | None = None  # v (K,), float32 on the training device, set in setup

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        check_against_classes(params, configured_num_classes(cfg))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        num_classes = getattr(pl_module, "num_classes", None)
        labels = None
        if self.params.normalize or num_classes is None:
            dm = self.datamodule(trainer)  # the class counts of the training split (or K) come from the data
            num_classes = num_classes or dm.num_classes
            if self.params.normalize:
                labels = dm.train_tensors()["y"]
        try:
            check_against_classes(self.params, num_classes)
        except ConfigError as exc:
            key = f"strategies[{self.position}].{exc.key}"
            raise ConfigError(f"{key}: {exc}", key) from exc
        v = class_weight_vector(self.params, num_classes, labels)
        self.vector = v.to(trainer.strategy.root_device, torch.float32)

    def weights(self, per_sample, logits, batch, weights, module):
        v = self.vector
        if v.device != weights.device:  # a device comparison, not a tensor read: no sync
            v = self.vector = v.to(weights.device)
        return weights * v[batch["y"]].to(weights.dtype)


def check_against_classes(params: Any, num_classes: int | None) -> None:
    """The class index and the list length against K, where K is known; ConfigError naming the key."""
    if num_classes is None:
        return
    if params.weights is not None and len(params.weights) != num_classes:
        raise ConfigError(f"class_weights: {len(params.weights)} weights for {num_classes} classes; give one "
                          "weight per class.", "weights")
    if params.ratio is not None and params.label >= num_classes:
        raise ConfigError(f"class_weights: label = {params.label} is not a class; the dataset has {num_classes} "
                          f"classes (0 to {num_classes - 1}).", "label")
