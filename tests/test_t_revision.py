"""T-revision (Xia et al. 2019): the importance weight and the revision's gradient by hand, the three stages in one
run with the estimate close to the true T on pair flips, and exact resume across the revision."""

from __future__ import annotations

import math

import pytest
import torch

from robustlearn.runner import fit
from robustlearn.strategies.noisy.t_revision import reweighted
from tests.protocol_helpers import Recorder, assert_bad_strategy_parameter, assert_resumes_exactly, rows, smoke


def test_reweighted_loss_and_where_its_gradient_flows():
    """K = 2, p = (0.8, 0.2), label 1, T = [[0.9, 0.1], [0.3, 0.7]]: (T^T p)_1 = 0.8 * 0.1 + 0.2 * 0.7 = 0.22,
    beta = 0.2 / 0.22, loss = beta * (-log 0.2)."""
    logits = torch.log(torch.tensor([[0.8, 0.2]], dtype=torch.float64)).requires_grad_(True)
    t = torch.tensor([[0.9, 0.1], [0.3, 0.7]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1])
    out = reweighted(logits, y, t, detach_beta=True)
    assert out.item() == pytest.approx(0.2 / 0.22 * -math.log(0.2), rel=1e-6)
    out.sum().backward()
    assert t.grad is None or torch.count_nonzero(t.grad) == 0  # stage 2: T gets no gradient
    t.grad = None
    revised = reweighted(logits, y, t, detach_beta=False)
    revised.sum().backward()
    # stage 3: d/dT[i, 1] of beta CE = -beta CE p_i / (T^T p)_1
    ce = -math.log(0.2)
    expected = [-(0.2 / 0.22) * ce * p / 0.22 for p in (0.8, 0.2)]
    assert t.grad[:, 1].tolist() == pytest.approx(expected, rel=1e-5) and t.grad[:, 0].tolist() == [0.0, 0.0]


def test_bad_parameters_are_refused():
    assert_bad_strategy_parameter("{name: t_revision, lr_revision: 0}", "lr_revision")
    assert_bad_strategy_parameter("{name: t_revision, warmup_epochs: 1, revision_epoch: 1}", "revision_epoch")


PAIRFLIP = ["noise.kind=pairflip", "noise.rate=0.3", "trainer.epochs=6", "output.save_checkpoint=false"]


def test_three_stages_in_one_run(tmp_path):
    """Estimate at the end of epoch 1, reweight in epochs 2-3, revise in 4-5 (lr_revision raised so that dT moves in
    two epochs): the stages are logged, T's largest off-diagonal entries are the true flips, and dT moved."""
    rec = Recorder()
    result = fit(smoke(tmp_path, *PAIRFLIP, "strategies=[{name: t_revision, warmup_epochs: 2, lr_revision: 0.001}]"),
                 quiet=True, callbacks=[rec])
    assert result["status"] == "completed", result["error"]
    stages = [float(r["t_revision/stage"]) for r in rows(result["run_dir"])]
    assert stages == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]  # trained with CE, reweighted, revised
    (s,) = rec.strategies
    off = s.transition - torch.diag(torch.diag(s.transition))
    assert off.argmax(1).tolist() == [1, 2, 3, 0]
    assert s.delta.values.abs().mean() > 1e-4
    assert result["best_epoch"] >= 4  # chosen within the revision stage


def test_resumes_exactly_across_the_revision(tmp_path):
    assert_resumes_exactly(tmp_path, [*PAIRFLIP[:2], "trainer.epochs=4",
                                      "strategies=[{name: t_revision, warmup_epochs: 1, lr_revision: 0.001}]"],
                           stop_epoch=3)
