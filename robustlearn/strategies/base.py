"""The strategy protocol: a method is a `pl.Callback` that the training step asks at fixed points.

One training step (`robustlearn.strategies.step.strategy_step`, which `RobustClassifier.training_step` calls and any
LightningModule may call):

1. ``batch = s.on_batch(batch, module)``      the one batch-replacing strategy first (``replaces_batch``), then the
                                             others in config order: transform or replace the batch
2. ``per_sample = p.loss(logits, batch, module)``   the one strategy with ``provides_loss``, else cross-entropy
3. ``weights = s.weights(per_sample, logits, batch, weights, module)``   importance weights, selection masks
4. ``loss = sum(weights * per_sample) / B + sum(s.penalty(logits, batch, module))``
5. ``s.on_train_batch_end(trainer, module, outputs, batch, batch_idx)``   record per-sample statistics; ``outputs``
   holds ``loss``, the detached ``per_sample``, ``logits`` and final ``weights``, and the batch the step trained on

The reduction in 4 is the unbiased mean: a strategy that drops samples scales its mask (mask / mask.mean())
when it wants the mean over the kept ones. Everything else a method needs is a shared piece: per-sample state in a
`PerSampleBuffer`, a second network in an `OwnedNetwork`, eval-mode scoring in `scoring()`, and the data through the
datamodule's API (`set_train_subset`, `set_train_batch_size`, `train_tensors`, `augment`, `draw`). docs/design.md
has a worked example of each kind.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch

from robustlearn.composition import run_check_config
from robustlearn.epoch_means import log_step_mean
from robustlearn.errors import ConfigError, RunFailed
from robustlearn.schema import StrategyCfg, entry_params
from robustlearn.strategies.needs import check_needs


class Strategy(pl.Callback):
    """Base class of every method. Subclasses register with `@STRATEGIES.register("name")`."""

    @dataclass
    class Params:
        pass

    provides_loss: ClassVar[bool] = False  # loss() gives the per-sample training loss (at most one strategy)
    replaces_batch: ClassVar[bool] = False  # on_batch() returns a new batch; runs before every other on_batch
    sets_subset: ClassVar[bool] = False  # chooses the next epochs' training positions (at most one strategy)
    # False where the strategy cannot run with a compiled network: with trainer.compile the run then trains eager and
    # says so (result.json: compiled = false).
    compilable: ClassVar[bool] = True
    # The oracle information the strategy reads, in a few words ("true T", "true noise rate"), or None for a practical
    # method; a property where it depends on the parameters. The run records it in result.json (`oracle`) and the
    # leaderboard marks the row with it and a dagger. Clean labels are never an input to training.
    oracle: ClassVar[str | None] = None
    # Network outputs this strategy needs past the K class logits (DAC: 1, its abstention logit). The module builds
    # its network (and every OwnedNetwork) with K + the sum over the run's strategies; metrics read the first K.
    extra_logits: ClassVar[int] = 0
    # Attributes saved in the checkpoint: objects with state_dict() through it, tensors and plain values as they are.
    # On resume, tensors the strategy already holds are restored in place (see load_state_dict).
    state_attrs: ClassVar[tuple[str, ...]] = ()
    # What the strategy needs of the module and the data, keys of `needs.NEEDS` ("datamodule", "build_network",
    # "num_classes", "noise_rate", "noise_transition", "validation_split"); a property where it depends on the
    # parameters. Checked at setup, before the strategy's own setup, with one message naming what is missing.
    needs: ClassVar[tuple[str, ...]] = ()
    # The parameters worth tuning, {field of Params: Float | Int | Choice} (robustlearn/tuning/space.py), each range
    # holding the paper's value; `robustlearn tune` searches them with the shared keys (learning rate, weight decay).
    search_space: ClassVar[dict[str, Any]] = {}
    registry_name: ClassVar[str] = "strategy"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass's own setup() runs after the needs check, whether or not it calls super().setup().
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("setup")
        if own is not None and not getattr(own, "_checks_needs", False):
            @functools.wraps(own)
            def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, _own=own) -> None:
                if stage == "fit":
                    check_needs(self, trainer, pl_module)
                return _own(self, trainer, pl_module, stage)

            setup._checks_needs = True
            cls.setup = setup

    def __init__(self, params: Any = None, position: int = 0):
        self.params = params if params is not None else self.Params()
        self.position = position

    @classmethod
    def from_config(cls, values: dict, position: int = 0) -> Strategy:
        return cls(cls.Params(**entry_params(values, StrategyCfg)), position)

    @classmethod
    def check_config(cls, params: Any, cfg: dict) -> None:
        """Checks of the parameters against the rest of the validated config (a dict), run when the config loads;
        raise ConfigError(message, "<key>") for bad input. None by default."""

    def check_against_trainer(self, trainer: pl.Trainer) -> None:
        """`check_config` for a trainer built by hand (a config is checked when it loads), with what the trainer
        knows of the config: `trainer.epochs`. Call it from `setup()`."""
        run_check_config(type(self), self.params, {"trainer": {"epochs": trainer.max_epochs or 0}},
                         f"strategies[{self.position}]")

    @property
    def name(self) -> str:
        return self.registry_name

    @property
    def state_key(self) -> str:
        # Two strategies of one class may run together; the position keeps their checkpoint state apart.
        return f"{self.name}[{self.position}]"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            check_needs(self, trainer, pl_module)

    # ---- the hooks of a training step ------------------------------------------------------------------------
    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        return batch

    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule, net=None) -> torch.Tensor:
        """Per-sample training loss of `logits`. `net` (optional in an override's signature: declare it to receive
        it) is the network that produced `logits`, the module's or a peer's: call it for another forward."""
        raise NotImplementedError(f"{self.name} sets provides_loss but has no loss()")

    def weights(
        self, per_sample: torch.Tensor, logits: torch.Tensor, batch: dict, weights: torch.Tensor,
        module: pl.LightningModule,
    ) -> torch.Tensor:
        return weights

    def penalty(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor | None:
        return None

    # ---- helpers --------------------------------------------------------------------------------------------
    def log_metric(self, module: pl.LightningModule, key: str, value: Any, **kwargs: Any) -> None:
        """Log `<name>/<key>` (per epoch by default); it lands in metrics.csv, W&B and the results.

        Call it from a step hook or from a Lightning hook that may log (`on_train_batch_end`,
        `on_train_epoch_end`, ...). (Lightning sets `callback.log` to the module's `log` at fit start, so the
        helper is not called `log`.)"""
        kwargs.setdefault("on_epoch", True)
        kwargs.setdefault("on_step", False)
        module.log(f"{self.name}/{key}", value, **kwargs)

    def eval_logits(self, x: torch.Tensor, logits: torch.Tensor, module: pl.LightningModule) -> torch.Tensor:
        """The logits validation and test are scored on, given the module's network's `logits` for `x` (eval mode,
        no gradient). Default: unchanged. DivideMix returns the mean of its two networks' logits here."""
        return logits

    def log_step(self, module: pl.LightningModule, key: str, value: Any, n: int = 1) -> None:
        """Log a training step's `value` as `<name>/<key>`, the epoch mean weighted by `n` (the samples it is a mean
        over). On `RobustClassifier` it is summed on the device and logged once per epoch (`EpochMeans`), which costs
        far less per step than `log_metric`; use it from the step hooks."""
        log_step_mean(module, f"{self.name}/{key}", value, n)

    def datamodule(self, trainer: pl.Trainer):
        """The run's `RobustDataModule`, for the data API; a clear error where the trainer has none."""
        from robustlearn.data.datamodule import RobustDataModule

        dm = trainer.datamodule
        if not isinstance(dm, RobustDataModule):
            raise ConfigError(
                f"strategy {self.name}: needs robustlearn's datamodule (RobustDataModule) for its data "
                f"(subset, draws or the whole training split); this trainer has {type(dm).__name__}.",
                "strategies",
            )
        return dm

    def kept_mask(self) -> torch.Tensor | None:
        """For a strategy that keeps or drops samples across epochs (truncation, sample selection): a bool mask over
        the training split, True where a sample counts in training now. `diagnostics` scores it against the true
        flip mask. None (the default): the strategy keeps no such set."""
        return None

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self.params)}

    # ---- checkpoint ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        out = {}
        for attr in self.state_attrs:
            value = getattr(self, attr, None)
            if hasattr(value, "state_dict"):
                value = value.state_dict()
            elif isinstance(value, torch.Tensor):
                value = value.detach().clone()
            out[attr] = value
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the attributes of `state_attrs` from a checkpoint's `state_dict`.

        - An attribute whose value has `load_state_dict` (a `PerSampleBuffer`, an `OwnedNetwork`, a module, an
          optimiser) loads through it.
        - An attribute that holds tensors now (a tensor or `nn.Parameter`, or a dict, list or tuple with tensors in
          it) is restored **in place**: the checkpoint's values are copied into the existing tensors (on their
          device), so that every other reference to them (an optimiser's param groups, a buffer registered
          elsewhere) sees the restored values. The saved value must have the same structure and each tensor the same
          shape and dtype; otherwise this raises `RunFailed` naming the attribute, rather than rebinding the
          attribute to new tensors that nothing else refers to (the resumed run would then silently differ from an
          uninterrupted one). A None inside the structure takes the saved value.
        - Any other attribute (None or absent: state not built yet; ints, floats, strings, lists of numbers) is
          assigned the saved value.

        Order: on a resume (`trainer.fit(..., ckpt_path=...)`) Lightning calls the callbacks' `setup` first and
        restores their state after it (pytorch_lightning 2.6, `Trainer._run`: `call._call_setup_hook(self)`, then
        `_checkpoint_connector._restore_modules_and_callbacks`, whose `restore_callbacks` calls this), so state that
        `setup` builds is there to be restored in place, and state built later (lazily, in the first step or epoch)
        is still None here and is assigned.
        """
        for attr in self.state_attrs:
            if attr not in state_dict:
                continue
            current = getattr(self, attr, None)
            saved = state_dict[attr]
            if hasattr(current, "load_state_dict"):
                current.load_state_dict(saved)
            elif _holds_tensor(current):
                try:
                    _restore_in_place(current, saved, attr, write=False)  # all checked before anything is copied
                    setattr(self, attr, _restore_in_place(current, saved, attr))
                except _Mismatch as err:
                    raise RunFailed(
                        f"strategies[{self.position}] {self.name}: cannot resume `{attr}` from the checkpoint: "
                        f"`{err.where}` is {err.saved} in the checkpoint but {err.current} in this run. The "
                        "strategy built this state before the checkpoint was loaded, and other objects (an "
                        "optimiser, a registered buffer) may hold its tensors, so it is restored in place and must "
                        "match in structure, shape and dtype. The checkpoint was most likely written with a "
                        "different config or data (training split size, number of classes, strategy parameters): "
                        "resume with the config it was written with, or start a new run. A strategy whose state may "
                        "change shape should leave the attribute None until its first step, or give it a "
                        "load_state_dict."
                    ) from None
            else:
                setattr(self, attr, saved)


class _Mismatch(Exception):
    """Where a checkpoint's value and the strategy's current one differ (`where`), and what each one is."""

    def __init__(self, where: str, saved: Any, current: Any):
        super().__init__(where)
        self.where, self.saved, self.current = where, _describe(saved), _describe(current)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    return False


def _restore_in_place(current: Any, saved: Any, where: str, write: bool = True) -> Any:
    """`saved` copied into the tensors of `current`; returns what the attribute holds afterwards: `current` itself for
    a tensor, dict or list (their identity is kept), a new tuple of the same tensors for a tuple, the saved value for a
    None or a plain value. Raises `_Mismatch` where structure, shape or dtype differ; `write=False` only checks."""
    if current is None:
        return saved
    if isinstance(current, torch.Tensor):
        if not isinstance(saved, torch.Tensor) or saved.shape != current.shape or saved.dtype != current.dtype:
            raise _Mismatch(where, saved, current)
        if write:
            with torch.no_grad():
                current.copy_(saved.to(current.device))
        return current
    if isinstance(current, dict):
        if not isinstance(saved, dict) or set(saved) != set(current):
            raise _Mismatch(where, saved, current)
        for key in current:
            value = _restore_in_place(current[key], saved[key], f"{where}[{key!r}]", write)
            if write:
                current[key] = value
        return current
    if isinstance(current, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(current):
            raise _Mismatch(where, saved, current)
        items = [_restore_in_place(c, s, f"{where}[{i}]", write) for i, (c, s) in enumerate(zip(current, saved))]
        if isinstance(current, list):
            if write:
                current[:] = items
            return current
        return type(current)(*items) if hasattr(current, "_fields") else type(current)(items)
    return saved
