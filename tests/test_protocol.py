"""The strategy protocol: hook order, loss = sum(w * l) / B + penalties, composition, state through resume."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from robustlearn.config import load_config
from robustlearn.registry import STRATEGIES
from robustlearn.runner import fit
from robustlearn.strategies.base import Strategy
from tests.conftest import SMOKE
from tests.test_resume import StopAtEpoch, comparable_rows

CALLS: list[str] = []
INSTANCES: list[Strategy] = []


class _Probe(Strategy):
    """Uses every hook, logs each call, keeps per-sample state indexed by batch['index']."""

    @dataclass
    class Params:
        scale: float = 1.0

    def setup(self, trainer, pl_module, stage):
        INSTANCES.append(self)
        self.seen = torch.zeros(trainer.datamodule.train_size, dtype=torch.long)
        self.steps = 0
        self.check = []

    def on_batch(self, batch, module):
        CALLS.append(f"{self.name}.on_batch")
        return batch

    def weights(self, per_sample, logits, batch, weights, module):
        CALLS.append(f"{self.name}.weights")
        return weights * self.params.scale

    def penalty(self, logits, batch, module):
        CALLS.append(f"{self.name}.penalty")
        return 0.01 * logits.pow(2).mean()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        CALLS.append(f"{self.name}.on_train_batch_end")
        self.seen[outputs["batch"]["index"].cpu()] += 1
        self.steps += 1
        self.check.append((outputs["loss"].detach(), outputs["logits"], outputs["per_sample"], outputs["batch"]))

    def state_dict(self):
        return {"seen": self.seen.clone(), "steps": self.steps}

    def load_state_dict(self, state):
        self.seen, self.steps = state["seen"], state["steps"]


@STRATEGIES.register("probe_loss")
class ProbeLoss(_Probe):
    """Provides the loss: a scaled cross-entropy."""

    provides_loss = True

    def loss(self, logits, batch, module):
        CALLS.append(f"{self.name}.loss")
        return 2.0 * F.cross_entropy(logits, batch["y"], reduction="none")


@STRATEGIES.register("probe_weight")
class ProbeWeight(_Probe):
    """Only weights and penalty."""


STRATS = "strategies=[{name: probe_loss, scale: 0.5}, {name: probe_weight, scale: 3.0}]"


def _cfg(tmp_path, *extra):
    return load_config(SMOKE, [STRATS, f"output.root={tmp_path}", "trainer.epochs=4", *extra])


def test_hook_order_and_loss_formula(tmp_path):
    CALLS.clear()
    INSTANCES.clear()
    result = fit(_cfg(tmp_path, "trainer.epochs=1"), quiet=True)
    assert result["status"] == "completed"
    step = [
        "probe_loss.on_batch", "probe_weight.on_batch", "probe_loss.loss",
        "probe_loss.weights", "probe_weight.weights", "probe_loss.penalty", "probe_weight.penalty",
        "probe_loss.on_train_batch_end", "probe_weight.on_train_batch_end",
    ]
    n_steps = INSTANCES[0].steps
    assert n_steps > 1 and step * n_steps == CALLS
    # loss = sum(w * l) / B + penalties, with w = 0.5 * 3.0 and l = 2 * CE, checked on every step
    for loss, logits, per_sample, batch in INSTANCES[0].check:
        expected_l = 2.0 * F.cross_entropy(logits, batch["y"], reduction="none")
        torch.testing.assert_close(per_sample, expected_l)
        expected = (1.5 * expected_l).sum() / len(expected_l) + 2 * 0.01 * logits.pow(2).mean()
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_two_loss_providers_is_a_config_error(tmp_path):
    from robustlearn.errors import ConfigError

    with pytest.raises(ConfigError, match="both provide the training loss"):
        load_config(SMOKE, ["strategies=[{name: probe_loss}, {name: probe_loss}]"])


def test_strategy_state_restored_on_resume(tmp_path):
    INSTANCES.clear()
    straight = fit(_cfg(tmp_path / "a"), quiet=True)
    full = INSTANCES[0]
    INSTANCES.clear()
    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(tmp_path / "b"), quiet=True, callbacks=[StopAtEpoch(2)])
    INSTANCES.clear()
    resumed = fit(_cfg(tmp_path / "b", "resume=true"), quiet=True)
    part = INSTANCES[0]
    assert part.steps == full.steps  # counted on from the checkpoint, not from zero
    assert torch.equal(part.seen, full.seen) and int(full.seen.min()) == 4
    assert comparable_rows(resumed["run_dir"]) == comparable_rows(straight["run_dir"])


@STRATEGIES.register("probe_once")
class ProbeOnce(Strategy):
    """Logs a metric in epoch 1 only."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.log_metric(pl_module, "once", 7.0)


def test_a_metric_logged_in_one_epoch_appears_in_that_row_only(tmp_path):
    over = ["strategies=[{name: probe_once}]", "trainer.epochs=4"]
    straight = fit(load_config(SMOKE, [*over, f"output.root={tmp_path / 'a'}"]), quiet=True)
    rows = comparable_rows(straight["run_dir"])
    assert [r["probe_once/once"] for r in rows] == ["", "7.0", "", ""]
    assert all(r["val/acc"] != "" for r in rows)
    with pytest.raises(KeyboardInterrupt):
        fit(load_config(SMOKE, [*over, f"output.root={tmp_path / 'b'}"]), quiet=True, callbacks=[StopAtEpoch(2)])
    resumed = fit(load_config(SMOKE, [*over, f"output.root={tmp_path / 'b'}", "resume=true"]), quiet=True)
    assert comparable_rows(resumed["run_dir"]) == rows
