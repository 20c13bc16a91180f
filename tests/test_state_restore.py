"""Strategy state through a resume: tensors a strategy built before the checkpoint loads are restored in place (an
optimiser over them keeps stepping what the strategy reads), a mismatch is an error, lazily built state is assigned."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from robustlearn.errors import RunFailed
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from tests.protocol_helpers import assert_resumes_exactly


@STRATEGIES.register("test_sample_bias")
class SampleBias(Strategy):
    """A per-sample logit bias and log-temperature, a dict of tensors built in `setup` with an SGD optimiser (with
    momentum) over them, trained on the loss at every step."""

    provides_loss = True
    state_attrs = ("tables", "optimizer")

    @dataclass
    class Params:
        lr: float = 2.0

    def setup(self, trainer, pl_module, stage):
        self.build(self.datamodule(trainer).train_size, pl_module.num_classes, trainer.strategy.root_device)

    def build(self, n: int, k: int, device="cpu"):
        self.tables = {
            "bias": torch.zeros(n, k, device=device, requires_grad=True),
            "log_temp": torch.zeros(n, device=device, requires_grad=True),
        }
        self.optimizer = torch.optim.SGD(list(self.tables.values()), lr=self.params.lr, momentum=0.9)

    def loss(self, logits, batch, module):
        i = batch["index"]
        adjusted = logits.float() * self.tables["log_temp"][i].exp()[:, None] + self.tables["bias"][i]
        return F.cross_entropy(adjusted, batch["y"], reduction="none")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.optimizer.step()  # the main backward filled the tables' gradients
        self.optimizer.zero_grad(set_to_none=True)


def test_tensors_built_in_setup_resume_exactly(tmp_path):
    # Before in-place restore (Strategy.load_state_dict assigned every saved tensor) this failed: the resumed run read
    # the checkpoint's tensors while its optimiser kept stepping the ones setup() built, so the biases stayed frozen
    # from the checkpoint on and the resumed epoch differed from the uninterrupted run's (measured with the old method:
    # epoch-1 train/loss 0.5630 resumed vs 0.5179 uninterrupted, val/loss 0.8776 vs 0.8902; metrics.csv rows unequal).
    straight, resumed = assert_resumes_exactly(
        tmp_path, ["strategies=[{name: test_sample_bias}]", "trainer.epochs=2", "data.crop_padding=0"], stop_epoch=1)
    assert straight["status"] == resumed["status"] == "completed"


def _bias(n=900, k=3) -> SampleBias:
    s = SampleBias(position=2)
    s.build(n, k)
    return s


def _saved(n=900, k=3, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    tables = {"bias": torch.randn(n, k, generator=g), "log_temp": torch.randn(n, generator=g)}
    source = SampleBias()
    source.tables = tables
    source.optimizer = torch.optim.SGD(list(tables.values()), lr=1.0, momentum=0.9)
    for t in tables.values():
        t.grad = torch.ones_like(t)
    source.optimizer.step()  # momentum buffers in the optimiser's state
    return {"tables": {k: v.detach().clone() for k, v in tables.items()}, "optimizer": source.optimizer.state_dict()}


def test_restore_keeps_the_tensor_objects():
    s = _bias()
    bias, log_temp = s.tables["bias"], s.tables["log_temp"]
    saved = _saved()
    s.load_state_dict(saved)
    assert s.tables["bias"] is bias and s.tables["log_temp"] is log_temp
    assert s.optimizer.param_groups[0]["params"][0] is bias
    torch.testing.assert_close(bias.detach(), saved["tables"]["bias"])
    torch.testing.assert_close(log_temp.detach(), saved["tables"]["log_temp"])
    assert bias.requires_grad and bias.is_leaf
    # the optimiser steps the restored values, with the restored momentum
    assert s.optimizer.state[bias]["momentum_buffer"].shape == bias.shape
    bias.grad = torch.zeros_like(bias)
    before = bias.detach().clone()
    s.optimizer.step()
    torch.testing.assert_close(bias.detach(), before - 0.9 * s.optimizer.param_groups[0]["lr"])

    # a plain tensor, a Parameter and a tuple of tensors held directly: the same objects, the saved values
    class Plain(Strategy):
        state_attrs = ("count", "weight", "pair", "steps")

    p = Plain()
    p.count, p.weight = torch.zeros(4, dtype=torch.long), torch.nn.Parameter(torch.zeros(2, 2))
    p.pair, p.steps = (torch.zeros(3), torch.ones(1)), 0
    held = (p.count, p.weight, *p.pair)
    pair = (torch.full((3,), 5.0), torch.zeros(1))
    p.load_state_dict({"count": torch.arange(4), "weight": torch.eye(2), "pair": pair, "steps": 7})
    assert all(a is b for a, b in zip((p.count, p.weight, *p.pair), held, strict=True))
    assert p.count.tolist() == [0, 1, 2, 3] and p.weight.detach().tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert p.pair[0].tolist() == [5.0] * 3 and p.pair[1].tolist() == [0.0] and p.steps == 7
    assert isinstance(p.weight, torch.nn.Parameter) and p.weight.requires_grad


@pytest.mark.parametrize("change, says", [
    (lambda saved: saved["tables"].update(bias=torch.zeros(1800, 3)), "tables['bias']` is a float32 tensor of shape "
     "(1800, 3) in the checkpoint but a float32 tensor of shape (900, 3) in this run"),
    (lambda saved: saved["tables"].update(bias=saved["tables"]["bias"].double()), "float64 tensor of shape (900, 3)"),
    (lambda saved: saved["tables"].update(log_temp=torch.zeros(1800)), "`tables['log_temp']` is a float32 tensor of "
     "shape (1800,) in the checkpoint but a float32 tensor of shape (900,) in this run"),
    (lambda saved: saved["tables"].pop("log_temp"), "`tables` is a dict with keys ['bias'] in the checkpoint"),
    (lambda saved: saved.update(tables=None), "`tables` is None in the checkpoint"),
])
def test_mismatch_is_a_clear_error(change, says):
    s = _bias()
    bias = s.tables["bias"]
    saved = _saved()
    change(saved)
    with pytest.raises(RunFailed) as err:
        s.load_state_dict(saved)
    message = str(err.value)
    assert "strategies[2] test_sample_bias: cannot resume `tables`" in message and says in message
    assert "resume with the config it was written with, or start a new run" in message
    assert s.tables["bias"] is bias and not bias.detach().any()  # nothing rebound, nothing copied


def test_state_not_built_yet_is_assigned():
    class Lazy(Strategy):
        state_attrs = ("table", "history", "rate", "mixture", "missing")

    s = Lazy()
    s.table, s.history, s.rate, s.mixture = None, [], 0.5, {"means": [0.1, 0.9]}
    saved = {"table": torch.arange(6.0).reshape(3, 2), "history": [{"epoch": 0, "total": 1.5}], "rate": 0.25,
             "mixture": {"means": [0.2, 0.8], "weights": torch.ones(2)}, "missing": torch.zeros(2)}
    s.load_state_dict(saved)
    assert s.table is saved["table"] and s.missing is saved["missing"]
    assert s.history == [{"epoch": 0, "total": 1.5}] and s.rate == 0.25 and s.mixture is saved["mixture"]
    # a None inside a structure that holds tensors takes the saved value too
    s = _bias()
    s.tables["log_temp"] = None
    saved = _saved()
    s.load_state_dict(saved)
    assert s.tables["log_temp"] is saved["tables"]["log_temp"]
