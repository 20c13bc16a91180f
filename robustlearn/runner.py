"""`fit`: one run from a validated config to its outputs.

Writes `<output.root>/<run_id>/`: `config.yaml` (resolved), `metrics.csv`, `result.json`,
`checkpoints/last.ckpt`, and one row in `<output.root>/results.sqlite`. Everything that can be bad input (names,
data files, model/input mismatch, a missing checkpoint to resume) is checked before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from robustlearn.budget import TrainingTimeBudget
from robustlearn.config import config_hash, hyperparameters, run_id, to_yaml
from robustlearn.data.datamodule import RobustDataModule
from robustlearn.errors import ConfigError
from robustlearn.module import RobustClassifier
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.tracking.loggers import finish_loggers, make_loggers
from robustlearn.tracking.recorder import RunRecorder
from robustlearn.tracking.store import ResultsStore


def build_strategies(cfg: DictConfig) -> list[Strategy]:
    out = []
    for i, values in enumerate(cfg.strategies):
        cls = STRATEGIES.get(values["name"], key=f"strategies[{i}].name")
        out.append(cls.from_config(dict(values), position=i))
    return out


def _on_gpu(cfg: DictConfig) -> bool:
    acc = cfg.trainer.accelerator
    return acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available())


def _precision(cfg: DictConfig) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    return "bf16-mixed" if _on_gpu(cfg) else "32-true"


def _deterministic(cfg: DictConfig) -> bool:
    return (not _on_gpu(cfg)) if cfg.trainer.deterministic is None else cfg.trainer.deterministic


def _compiled(cfg: DictConfig, strategies: Sequence[Strategy]) -> bool:
    """Whether this run compiles: `trainer.compile`, unless a strategy cannot run compiled (then a message)."""
    if not cfg.trainer.compile:
        return False
    blockers = [s.name for s in strategies if not s.compilable]
    if blockers:
        print(f"robustlearn: trainer.compile: {', '.join(blockers)} cannot run with a compiled network; this run "
              "trains eager (result.json records compiled: false).", file=sys.stderr)
        return False
    # A graph that torch.compile cannot build runs eager with torch's own warning, instead of failing the run.
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    return True


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")



def fit(cfg: DictConfig, quiet: bool = False, callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """Train one run. Raises ConfigError for bad input (nothing written); otherwise returns the result dict,
    whose `status` is `completed`, `failed` (the reason in `error`) or `interrupted` (then KeyboardInterrupt
    is raised after recording)."""
    _quiet_lightning()
    rid = run_id(cfg)
    chash = config_hash(cfg)
    root = Path(cfg.output.root)
    run_dir = root / rid
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if cfg.resume and not ckpt.is_file():
        raise ConfigError(f"resume: there is no checkpoint to resume at {ckpt}; run without resume=true.", "resume")

    # Bad input surfaces here, before any file is written.
    strategies = build_strategies(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = RobustDataModule(cfg).load()
    compiled = _compiled(cfg, strategies)
    dm.static_batches = compiled
    module = RobustClassifier(cfg, dm.num_classes, dm.input_shape, compile=compiled,
                              extra_logits=sum(s.extra_logits for s in strategies))

    # Under DDP, Lightning starts ranks > 0 by running the same command again: only the first prepares files.
    first = int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    if first and run_dir.exists() and not cfg.resume:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if first:
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    store = ResultsStore(root / "results.sqlite")

    recorder = RunRecorder(run_dir, save_checkpoint=cfg.output.save_checkpoint)
    budget = cfg.trainer.max_time
    extra: list[pl.Callback] = [] if budget is None else [TrainingTimeBudget(budget)]
    if not quiet:
        from pytorch_lightning.callbacks import RichProgressBar

        extra.append(RichProgressBar(leave=True))
    loggers = make_loggers(cfg, run_dir, rid)
    t = cfg.trainer
    deterministic = _deterministic(cfg)
    trainer = pl.Trainer(
        max_epochs=t.epochs,
        max_steps=-1 if t.max_steps is None else t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=_precision(cfg),
        deterministic=deterministic,
        benchmark=not deterministic and _on_gpu(cfg),
        gradient_clip_val=t.grad_clip,
        log_every_n_steps=t.log_every_n_steps,
        callbacks=[*strategies, recorder, *extra, *callbacks],
        logger=loggers or False,
        enable_checkpointing=True,  # RunRecorder is the checkpoint callback
        enable_progress_bar=not quiet,
        enable_model_summary=not quiet,
        num_sanity_val_steps=0,
        # Strategies may change the next epoch's subset or batch size: the training loader is asked again every
        # epoch, so the epoch's length and its validation point follow (docs/design.md, "Epoch subsets").
        reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,  # both loader paths shard by rank themselves
        default_root_dir=str(run_dir),
    )

    result: dict[str, Any] = {
        "run_id": rid, "experiment": cfg.experiment, "sweep": cfg.sweep, "method": cfg.method,
        "dataset": cfg.data.name, "model": cfg.model.name, "noise_kind": cfg.noise.kind,
        "noise_rate": cfg.noise.rate, "noise_rate_actual": float(dm.noise_info.rate_actual), "seed": cfg.seed,
        "config_hash": chash, "status": "running", "error": None, "epochs": t.epochs, "tags": list(cfg.tags),
        "run_dir": str(run_dir), "train_size": dm.train_size, "device": None,
        "strategies": [s.name for s in strategies], "noise": dm.noise_info.summary(),
        "oracle": "; ".join(s.oracle for s in strategies if s.oracle) or None, "compiled": compiled,
        "settings_applied": list(cfg.settings_applied), "tuned": cfg.tuned,
        "hyperparameters": hyperparameters(cfg),
    }
    interrupted = False
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if cfg.resume else None)
        result["status"] = "completed"
    except SystemExit:
        if not trainer.interrupted:
            raise
        interrupted = True
        result.update(status="interrupted", error="interrupted by the user (SIGINT)")
    except KeyboardInterrupt:
        interrupted = True
        result.update(status="interrupted", error="interrupted by the user (SIGINT)")
    except Exception as exc:  # the run failed: record why, let the caller choose the exit code
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        finish_loggers(loggers, failed=result["status"] != "completed")

    result.update(recorder.summary())
    result["device"] = str(trainer.strategy.root_device)
    done = result.get("epochs_done", 0)
    result["samples_per_s"] = dm.train_size * done / result["train_time_s"] if result.get("train_time_s") else None
    result["finished_at"] = time.time()
    if trainer.is_global_zero:
        tmp = run_dir / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, default=str))
        os.replace(tmp, run_dir / "result.json")
        store.record(result)
    if interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt
    return result
