"""`python tests/ddp_protocol_fit.py DUMP_DIR CONFIG [key=value ...]`: one run with the example strategies; every
rank saves, per epoch, the training subset and steps it used, and at the end its peer and main network weights and,
where SOP runs, its per-sample parameters u and v."""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tests.strategy_examples  # noqa: E402,F401  (registers the examples)
from robustlearn.config import load_config  # noqa: E402
from robustlearn.runner import fit  # noqa: E402
from robustlearn.strategies.noisy.sop import SOP  # noqa: E402


class Dump(pl.Callback):
    def __init__(self, folder: Path):
        self.folder = folder
        self.subsets: list = []
        self.steps: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.subsets.append(trainer.datamodule.train_subset)
        self.steps.append(0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps[-1] += 1

    def on_train_end(self, trainer, pl_module):
        peer = next(cb for cb in trainer.callbacks if hasattr(cb, "peer")).peer
        sop = next((cb for cb in trainer.callbacks if isinstance(cb, SOP)), None)
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save({"subsets": self.subsets, "steps": self.steps,
                    "u": None if sop is None else sop.u.values.clone(),
                    "v": None if sop is None else sop.v.values.clone(),
                    "peer": [p.detach().clone() for p in peer.parameters()],
                    "main": [p.detach().clone() for p in pl_module.net.parameters()]},
                   self.folder / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    dump, config, *overrides = sys.argv[1:]
    result = fit(load_config(config, [*overrides]), quiet=True, callbacks=[Dump(Path(dump))])
    sys.exit(0 if result["status"] == "completed" else 1)
