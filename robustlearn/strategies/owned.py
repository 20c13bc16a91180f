"""`OwnedNetwork`: a second network that a strategy owns, as Lightning's SWA callback owns its averaged model.

Co-teaching, Co-teaching+, JoCoR and DivideMix train a peer beside the module's network. Written once here:

- built by `module.build_network()` with its own initial weights (seeded by the run's seed and `salt`; give two
  peers of one strategy different salts), the same model config, channels_last, `torch.compile` when the run compiles)
  on the module's device, with its own optimiser from `module.build_optimizer()` (the same `optim.*` keys);
- its learning rate (and momentum, where the schedule cycles it) follows the main optimiser's at every step, so
  the peer follows whatever schedule the run uses, resumed or not;
- `step(loss)` runs backward with a GradScaler under `16-mixed` (none is needed under bf16), unscales and clips to
  `trainer.grad_clip` like the main network, steps and zeroes the gradients;
- calling it runs the network in the module's train/eval mode (eval during validation, train in a step);
  `scoring()` gives eval mode without gradients;
- under DDP it is wrapped in `DistributedDataParallel`, so its gradients are averaged over the ranks as the main
  network's are (every rank must then call `step` the same number of times);
- `state_dict()` holds its weights, optimiser and scaler state: list the attribute in `state_attrs` and it is
  checkpointed with the strategy.

Build it in the strategy's `setup()` (the device is known there and it exists before a resume restores it).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from robustlearn.data.gpu_loader import epoch_seed


class OwnedNetwork:
    def __init__(self, module: pl.LightningModule, salt: int = 1):
        for needed in ("build_network", "build_optimizer"):
            if not hasattr(module, needed):
                raise TypeError(f"OwnedNetwork: the module {type(module).__name__} has no {needed}(); "
                                "RobustClassifier has both, a module of your own needs them to own a peer network.")
        trainer = module.trainer
        self.module = module
        device = trainer.strategy.root_device
        # Its own initial weights, from a stream seeded by (run seed, salt) and not from the global RNG: Lightning
        # re-seeds that before setup under DDP, which would make the peer a copy of the main network (and two
        # identical networks teaching each other never diverge). The global RNG is left where it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_seed(torch.initial_seed(), 0, salt=1000 + salt))
            self.net: nn.Module = module.build_network().to(device)
        self.optimizer = module.build_optimizer(self.net.parameters())
        self.scaler = torch.amp.GradScaler(device.type, enabled=str(trainer.precision) == "16-mixed")
        self.clip = trainer.gradient_clip_val
        self.model: nn.Module = self.net
        if trainer.world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.net.train(self.module.training)
        return self.model(x)

    def parameters(self):
        return self.net.parameters()

    def step(self, loss: torch.Tensor) -> None:
        """One optimiser step of the peer on `loss` (a scalar of its graph)."""
        self._follow_main_optimizer()
        device_type = loss.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            self.scaler.scale(loss).backward()
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(self.clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _follow_main_optimizer(self) -> None:
        main = self.module.trainer.optimizers[0].param_groups[0]
        for group in self.optimizer.param_groups:
            for key in ("lr", "momentum", "betas"):
                if key in group and key in main:
                    group[key] = main[key]

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
