"""`predicted_share`: how often the model predicts one class — on the test set, on classes it never trained on, and on
noise images. The measurement of Byrd & Lipton 2019 ("What is the effect of importance weighting in deep learning?",
ICML, arXiv 1812.03372), a diagnostic: it reads test images only and does not change training.

After every training epoch, with the network in eval mode and without gradient, it logs the share of images predicted
as class `target` (an index after `data.classes` relabels, e.g. 0 for the first class of the pair):

- `predicted_share/in_class_test`: the run's own test set (for a pair, its two classes' test images);
- `predicted_share/other_classes`: the test images of the classes `data.classes` left out (absent without it);
- `predicted_share/noise`: `noise_images` images of standard Gaussian noise in the normalised input space (fixed by
  `noise_seed`), i.e. inputs unlike any training image.

Under importance weighting the up-weighted class's share separates early; Byrd & Lipton find the shares converge again
when training continues without regularisation, while L2 and batch norm keep them apart (and dropout does not).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError, RunFailed
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_whole


@STRATEGIES.register("predicted_share")
class PredictedShare(Strategy):
    """How often the model predicts one class: on the test set, on the classes left out by data.classes, and on
    Gaussian-noise images (a measurement for importance-weighting studies; training is unchanged)."""

    needs = ("datamodule",)

    @dataclass
    class Params:
        target: int = 0  # the class whose predicted share is measured (after data.classes relabels)
        noise_images: int = 1000  # Gaussian-noise images to classify, >= 1
        noise_seed: int = 0  # seed of the noise images
        batch_size: int = 1024  # images per forward pass

        def __post_init__(self):
            for key, low in (("target", 0), ("noise_images", 1), ("batch_size", 1)):
                value = getattr(self, key)
                if not (is_whole(value) and value >= low):
                    raise ConfigError(f"predicted_share: {key} = {value!r} must be an integer >= {low}.", key)
            if not is_whole(self.noise_seed):
                raise ConfigError(f"predicted_share: noise_seed = {self.noise_seed!r} must be an integer.",
                                  "noise_seed")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = self.datamodule(trainer)
        if self.params.target >= dm.num_classes:
            raise RunFailed(f"predicted_share: target = {self.params.target} is not a class of this run "
                            f"(0..{dm.num_classes - 1}).")
        g = torch.Generator().manual_seed(int(self.params.noise_seed))
        noise = torch.randn((self.params.noise_images, *dm.input_shape), generator=g)
        if noise.ndim == 4:
            noise = noise.contiguous(memory_format=torch.channels_last)
        self.sets = {"in_class_test": dm.splits["test"]["x"], "noise": noise}
        if getattr(dm, "other_classes_test", None) is not None:
            self.sets["other_classes"] = dm.other_classes_test["x"]

    def shares(self, module: pl.LightningModule) -> dict[str, float]:
        """Share of each image set predicted as `target` (one host read per set)."""
        out = {}
        with module.scoring():
            for name, x in self.sets.items():
                hits = torch.zeros((), dtype=torch.long, device=module.device)
                for start in range(0, len(x), self.params.batch_size):
                    chunk = x[start : start + self.params.batch_size].to(module.device)
                    hits += (module.eval_logits(chunk).argmax(1) == self.params.target).sum()
                out[name] = float(hits) / len(x)
        return out

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name, share in self.shares(pl_module).items():
            self.log_metric(pl_module, name, share)
