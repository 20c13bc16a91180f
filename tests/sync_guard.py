"""The host-sync guard of the tests: `no_host_sync` makes `.item()`, `bool(tensor)`, `float(tensor)`, `int(tensor)`,
`.tolist()`, `.cpu()` and `.numpy()` raise (except inside `torch.optim`, whose step counters are host tensors by
design); `guarded_step` (a fixture) runs `training_step` under it; `_WatchStrategies` runs every strategy's per-step
hooks under it. Imported by every test file that checks a method for host syncs."""

from __future__ import annotations

import contextlib
import sys

import pytest
import pytorch_lightning as pl
import torch

from robustlearn.module import RobustClassifier
from robustlearn.strategies.base import Strategy

SYNCS = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy")


class HostSync(AssertionError):
    pass


@contextlib.contextmanager
def no_host_sync(where: str = "a training step"):
    saved = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def refuse(name):
        def call(self, *args, **kwargs):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("torch.optim"):
                return saved[name](self, *args, **kwargs)  # an optimiser's step counter: a host tensor by design
            raise HostSync(f"Tensor.{name}() in {where}")
        return call

    try:
        for name in SYNCS:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


class _WatchStrategies(pl.Callback):
    """Runs every strategy's per-step hooks (on_train_batch_end, on_before_optimizer_step) under no_host_sync."""

    def on_train_start(self, trainer, pl_module):
        for s in (cb for cb in trainer.callbacks if isinstance(cb, Strategy)):
            for name in ("on_train_batch_end", "on_before_optimizer_step"):
                hook = getattr(s, name)

                def guarded(*args, _hook=hook, _where=f"{s.name}.{name}", **kwargs):
                    with no_host_sync(_where):
                        return _hook(*args, **kwargs)

                setattr(s, name, guarded)


@pytest.fixture
def guarded_step(monkeypatch):
    step = RobustClassifier.training_step

    def guarded(self, batch, batch_idx):
        with no_host_sync("training_step"):
            return step(self, batch, batch_idx)

    monkeypatch.setattr(RobustClassifier, "training_step", guarded)
