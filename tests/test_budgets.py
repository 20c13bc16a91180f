"""Budgets: a run bounded by trainer.max_steps or trainer.max_time as well as epochs, its schedule following the budget,
and the time and sample columns of metrics.csv that compare runs at equal wall-clock."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl

from robustlearn.runner import fit
from tests.protocol_helpers import assert_resumes_exactly, rows, smoke
from tests.test_resume import comparable_rows

STEPS_PER_EPOCH = 29  # 1800 smoke training samples, batch 64: 28 full batches and one of 8


def test_a_step_budget_ends_inside_an_epoch_and_still_evaluates_it(tmp_path):
    result = fit(smoke(tmp_path, "trainer.epochs=5", "trainer.max_steps=40"), quiet=True)
    assert result["status"] == "completed" and result["epochs_done"] == 2
    first, last = rows(result["run_dir"])
    assert (int(first["samples"]), int(last["samples"])) == (1800, (40 - STEPS_PER_EPOCH) * 64)
    assert int(last["samples_total"]) == 1800 + 11 * 64
    assert last["test/acc"] != "" and result["test_acc_last"] == pytest.approx(float(last["test/acc"]))


def test_cosine_under_a_step_budget_reaches_its_floor_at_the_budget(tmp_path):
    class Watch(pl.Callback):
        def __init__(self):
            self.lrs: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    watch = Watch()
    budget = 40
    fit(smoke(tmp_path, "trainer.epochs=5", f"trainer.max_steps={budget}", "scheduler.name=cosine",
              "scheduler.min_lr=0.001"), quiet=True, callbacks=[watch])
    assert len(watch.lrs) == budget
    # The rate before step s is the cosine at the progress after step s - 1, in steps of the budget.
    for s in (1, 20, 39):
        expected = 0.001 + (0.1 - 0.001) / 2 * (1 + math.cos(math.pi * s / budget))
        assert watch.lrs[s] == pytest.approx(expected, rel=1e-6)


def test_without_a_budget_cosine_steps_per_epoch_as_before(tmp_path):
    result = fit(smoke(tmp_path, "trainer.epochs=2", "scheduler.name=cosine"), quiet=True)
    assert [float(r["lr"]) for r in rows(result["run_dir"])] == pytest.approx([0.1, 0.05])


def test_a_time_budget_stops_the_run_and_decays_the_rate(tmp_path, monkeypatch):
    # On a clock that moves one second per training batch (so the test does not depend on the machine's speed), a
    # 40-s budget ends the run after 40 steps, and the cosine follows the budget's share: the second epoch starts
    # after 29 steps at lr = 0.1 (1 + cos(pi 29/40)) / 2.
    import robustlearn.budget

    clock = FakeClock()
    monkeypatch.setattr(robustlearn.budget, "clock", clock)
    tick = Tick(clock, 0.0)
    result = fit(smoke(tmp_path, "trainer.epochs=100000", "trainer.max_time=40"), quiet=True, callbacks=[tick])
    table = rows(result["run_dir"])
    assert result["status"] == "completed" and len(table) == 2 and tick.steps == 40
    assert float(table[-1]["lr"]) == pytest.approx(0.1 * (1 + math.cos(math.pi * 29 / 40)) / 2, rel=1e-6)


def test_the_training_time_leaves_out_evaluation_and_adds_up(tmp_path):
    result = fit(smoke(tmp_path, "trainer.epochs=3"), quiet=True)
    table = rows(result["run_dir"])
    total = 0.0
    for r in table:
        assert 0.0 < float(r["train_s"]) < float(r["time_s"])
        total += float(r["train_s"])
        assert float(r["train_s_total"]) == pytest.approx(total)
        assert int(r["samples"]) == 1800
    assert int(table[-1]["samples_total"]) == 3 * 1800


def test_a_step_budget_resumes_exactly(tmp_path):
    over = ["trainer.epochs=5", "trainer.max_steps=70", "scheduler.name=cosine"]
    _, resumed = assert_resumes_exactly(tmp_path, over, stop_epoch=1)
    assert len(comparable_rows(resumed["run_dir"])) == 3  # 29 + 29 + 12 steps


def test_exponential_decay_multiplies_the_rate_every_epoch(tmp_path):
    result = fit(smoke(tmp_path, "trainer.epochs=3", "scheduler.name=exponential", "scheduler.gamma=0.97"),
                 quiet=True)
    assert [float(r["lr"]) for r in rows(result["run_dir"])] == pytest.approx([0.1, 0.097, 0.1 * 0.97**2])


@pytest.mark.parametrize("override, key", [("trainer.max_steps=0", "trainer.max_steps"),
                                           ("trainer.max_time=-1", "trainer.max_time")])
def test_bad_budgets_are_refused_naming_the_key(tmp_path, override, key):
    from robustlearn.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        smoke(tmp_path, override)
    assert key in str(err.value)


class FakeClock:
    """A clock that moves only when told: one second per training batch, `eval_s` per validation."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tick(pl.Callback):
    def __init__(self, clock: FakeClock, eval_s: float):
        self.clock, self.eval_s, self.steps = clock, eval_s, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.clock.now += 1.0

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.clock.now += self.eval_s


@pytest.mark.parametrize("eval_s", [0.0, 1000.0])
def test_a_slow_evaluation_does_not_change_how_much_a_run_trains(tmp_path, monkeypatch, eval_s):
    import robustlearn.budget

    clock = FakeClock()
    monkeypatch.setattr(robustlearn.budget, "clock", clock)
    tick = Tick(clock, eval_s)
    budget = 40  # seconds of the fake clock: one per training batch, so 40 steps (one epoch is 29)
    result = fit(smoke(tmp_path, "trainer.epochs=100", f"trainer.max_time={budget}", "scheduler.name=cosine"),
                 quiet=True, callbacks=[tick])
    assert tick.steps == budget
    assert result["epochs_done"] == 2 and result["status"] == "completed"
