"""Logger set-up: Weights & Biases through Lightning's WandbLogger (online | offline | disabled).

group = experiment (a sweep sets it to the sweep name), job_type = method, tags, and the resolved config. The
CSV of per-epoch metrics is written by `RunRecorder` whatever the W&B mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from robustlearn.config import to_dict


def make_loggers(cfg: DictConfig, run_dir: Path, run_id: str) -> list[Any]:
    w = cfg.logger.wandb
    if w.mode == "disabled":
        return []
    from pytorch_lightning.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    return [
        WandbLogger(
            project=w.project,
            entity=w.entity,
            name=run_id,
            id=run_id if cfg.resume else None,
            resume="allow" if cfg.resume else None,
            group=cfg.sweep or cfg.experiment,
            job_type=cfg.method,
            tags=list(cfg.tags),
            config=to_dict(cfg),
            save_dir=str(run_dir),
            mode=w.mode,
        )
    ]


def finish_loggers(loggers: list[Any], failed: bool) -> None:
    """Close every W&B run, failed ones included, so that offline files are complete."""
    for lg in loggers:
        exp = getattr(lg, "_experiment", None)
        if exp is not None:
            exp.finish(exit_code=1 if failed else 0)
