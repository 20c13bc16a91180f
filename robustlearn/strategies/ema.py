"""`EMANetwork`: a network whose weights are an exponential moving average of another's ("mean teacher").

ELR+ predicts its targets with such averages of its two networks. Written once here:

- built by `module.build_network()` (the same model config and layout) on the module's device, starting from the
  source network's weights;
- `update(source, step)`: w_ema <- a w_ema + (1 - a) w for every parameter, with a = `alpha` times the sigmoid ramp
  exp(-5 (1 - min(step + 1, ramp) / ramp)^2) (Laine & Aila's ramp, as the official ELR+ `update_ema_variables` with
  `ema_update: true`), so that early averages follow the network closely; buffers (BatchNorm statistics) are not
  averaged, as in the official code. On the device, no host read;
- called, it runs in training mode without gradient (the official ELR+ calls its averages in `train()` mode, so
  BatchNorm uses the batch's statistics);
- `state_dict()` / `load_state_dict()`: its weights (list it in `state_attrs`).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from robustlearn.strategies.ramps import sigmoid_rampup


class EMANetwork:
    def __init__(self, module: pl.LightningModule, source: nn.Module, alpha: float = 0.997, ramp: float = 0.0):
        self.net: nn.Module = module.build_network().to(module.trainer.strategy.root_device)
        self.net.load_state_dict(source.state_dict())
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.alpha, self.ramp = float(alpha), float(ramp)

    def rate(self, step: int) -> float:
        """a at optimiser step `step` (counted from 0)."""
        return sigmoid_rampup(step + 1, self.ramp) * self.alpha

    @torch.no_grad()
    def update(self, source: nn.Module, step: int) -> None:
        a = self.rate(step)
        ema = list(self.net.parameters())
        new = [p.detach() for p in source.parameters()]
        torch._foreach_mul_(ema, a)
        torch._foreach_add_(ema, new, alpha=1.0 - a)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.net.train()
        return self.net(x)

    def state_dict(self) -> dict[str, Any]:
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state)
