"""`python tests/ddp_presample_fit.py DUMP_DIR CONFIG [key=value ...]`: a presample run; every rank saves, per step,
the common candidates' positions, the gathered scores, the scores of all candidates recomputed on that rank (steps
that presample), the positions and weights it trained on and τ̄ after the step (every step)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustlearn.config import load_config  # noqa: E402
from robustlearn.runner import fit  # noqa: E402
from robustlearn.strategies.sampling.presample import Presample  # noqa: E402


class Dump(pl.Callback):
    def __init__(self, folder: Path):
        self.folder = folder
        self.steps: list[dict] = []

    def on_train_start(self, trainer, pl_module):
        strategy = self.strategy = next(cb for cb in trainer.callbacks if isinstance(cb, Presample))
        inner = strategy._draw_and_score

        def recorded(module, b, n):
            big, s, pick, w, p = inner(module, b, n)
            every = strategy.scores(big["x"], big["y"], module)
            self.steps.append({"candidates": big["index"].clone(), "scores": s.clone(), "every": every.clone(),
                               "pick": pick.clone()})
            return big, s, pick, w, p

        strategy._draw_and_score = recorded

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.steps or "trained" in self.steps[-1]:  # a step that drew no candidates
            self.steps.append({})
        self.steps[-1].update(trained=outputs["batch"]["index"].clone(), weight=outputs["weights"].clone(),
                              tau=self.strategy.tau_bar.detach().clone(), epoch=trainer.current_epoch)

    def on_train_end(self, trainer, pl_module):
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.steps, self.folder / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    dump, config, *overrides = sys.argv[1:]
    result = fit(load_config(config, [*overrides]), quiet=True, callbacks=[Dump(Path(dump))])
    sys.exit(0 if result["status"] == "completed" else 1)
