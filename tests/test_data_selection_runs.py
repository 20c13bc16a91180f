"""Data selection in real (synthetic smoke) runs: subset sizes, exact resume of every stateful selector, InfoBatch's
saved steps, composition with GCE without a host sync in the step. Formulas: tests/test_data_selection.py."""

from __future__ import annotations

import pytest

import robustlearn.strategies.sampling.infobatch  # noqa: F401
import robustlearn.strategies.sampling.online_batch_selection  # noqa: F401
import robustlearn.strategies.sampling.random_pruning  # noqa: F401
import robustlearn.strategies.sampling.rho_loss  # noqa: F401
import robustlearn.strategies.sampling.selective_backprop  # noqa: F401
from robustlearn.runner import fit
from tests.protocol_helpers import Recorder, assert_resumes_exactly, fit_method, rows, smoke
from tests.sync_guard import _WatchStrategies

# 1800 training samples, batch 64: 29 steps per full epoch.


def test_random_pruning_trains_half_of_every_epoch_and_resumes_exactly(tmp_path):
    rec = Recorder()
    straight, _ = assert_resumes_exactly(tmp_path, ["strategies=[{name: random_pruning, ratio: 0.5}]",
                                                    "trainer.epochs=3"], stop_epoch=1, callbacks=[rec])
    assert rec.steps == [15, 15]  # 900 of 1800 samples in each resumed epoch, the restored subset first
    assert [float(r["random_pruning/kept"]) for r in rows(straight["run_dir"])] == [0.5, 0.5, 0.5]


@pytest.mark.slow
def test_infobatch_resumes_exactly(tmp_path):
    rec = Recorder()
    straight, _ = assert_resumes_exactly(tmp_path, ["strategies=[{name: infobatch}]", "trainer.epochs=4"],
                                         callbacks=[rec])
    kept = [float(r["infobatch/kept"]) for r in rows(straight["run_dir"])]
    assert kept[0] == 1.0 and kept[1] < 0.9 and kept[2] < 0.9 and kept[3] == 1.0  # epochs 1 and 2 pruned (e+1 <= 3.5)
    assert rec.steps[1] == 29  # the last epoch (annealing) trains on everything with weights 1


@pytest.mark.slow
def test_infobatch_saved_steps(tmp_path):
    """The share of steps saved over a run: printed for the docs (docs/methods/data_selection.md)."""
    rec = Recorder()
    _, result = fit_method("infobatch", tmp_path, "trainer.epochs=8", callbacks=[rec])
    assert result["status"] == "completed"
    saved = 1.0 - sum(rec.steps) / (8 * 29)
    print(f"infobatch steps per epoch {rec.steps}, saved share of steps {saved:.3f}")
    assert rec.steps[0] == 29 and rec.steps[7] == 29 and all(s < 29 for s in rec.steps[1:7])
    assert 0.1 < saved < 0.5 * 6 / 8  # at most r of every pruned epoch


@pytest.mark.slow
@pytest.mark.parametrize("name,extra", [
    ("random_pruning", "ratio: 0.5"),
    ("infobatch", "ratio: 0.5"),
    ("online_batch_selection", "s_start: 100.0"),
    ("selective_backprop", "beta: 3.0"),
    ("rho_loss", "il_epochs: 2"),
])
def test_composes_with_gce_without_host_sync(tmp_path, guarded_step, name, extra):
    result = fit(smoke(tmp_path, f"strategies=[{{name: gce}}, {{name: {name}, {extra}}}]", "trainer.epochs=3"),
                 quiet=True, callbacks=[_WatchStrategies()])
    assert result["status"] == "completed", result["error"]
    logged = [k for k in rows(result["run_dir"])[-1] if k.startswith(f"{name}/")]
    assert logged, f"{name} logged nothing"


@pytest.mark.slow
@pytest.mark.parametrize("entry", [
    "{name: online_batch_selection, recompute: 2}",
    "{name: selective_backprop}",
    "{name: rho_loss, il_epochs: 2}",
])
def test_batch_selectors_resume_exactly(tmp_path, entry):
    assert_resumes_exactly(tmp_path, [f"strategies=[{entry}]", "trainer.epochs=3"], stop_epoch=2)


@pytest.mark.slow
def test_selective_backprop_epoch_is_one_forward_pass_over_the_split(tmp_path):
    rec = Recorder()
    result = fit(smoke(tmp_path, "strategies=[{name: selective_backprop}]", "trainer.epochs=2"), quiet=True,
                 callbacks=[rec])
    # epoch 0 primes (the official first epoch of full backprop): 29 plain steps of 64; then candidate batches of
    # 5 * 64 = 320: ceil(1800 / 320) steps, each training 64
    assert rec.steps == [29, 6]
    first, last = rows(result["run_dir"])
    assert float(first["selective_backprop/kept"]) == 1.0
    assert 0.15 < float(last["selective_backprop/kept"]) < 0.35  # about E[U^3] = 1/4 of the candidates
    assert float(last["selective_backprop/short"]) < 0.05
    rec = Recorder()
    fit(smoke(tmp_path / "unprimed", "strategies=[{name: selective_backprop, prime_epochs: 0}]", "trainer.epochs=1"),
        quiet=True, callbacks=[rec])
    assert rec.steps == [6]


@pytest.mark.slow
def test_selective_backprop_resumes_exactly_right_after_priming(tmp_path):
    """Interrupted when epoch 1 (its first selective epoch) starts: the checkpoint carries the candidates' loader batch
    size and the empty history, and the resumed run continues as the uninterrupted one."""
    rec = Recorder()
    assert_resumes_exactly(tmp_path, ["strategies=[{name: selective_backprop}]", "trainer.epochs=3"], stop_epoch=1,
                           callbacks=[rec])
    assert rec.steps == [6, 6]
