"""A training step never waits for the device: no `.item()`, `bool(tensor)`, `.tolist()`, `.cpu()` or `.numpy()` in
`training_step` (with the strategies' step hooks inside it) nor in the strategies' `on_train_batch_end`."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import pytorch_lightning as pl
import torch

from robustlearn.registry import STRATEGIES
from robustlearn.runner import fit
from robustlearn.strategies.base import Strategy
from tests.protocol_helpers import smoke
from tests.sync_guard import _WatchStrategies


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
