"""PES (semi) (Bai et al. 2021): the MixMatch loss with class-weighted Lx by hand, the phases and the labelled split in
a run, and exact resume in the semi-supervised phase."""

from __future__ import annotations

import pytest
import torch

from robustlearn.runner import fit
from robustlearn.strategies.noisy.pes import first_stage
from robustlearn.strategies.noisy.pes_semi import PESSemi, pes_semi_loss
from tests.protocol_helpers import (
    Recorder,
    assert_bad_strategy_parameter,
    assert_kept_set_cleaner,
    assert_resumes_exactly,
    rows,
    smoke,
)


def test_plan_is_the_official_one_at_300_epochs():
    params = PESSemi.Params()
    assert first_stage(params.t1, 300, PESSemi.t1_share) == 20 and first_stage(params.t1, 8, PESSemi.t1_share) == 1
    assert PESSemi(params).refinements() == [(1, 5), (1, 0)]  # the classifier, 5 passes; no second refinement


def test_loss_by_hand_without_mixing():
    """B = 2, lam = 1 (no mixing): sample 0 labelled (label 1, class weight 2), sample 1 unlabelled (guess =
    sharpen(mean of its two predictions, T = 1) = the mean). Rows of both views; Lx over labelled rows, Lu over the
    others; per-sample values B (row_i + row_{i+B})."""
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    own = (torch.tensor([[0.5, 0.5], [0.2, 0.8]]), torch.tensor([[0.5, 0.5], [0.4, 0.6]]))
    y, labelled = torch.tensor([1, 0]), torch.tensor([True, False])
    weight = torch.tensor([1.0, 2.0])
    forward = lambda z: z  # noqa: E731  the inputs are the logits
    per_sample, parts = pes_semi_loss((x, x), own, y, labelled, weight, forward, 1.0, torch.arange(4), 1.0, 10.0)
    logq0 = torch.log_softmax(x[0], 0)
    lx = -(2.0 * logq0[1]).item()  # two labelled rows, identical
    q1 = torch.softmax(x[1], 0)
    guess = torch.tensor([0.3, 0.7])
    lu = ((q1 - guess) ** 2).mean().item()
    assert parts["lx"].item() == pytest.approx(lx, rel=1e-5) and parts["lu"].item() == pytest.approx(lu, rel=1e-5)
    assert per_sample.mean().item() == pytest.approx(lx + 10.0 * lu, rel=1e-5)


def test_bad_parameters_are_refused():
    assert_bad_strategy_parameter("{name: pes_semi, lambda_u: -1}", "lambda_u")
    assert_bad_strategy_parameter("{name: pes_semi, t1: 2}", "t1")  # the smoke run has 2 epochs


def test_phases_and_a_cleaner_labelled_set(tmp_path):
    rec = Recorder()
    result = fit(smoke(tmp_path, "noise.rate=0.4", "trainer.epochs=5", "model.hidden=[32, 32]",
                       "strategies=[{name: pes_semi, t1: 2, pes_lr: 0.01, lambda_u: 10}]",
                       "output.save_checkpoint=false"), quiet=True, callbacks=[rec])
    assert result["status"] == "completed", result["error"]
    table = rows(result["run_dir"])
    assert [float(r["pes_semi/stage"]) for r in table] == [1, 1, 2, 2, 2]
    assert float(table[-1]["pes_semi/labelled"]) > 0.3
    assert_kept_set_cleaner(rec, 0.0, 1.0)


def test_resumes_exactly_in_the_semi_supervised_phase(tmp_path):
    assert_resumes_exactly(tmp_path, ["strategies=[{name: pes_semi, t1: 1, t2: 2, pes_lr: 0.01}]", "noise.rate=0.4",
                                      "trainer.epochs=4"], stop_epoch=3)
