"""A training step never waits for the device: no `.item()`, `bool(tensor)`, `.tolist()`, `.cpu()` or `.numpy()` in
`training_step` (with the strategies' step hooks inside it) nor in the strategies' `on_train_batch_end`."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import pytorch_lightning as pl
import torch

from robustlearn.module import RobustClassifier
from robustlearn.registry import STRATEGIES
from robustlearn.runner import fit
from robustlearn.strategies.base import Strategy
from tests.protocol_helpers import smoke

SYNCS = ("item", "__bool__", "tolist", "cpu", "numpy")


class HostSync(AssertionError):
    pass


@contextlib.contextmanager
def no_host_sync(where: str):
    saved = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def refuse(name):
        def call(self, *args, **kwargs):
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
    """Runs every strategy's on_train_batch_end under no_host_sync."""

    def on_train_start(self, trainer, pl_module):
        for s in (cb for cb in trainer.callbacks if isinstance(cb, Strategy)):
            hook = s.on_train_batch_end

            def guarded(*args, _hook=hook, _name=s.name, **kwargs):
                with no_host_sync(f"{_name}.on_train_batch_end"):
                    return _hook(*args, **kwargs)

            s.on_train_batch_end = guarded


@pytest.fixture
def guarded_step(monkeypatch):
    step = RobustClassifier.training_step

    def guarded(self, batch, batch_idx):
        with no_host_sync("training_step"):
            return step(self, batch, batch_idx)

    monkeypatch.setattr(RobustClassifier, "training_step", guarded)


@pytest.mark.parametrize("strategies", ["[]", "[{name: gce}]", "[{name: gce}, {name: elr}, {name: diagnostics}]"])
def test_default_step_makes_no_host_sync(tmp_path, guarded_step, strategies):
    result = fit(smoke(tmp_path, f"strategies={strategies}", "trainer.epochs=1"), quiet=True,
                 callbacks=[_WatchStrategies()])
    assert result["status"] == "completed", result["error"]


@STRATEGIES.register("test_syncing")
class _Syncing(Strategy):
    """Reads a loss to the host in every step: what the guard must catch."""

    @dataclass
    class Params:
        pass

    def weights(self, per_sample, logits, batch, weights, module):
        return weights * (2.0 if per_sample.mean().item() > 100 else 1.0)


def test_the_guard_catches_a_sync(tmp_path, guarded_step):
    result = fit(smoke(tmp_path, "strategies=[{name: test_syncing}]", "trainer.epochs=1"), quiet=True)
    assert result["status"] == "failed" and "Tensor.item() in training_step" in result["error"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_sync_on_gpu(tmp_path):
    class _Debug(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("default")

    result = fit(smoke(tmp_path, "strategies=[{name: gce}, {name: diagnostics}]", "trainer.epochs=1",
                       "trainer.accelerator=gpu", "trainer.log_every_n_steps=1000"),
                 quiet=True, callbacks=[_Debug()])
    assert result["status"] == "completed", result["error"]
