"""The typed config schema: one dataclass per section, with defaults, allowed values and ranges.

Sections whose keys depend on a registered entry (`data`, `noise`, `model`, each strategy) accept the common keys
below plus the keys of that entry's `Params` dataclass. Ranges are written as field metadata
(`gt`, `ge`, `lt`, `le`) and checked by `robustlearn.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal


def rng(default: Any, **bounds: float) -> Any:
    """A field with a default and numeric bounds (gt/ge/lt/le)."""
    return field(default=default, metadata=bounds)


@dataclass
class DataCfg:
    name: str = "fashion_mnist"  # registered dataset
    root: str | None = None  # folder with the files; else $ROBUSTLEARN_DATA, system paths, cache
    download: bool = True  # download (with checksum) when the files are nowhere
    subset: int | None = rng(None, ge=1)  # train on the first N training samples (after `classes`)
    classes: list[int] | None = None  # keep only these classes, relabelled 0..k-1 in this order (e.g. [0, 6])
    val_fraction: float = rng(0.1, ge=0.0, lt=1.0)  # held-out share of the (noisy) training set
    split_seed: int = 0  # seed of the train/validation split, independent of `seed`
    batch_size: int = rng(128, ge=1)
    eval_batch_size: int = rng(1024, ge=1)
    crop_padding: int | None = rng(None, ge=0)  # random crop with this padding; null: dataset default
    hflip: bool | None = None  # random horizontal flip; null: dataset default
    loader: Literal["device", "dataloader"] = "device"  # whole set on the device, or a DataLoader
    num_workers: int = rng(0, ge=0)  # DataLoader workers (loader=dataloader only)


@dataclass
class NoiseCfg:
    kind: str = "none"  # registered noise kind
    rate: float = rng(0.0, ge=0.0, lt=1.0)  # nominal flip rate
    seed: int = 0  # noise seed, independent of the training seed


@dataclass
class ModelCfg:
    name: str = "cnn"  # registered model


@dataclass
class OptimCfg:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = rng(0.05, gt=0.0)
    momentum: float = rng(0.9, ge=0.0, lt=1.0)  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = rng(5e-4, ge=0.0)


@dataclass
class SchedulerCfg:
    name: Literal["none", "cosine", "onecycle", "multistep", "exponential"] = "cosine"
    milestones: list[int] = field(default_factory=list)  # multistep: epochs at which lr *= gamma
    gamma: float = rng(0.1, gt=0.0, le=1.0)  # multistep factor; exponential: lr *= gamma after every epoch
    pct_start: float = rng(0.3, gt=0.0, lt=1.0)  # onecycle warm-up share
    min_lr: float = rng(0.0, ge=0.0)  # cosine floor


@dataclass
class TrainerCfg:
    epochs: int = rng(10, ge=1)  # the epoch budget; max_steps / max_time may end the run earlier
    max_steps: int | None = rng(None, ge=1)  # step budget (optimiser steps); null: none
    max_time: float | None = rng(None, gt=0.0)  # training-time budget in seconds (evaluation excluded); null: none
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = rng(1, ge=1)
    strategy: str = "auto"  # Lightning strategy: auto, ddp, ...
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"  # auto: bf16-mixed on GPU, else 32
    compile: bool = False  # torch.compile the network; the last partial training batch is dropped (one shape)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"  # reduce-overhead: CUDA graphs
    deterministic: bool | None = None  # null: true on CPU (runs reproduce exactly), false on GPU (speed)
    grad_clip: float | None = rng(None, gt=0.0)  # clip the gradient norm
    log_every_n_steps: int = rng(50, ge=1)
    check_finite: bool = True  # stop with status=failed on a NaN/inf loss


@dataclass
class WandbCfg:
    mode: Literal["online", "offline", "disabled"] = "disabled"
    project: str = "robustlearn"
    entity: str | None = None


@dataclass
class LoggerCfg:
    wandb: WandbCfg = field(default_factory=WandbCfg)


@dataclass
class OutputCfg:
    root: str = "runs"  # runs go to <root>/<run_id>/, results to <root>/results.sqlite
    run_id: str | None = None  # null: <method>-<dataset>-<noise><rate>-s<seed>-<hash>
    save_checkpoint: bool = True  # checkpoints/last.ckpt after every epoch


@dataclass
class StrategyCfg:
    name: str  # registered strategy


@dataclass
class Config:
    experiment: str = "default"  # W&B group
    sweep: str | None = None  # set by `robustlearn sweep`
    method: str = "ce"  # the label on the leaderboard
    settings_applied: list[str] = field(default_factory=list)  # per-dataset settings of the method YAML applied
    plugins: list[str] = field(default_factory=list)  # modules or .py files that register entries (plugins.py)
    tuned: str | None = None  # set by `robustlearn tune`'s best-parameter YAML: the budget it was tuned with
    tags: list[str] = field(default_factory=list)
    seed: int = 0  # training seed (init, batch order, augmentation)
    resume: bool = False  # continue from <run_dir>/checkpoints/last.ckpt
    data: DataCfg = field(default_factory=DataCfg)
    noise: NoiseCfg = field(default_factory=NoiseCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    scheduler: SchedulerCfg = field(default_factory=SchedulerCfg)
    trainer: TrainerCfg = field(default_factory=TrainerCfg)
    strategies: list[dict] = field(default_factory=list)
    logger: LoggerCfg = field(default_factory=LoggerCfg)
    output: OutputCfg = field(default_factory=OutputCfg)


def entry_params(values: Any, base: type) -> dict:
    """The keys of a section that belong to its registered entry: every key that is not a field of `base`."""
    common = {f.name for f in fields(base)}
    return {k: v for k, v in dict(values).items() if k not in common}


# Sections extended by the Params of the registered entry they name: section -> (registry attr, name key).
EXTENDED = {"data": ("DATASETS", "name"), "noise": ("NOISES", "kind"), "model": ("MODELS", "name")}

# Keys that do not change what a run computes; left out of the config hash.
BOOKKEEPING = ("experiment", "sweep", "tags", "resume", "logger", "output", "settings_applied", "plugins", "tuned")
