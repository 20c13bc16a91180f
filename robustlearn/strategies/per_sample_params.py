"""Trainable tensors a strategy owns beside the network, with their own optimiser: `StrategyParameter` (a fixed shape,
e.g. VolMinNet's K x K transition logits) and `PerSampleParameter` (one row per training sample, e.g. SOP's u and v).

The loss differentiates through the tensor (`param[index]` for per-sample rows); its own optimiser (SGD by default,
with its own learning rate, as the official codes do) steps after the main network's backward. Written once here:

- allocated on the training device by `ensure(trainer)` (in `setup`, `on_train_start` or the first step; a
  checkpoint loaded before the allocation is applied by it, one loaded after is copied in place), with initial
  values N(init_mean, init_std^2) from a generator seeded by the run's seed and `salt`, never the global RNG: every
  DDP rank starts from the same values;
- `step(trainer)`, called from the strategy's `on_before_optimizer_step` (once per optimiser step, after every
  micro-batch of gradient accumulation has added its gradient), takes one step of its optimiser and zeroes the
  gradient. Lightning's handling is followed without reading the device: under `16-mixed` the gradient is divided by
  the main GradScaler's scale and a step whose gradient overflowed becomes a zero-gradient step (the main network's
  step is skipped there), and `trainer.gradient_clip_val` clips the parameter's own gradient norm. With
  `follow_schedule`, its learning rate is its base rate times the main optimiser's current / initial rate, so it
  follows the run's schedule (the official VolMinNet decays both with one MultiStepLR);
- **under DDP every rank holds the whole tensor and the same values**: the gradient is averaged over the ranks (one
  all-reduce per optimiser step), as DDP averages the network's; each rank's rows get gradient from its own shard of
  the batch only, so the average is the gradient of the mean loss over the global batch, and every rank takes the
  same step;
- `state_dict()` holds the values and the optimiser state; `load_state_dict` restores both in place. List the
  attribute in `state_attrs` and it is checkpointed with the strategy.

Cost: one all-reduce of the tensor per optimiser step under DDP (per-sample: 50 000 x 10 floats = 2 MB for
CIFAR-10); none otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.strategies.buffers import train_size

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class StrategyParameter:
    """A trainable tensor of shape `shape` with its own optimiser.

    `init_std` and `init_mean`: initial values N(mean, std^2) (std 0: all `init_mean`). `lr`, `momentum`,
    `weight_decay`: of its SGD optimiser; or `optimizer`, a factory from parameters to an optimiser.
    `follow_schedule`: scale its learning rate with the main optimiser's."""

    def __init__(self, shape: tuple[int, ...] = (), *, lr: float = 1.0, momentum: float = 0.0,
                 weight_decay: float = 0.0, init_mean: float = 0.0, init_std: float = 0.0, salt: int = 0,
                 optimizer: OptimizerFactory | None = None, follow_schedule: bool = False):
        self.shape = tuple(shape)
        self.init_mean, self.init_std, self.salt = float(init_mean), float(init_std), int(salt)
        self.follow_schedule = bool(follow_schedule)
        self.make_optimizer = optimizer or (
            lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.param: torch.nn.Parameter | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None  # a checkpoint's state loaded before ensure()

    def ensure(self, trainer: pl.Trainer, shape: tuple[int, ...] | None = None) -> StrategyParameter:
        """Allocate the parameter and its optimiser on the training device (once); `shape` per sample, if known only
        now. Values restored before the allocation are kept."""
        device = trainer.strategy.root_device
        if self.param is None:
            if shape is not None:
                self.shape = tuple(shape)
            size = self.size(trainer)
            gen = torch.Generator().manual_seed(epoch_seed(torch.initial_seed(), 0, salt=5000 + self.salt))
            values = self.init_mean + self.init_std * torch.randn(size, generator=gen, dtype=torch.float32)
            self.param = torch.nn.Parameter(values.to(device))
            self.optimizer = self.make_optimizer([self.param])
            for group in self.optimizer.param_groups:
                group.setdefault("base_lr", group["lr"])
            if self._pending is not None:
                pending, self._pending = self._pending, None
                self.load_state_dict(pending)
        elif self.param.device != device:
            raise RuntimeError(f"{type(self).__name__}: the parameter lives on another device than the trainer's; "
                               "allocate it in setup(), where the device is known.")
        return self

    def size(self, trainer: pl.Trainer) -> tuple[int, ...]:
        return self.shape

    def __len__(self) -> int:
        return 0 if self.param is None else len(self.param)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """Rows at `index`, differentiable: the loss's gradient reaches the parameter through them."""
        return self.param[index]

    @property
    def values(self) -> torch.Tensor:
        """The current values, detached (for metrics and diagnostics)."""
        return self.param.detach()

    def step(self, trainer: pl.Trainer) -> None:
        """One step of the parameter's optimiser on the gradient the step's backward left, then zero the gradient.
        Call it from `on_before_optimizer_step` on every rank."""
        param = self.param
        if param is None or param.grad is None:
            return
        grad = param.grad
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(grad)
            grad.div_(trainer.world_size)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(scaler, "_scale", None) is not None:
            inverse = scaler._scale.double().reciprocal().float().to(grad.device)
            overflow = torch.zeros(1, device=grad.device)
            torch._amp_foreach_non_finite_check_and_unscale_([grad], overflow, inverse)
            grad.mul_(1.0 - overflow)  # an overflowed step moves nothing (the main step is skipped there)
            grad.nan_to_num_(0.0, 0.0, 0.0)
        clip = trainer.gradient_clip_val
        if clip:
            torch.nn.utils.clip_grad_norm_([param], float(clip))
        if self.follow_schedule and trainer.optimizers:
            main = trainer.optimizers[0].param_groups[0]
            ratio = main["lr"] / main.get("initial_lr", main["lr"])
            for group in self.optimizer.param_groups:
                group["lr"] = group["base_lr"] * ratio
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        if self.param is None:
            return self._pending or {"values": None, "optimizer": None}
        return {"values": self.param.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        values = state.get("values")
        if values is None:
            return
        if self.param is None:
            self._pending = state
            return
        if values.shape != self.param.shape:
            raise RuntimeError(f"{type(self).__name__}: the checkpoint holds shape {tuple(values.shape)}, this run "
                               f"{tuple(self.param.shape)} (another training split or number of classes).")
        with torch.no_grad():
            self.param.copy_(values.to(self.param.device))
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])


class PerSampleParameter(StrategyParameter):
    """An `(N, *shape)` trainable tensor of the training split (N from the trainer); see `StrategyParameter`."""

    def size(self, trainer: pl.Trainer) -> tuple[int, ...]:
        return (train_size(trainer), *self.shape)
