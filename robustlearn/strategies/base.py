"""The strategy protocol: a method is a `pl.Callback` that the module asks at fixed points of a training step.

Order inside `RobustClassifier.training_step` (see DESIGN.md):

1. ``batch = s.on_batch(batch, module)``          transform or replace the batch (deficits, presampling)
2. ``per_sample = provider.loss(logits, batch)``  the one strategy with ``provides_loss = True``, else CE
3. ``weights = s.weights(per_sample, logits, batch, weights)``   importance weights, selection masks
4. ``loss = sum(weights * per_sample) / B + sum(s.penalty(logits, batch))``
5. ``s.on_train_batch_end(...)``                    record per-sample statistics (Lightning hook)

The reduction in 4 is the unbiased mean: a strategy that drops samples scales its mask (mask / mask.mean())
when it wants the mean over the kept ones. Per-sample state lives in device tensors indexed by ``batch["index"]``
and is saved through ``state_dict`` / ``load_state_dict`` in the checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch

from robustlearn.schema import StrategyCfg, entry_params


class Strategy(pl.Callback):
    """Base class of every method. Subclasses register with `@STRATEGIES.register("name")`."""

    @dataclass
    class Params:
        pass

    provides_loss: ClassVar[bool] = False
    registry_name: ClassVar[str] = "strategy"

    def __init__(self, params: Any = None, position: int = 0):
        self.params = params if params is not None else self.Params()
        self.position = position

    @classmethod
    def from_config(cls, values: dict, position: int = 0) -> Strategy:
        return cls(cls.Params(**entry_params(values, StrategyCfg)), position)

    @property
    def name(self) -> str:
        return self.registry_name

    @property
    def state_key(self) -> str:
        # Two strategies of one class may run together; the position keeps their checkpoint state apart.
        return f"{self.name}[{self.position}]"

    # ---- the hooks the module calls -------------------------------------------------------------------------
    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        return batch

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} sets provides_loss but has no loss()")

    def weights(
        self, per_sample: torch.Tensor, logits: torch.Tensor, batch: dict, weights: torch.Tensor
    ) -> torch.Tensor:
        return weights

    def penalty(self, logits: torch.Tensor, batch: dict) -> torch.Tensor | None:
        return None

    # ---- helpers --------------------------------------------------------------------------------------------
    def log(self, module: pl.LightningModule, key: str, value: Any, **kwargs: Any) -> None:
        """Log under the strategy's name (`<name>/<key>`), per epoch by default."""
        kwargs.setdefault("on_epoch", True)
        kwargs.setdefault("on_step", False)
        module.log(f"{self.name}/{key}", value, **kwargs)

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self.params)}
