"""Restarting the module's own training inside one fit: fresh weights, a fresh optimiser, a schedule per stage.

For methods whose protocol is two trainings in a row, the second from scratch (DAC: train with abstention, drop the
samples abstained on, retrain a new network with cross-entropy on the rest). Written once here:

- `reinitialize_network(module, seed)`: new initial weights for `module.net`, from `module.build_network()` (the same
  model config, layout and compilation) drawn from a stream seeded by `seed` inside a forked RNG (the global RNG is
  left where it was), copied into the existing parameters and buffers in place, so the optimiser, DDP and the
  checkpoint keep pointing at the same tensors;
- `reset_optimizer(trainer, module)`: the optimiser's per-parameter state (momentum buffers, Adam's moments and step
  counts) emptied, and its hyperparameters (learning rate, momentum, ...) set back to those of a new optimiser from
  `module.build_optimizer()`;
- `restart_schedule(trainer, module, start, epochs)`: the run's learning-rate schedule (`scheduler.*`) built anew over
  `epochs` epochs from epoch `start`, as if the stage were a run of its own: epoch-wise schedules (cosine, multistep,
  exponential) count epochs from the stage's start, step-wise ones (onecycle, cosine under a budget) follow the
  stage's progress (`stage_progress`) instead of the run's; `follow_stage` re-binds the progress of a restored
  schedule after a resume (the progress function is not in the checkpoint, the rest of the schedule's state is).

Call them at an epoch boundary (`on_train_epoch_end`: the epoch's schedule step is done, the checkpoint is written
right after, so a resumed run restarts from the new state). They need `module.net`, `module.build_network()`,
`module.build_optimizer()` and `module.cfg.scheduler`, as `RobustClassifier` has.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from robustlearn.optim import build_scheduler


def _needs(module: pl.LightningModule, *names: str) -> None:
    for name in names:
        if not hasattr(module, name):
            raise TypeError(f"restart: the module {type(module).__name__} has no {name}; RobustClassifier has "
                            "`net`, `build_network()`, `build_optimizer()` and `cfg.scheduler`.")


def fresh_network(module: pl.LightningModule, seed: int) -> torch.nn.Module:
    """A new network like the module's, its initial weights drawn from a stream seeded by `seed` (global RNG
    untouched), on the module's device."""
    _needs(module, "build_network")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = module.build_network()
    return net.to(module.device)


def reinitialize_network(module: pl.LightningModule, seed: int) -> None:
    """Copy the initial weights of `fresh_network(module, seed)` into `module.net`, parameters and buffers in place."""
    _needs(module, "net")
    fresh = fresh_network(module, seed)
    with torch.no_grad():
        module.net.load_state_dict(fresh.state_dict())


def reset_optimizer(trainer: pl.Trainer, module: pl.LightningModule) -> None:
    """Empty the state of the module's optimiser and set its hyperparameters back to a new optimiser's."""
    _needs(module, "net", "build_optimizer")
    fresh = module.build_optimizer(module.net.parameters())
    for opt in trainer.optimizers:
        opt.state.clear()
        for group, new in zip(opt.param_groups, fresh.param_groups):
            for key, value in new.items():
                if key != "params":
                    group[key] = value
            if "initial_lr" in group:  # what an epoch-wise schedule restarts from
                group["initial_lr"] = group["lr"]


def stage_progress(trainer: pl.Trainer, start: int, epochs: int) -> float:
    """Progress t in [0, 1] through a stage of `epochs` epochs that began at epoch `start`, after the step just taken:
    (epochs of the stage done + steps done in this epoch / steps in this epoch) / epochs."""
    steps = trainer.num_training_batches
    done = trainer.fit_loop.epoch_loop.batch_idx + 1
    within = done / steps if isinstance(steps, int) and steps > 0 else 0.0
    t = (trainer.current_epoch - start + within) / max(1, epochs)
    return min(max(t, 0.0), 1.0)


def follow_stage(scheduler, trainer: pl.Trainer, start: int, epochs: int) -> None:
    """Bind a step-wise schedule on progress (`OneCycleOnProgress`, `CosineOnProgress`) to the stage's progress; an
    epoch-wise one is left alone."""
    if hasattr(scheduler, "progress"):
        scheduler.progress = lambda: stage_progress(trainer, start, epochs)


def restart_schedule(trainer: pl.Trainer, module: pl.LightningModule, start: int, epochs: int) -> None:
    """Replace the run's learning-rate schedule by the same `scheduler.*` over `epochs` epochs from epoch `start`.

    Call `reset_optimizer` first: the new schedule starts from the optimiser's current learning rate."""
    configs = trainer.lr_scheduler_configs
    if not configs:  # scheduler.name = none: the constant rate reset_optimizer set
        return
    _needs(module, "cfg")
    opt = trainer.optimizers[0]
    scheduler = build_scheduler(module.cfg.scheduler, opt, epochs, trainer)["scheduler"]
    if hasattr(scheduler, "progress"):  # built on the run's progress: the stage starts at t = 0 and follows its own
        scheduler.progress = lambda: 0.0
        for group, lr in zip(opt.param_groups, scheduler.get_lr()):  # (onecycle sets the momentum here too)
            group["lr"] = lr
        scheduler._last_lr = [group["lr"] for group in opt.param_groups]
        follow_stage(scheduler, trainer, start, epochs)
    configs[0].scheduler = scheduler
