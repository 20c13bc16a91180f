"""Confident learning: find the label issues from out-of-sample predicted probabilities, then drop or relabel them.

Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 70, 2021
(arXiv 1911.00068). The search itself is the `cleanlab` library's (`cleanlab.filter.find_label_issues`, the authors'
own implementation, used as it is): from the noisy labels ỹ and out-of-sample probabilities p̂(y = j | x) it counts
the confident joint

    C[i][j] = |{x : ỹ = i, p̂(j | x) ≥ t_j, j = argmax_{l : p̂(l|x) ≥ t_l} p̂(l | x)}|,   t_j = mean_{x : ỹ = j} p̂(j | x)

calibrates it to the joint Q(ỹ, y*) and flags, per `filter_by`, the samples to prune (default
`prune_by_noise_rate`: for each off-diagonal (i, j), the n · Q[i][j] samples labelled i with the largest margin
p̂(j | x) − p̂(i | x)).

Out-of-sample probabilities: k-fold cross-validation on the training split, as the paper and cleanlab do
(`CleanLearning`'s `cv_n_folds`); predictions of the network being trained would be in-sample, and a network that has
fit (or memorised) a wrong label gives it a high probability, so issues would be missed. At the start of the fit
(`on_fit_start`, before the first epoch), `folds` copies of the network (`module.build_network()`, fresh seeded
weights, `module.build_optimizer()`) are each trained for `cv_epochs` epochs on the other folds (stratified by the
noisy label, `sklearn.model_selection.StratifiedKFold`), with the run's batch size, its training augmentation and
a cosine learning rate over the fold's steps from `optim.lr` to 0, on the module's device; each then predicts its
held-out fold in eval mode. Everything is seeded by the run's seed and drawn inside a forked RNG, so the main run
trains exactly as it would without the search. The seconds spent are logged (`confident_learning/cv_seconds`) with
the share flagged (`confident_learning/flagged`).

What is done with the flagged samples for the whole run (`action`):

- `drop` (default; the paper's "CL: prune, then train"): the training subset is the unflagged positions
  (`datamodule.set_train_subset`, saved in the datamodule's checkpoint state); the strategy exposes that kept set
  (`kept_mask`), which `diagnostics` scores against the true flip mask.
- `relabel`: the flagged samples' labels become the argmax of their out-of-sample probabilities. The corrected labels
  live in a `PerSampleBuffer` (checkpointed), and `on_batch` replaces the batch's `y` by them, so any loss (cross-
  entropy, or a robust loss from another strategy) trains against the corrected labels without a loss of its own;
  the module's training metrics then read the corrected labels as well.

Both actions take the `sets_subset` role (the class flag cannot depend on a parameter at config load).

Defaults: folds = 5 (cleanlab's `cv_n_folds`; the paper used 4 on CIFAR-10), filter_by = prune_by_noise_rate
(cleanlab's default and the paper's main variant, "C_confusion"/"PBNR"), cv_epochs = null, meaning the run's
`trainer.epochs` (each fold model trained like the final one, as in the paper).

Cost: `folds` trainings of (folds − 1)/folds of the split for `cv_epochs` epochs each, i.e. (folds − 1) · cv_epochs
epochs of training before the run (4× the run's training at the defaults), plus one prediction pass; cleanlab's
search is negligible. Under 16-mixed precision the fold models train in float32 (no loss scaler), under bf16-mixed
in bf16 autocast. Nothing oracle. When to use it: class-conditional noise (the paper's assumption), with enough
samples per class for the per-class thresholds; the fold models must be reasonably calibrated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError, RunFailed
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.params import is_whole
from robustlearn.strategies.passes import bf16_autocast, train_pass
from robustlearn.strategies.scoring import scoring

# cleanlab 2.x's filter_by options (cleanlab.filter.find_label_issues)
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_normalized_margin", "low_self_confidence")
ACTIONS = ("drop", "relabel")
_SALT = 71  # seeds of the fold models and their batch orders
_clock = time.perf_counter  # the search's timer (a test replaces it to compare two runs' metrics)


def _device_rng(device: torch.device):
    devices = [device.index if device.index is not None else 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def train_fold_model(module: pl.LightningModule, dm, train_idx: np.ndarray, epochs: int, seed: int,
                     fold: int) -> torch.nn.Module:
    """A fresh network trained on the positions `train_idx` for `epochs` epochs (cross-entropy, cosine LR)."""
    trainer = module.trainer
    device = module.device
    tensors = dm.train_tensors()
    torch.manual_seed(epoch_seed(seed, fold, salt=_SALT))
    net = module.build_network().to(device)
    opt = module.build_optimizer(net.parameters())
    batch = dm.train_batch_size
    n = len(train_idx)
    per_epoch = n // batch if getattr(module, "compiled", False) and n >= batch else -(-n // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * per_epoch))
    order_gen = torch.Generator().manual_seed(epoch_seed(seed, fold, salt=_SALT + 1))
    views = torch.Generator(device=device).manual_seed(epoch_seed(seed, fold, salt=_SALT + 2))
    idx_all = torch.as_tensor(train_idx, dtype=torch.long)
    net.train()
    for _ in range(epochs):
        order = idx_all[torch.randperm(n, generator=order_gen)]
        batches = [order[step * batch : (step + 1) * batch] for step in range(per_epoch)]
        train_pass(net, dm, tensors["x"], tensors["y"], batches, views, opt, device, classes=module.num_classes,
                   schedule=sched, clip=trainer.gradient_clip_val or 0.0,
                   autocast=lambda: bf16_autocast(trainer, device))
    return net


def predict_probs(module: pl.LightningModule, dm, net: torch.nn.Module, idx: np.ndarray) -> np.ndarray:
    """Softmax of `net` (eval mode) on the positions `idx`, float64 (len(idx), K) on the host."""
    tensors = dm.train_tensors()
    store = tensors["y"].device
    pos = torch.as_tensor(idx, dtype=torch.long)
    size = dm.data_cfg.eval_batch_size
    out = []
    with scoring(net), bf16_autocast(module.trainer, module.device):
        for start in range(0, len(pos), size):
            x = tensors["x"][pos[start : start + size].to(store)].to(module.device, non_blocking=True)
            out.append(torch.softmax(net(x)[:, : module.num_classes].float(), dim=1).double().cpu())
    return torch.cat(out).numpy()


def out_of_fold_probs(module: pl.LightningModule, dm, folds: int, epochs: int, seed: int) -> np.ndarray:
    """Out-of-sample p̂(y | x) for the whole training split by stratified k-fold cross-validation, (N, K)."""
    from sklearn.model_selection import StratifiedKFold

    labels = dm.train_tensors()["y"].cpu().numpy()
    counts = np.bincount(labels, minlength=module.num_classes)
    present = counts[counts > 0]
    if present.min() < folds:
        raise RunFailed(f"confident_learning: folds = {folds} but a class has only {present.min()} training "
                        "samples; every class needs at least `folds` samples for stratified folds.")
    probs = np.zeros((len(labels), module.num_classes))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=epoch_seed(seed, 0, _SALT) % 2**32)
    with _device_rng(module.device):  # the main run's RNG streams are left where they were
        for fold, (train_idx, held_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            net = train_fold_model(module, dm, train_idx, epochs, seed, fold)
            probs[held_idx] = predict_probs(module, dm, net, held_idx)
            del net
    return probs


@STRATEGIES.register("confident_learning")
class ConfidentLearning(Strategy):
    """Confident learning (Northcutt et al. 2021) through cleanlab: k-fold out-of-sample probabilities, label issues
    found by `find_label_issues`, then dropped or relabelled for the whole run."""

    needs = ("datamodule", "num_classes")

    sets_subset = True
    state_attrs = ("issues", "labels", "cv_seconds")

    @dataclass
    class Params:
        action: str = "drop"  # drop: train without the flagged samples; relabel: argmax of their out-of-sample p̂
        folds: int = 5  # cross-validation folds, >= 2 (cleanlab's cv_n_folds default: 5)
        filter_by: str = "prune_by_noise_rate"  # cleanlab's find_label_issues filter (its default)
        cv_epochs: int | None = None  # epochs per fold model, >= 1; null: trainer.epochs (trained like the final model)

        def __post_init__(self):
            if self.action not in ACTIONS:
                raise ConfigError(f"confident_learning: action = {self.action!r}; allowed: {', '.join(ACTIONS)}.",
                                  "action")
            if not (is_whole(self.folds) and self.folds >= 2):
                raise ConfigError(f"confident_learning: folds = {self.folds!r} must be an integer >= 2.", "folds")
            if self.filter_by not in FILTERS:
                raise ConfigError(f"confident_learning: filter_by = {self.filter_by!r}; allowed (cleanlab): "
                                  f"{', '.join(FILTERS)}.", "filter_by")
            if self.cv_epochs is not None and not (is_whole(self.cv_epochs) and self.cv_epochs >= 1):
                raise ConfigError(f"confident_learning: cv_epochs = {self.cv_epochs!r} must be an integer >= 1 or "
                                  "null (trainer.epochs).", "cv_epochs")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.issues = PerSampleBuffer(dtype=torch.bool)  # True where cleanlab flags the label
        self.labels = PerSampleBuffer(dtype=torch.long)  # relabel: the corrected labels
        self.cv_seconds: float | None = None  # None until the search ran (a resumed run has it from the checkpoint)
        self.pred_probs: np.ndarray | None = None  # the out-of-sample p̂ of this process's search (not checkpointed)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Callbacks and the datamodule are restored before this hook: a resumed run keeps its flags and subset.
        if self.issues.values is not None:
            return
        dm = self.datamodule(trainer)
        seed = int(pl_module.cfg.seed) if hasattr(pl_module, "cfg") else torch.initial_seed()
        epochs = self.params.cv_epochs or int(trainer.max_epochs)
        start = _clock()
        probs = out_of_fold_probs(pl_module, dm, self.params.folds, epochs, seed)
        self.cv_seconds = _clock() - start
        self.apply(probs, dm.train_tensors()["y"].cpu().numpy(), pl_module.device)
        if trainer.world_size > 1:  # one decision for every rank: the first rank's
            values = trainer.strategy.broadcast((self.issues.values.cpu(), self.labels.values.cpu()), src=0)
            self.issues.values, self.labels.values = (v.to(pl_module.device) for v in values)
        if self.params.action == "drop":
            dm.set_train_subset(torch.nonzero(~self.issues.values).squeeze(1).cpu())

    def apply(self, pred_probs: np.ndarray, labels: np.ndarray, device: torch.device | str = "cpu") -> None:
        """Flag the label issues from out-of-sample `pred_probs` (N, K) and the noisy `labels` (N,) with cleanlab,
        and set the corrected labels (the flagged ones replaced by the argmax of `pred_probs`)."""
        from cleanlab.filter import find_label_issues

        self.pred_probs = pred_probs
        flags = find_label_issues(labels, pred_probs, filter_by=self.params.filter_by, n_jobs=1)
        corrected = np.where(flags, pred_probs.argmax(1), labels)
        self.issues.values = torch.as_tensor(flags, dtype=torch.bool, device=device)
        self.labels.values = torch.as_tensor(corrected, dtype=torch.long, device=device)

    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        if self.params.action != "relabel" or self.labels.values is None:
            return batch
        out = dict(batch)
        out["y"] = self.labels[batch["index"]]
        return out

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.issues.values is None:
            return
        self.log_metric(pl_module, "flagged", float(self.issues.values.float().mean()))
        self.log_metric(pl_module, "cv_seconds", float(self.cv_seconds or 0.0))

    def kept_mask(self) -> torch.Tensor | None:
        if self.params.action != "drop" or self.issues.values is None:
            return None
        return ~self.issues.values
