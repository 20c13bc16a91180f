"""SOP and SOP+ (Liu et al. 2022) and the shared `PerSampleParameter`: the loss and its gradients on a hand-computed
case, v absorbing flipped labels on small noisy data, exact resume. The same u, v on two DDP ranks:
tests/test_epoch_subsets.py (one two-process run for every shared piece)."""

from __future__ import annotations

import math

import pytest
import torch

from robustlearn.runner import fit
from robustlearn.strategies.noisy.sop import SOP, balance_term, sop_terms
from tests.protocol_helpers import (
    Recorder,
    assert_bad_strategy_parameter,
    assert_resumes_exactly,
    smoke,
)


def _case():
    logits = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    u = torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([[0.6, 0.3, 0.2]], dtype=torch.float64, requires_grad=True)
    return logits, torch.tensor([1]), u, v


def test_loss_and_gradients_on_a_hand_computed_case():
    """Label 1, the network predicts 0. p = (e^2, 1, 1) / (e^2 + 2); U = (0, u^2, 0) = (0, .25, 0);
    V = (v0^2, 0, v2^2) = (.36, 0, .04). q = (p + U - V) / S with S = 1 + .25 - .40 = .85; the loss is
    -log q_1 + |e_0 + U - V - e_1|^2 = -log((p_1 + .25) / .85) + (.64^2 + .75^2 + .04^2)."""
    logits, y, u, v = _case()
    q, loss = sop_terms(logits, y, u, v)
    e2 = math.exp(2.0)
    p1 = 1.0 / (e2 + 2.0)
    r = (0.64, -0.75, -0.04)  # e_0 + U - V - e_1
    expected = -math.log((p1 + 0.25) / 0.85) + sum(x * x for x in r)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert q[0, 1].item() == pytest.approx((p1 + 0.25) / 0.85, rel=1e-6)
    loss.sum().backward()
    # v learns from the squared term only (V is detached in q): d/dv_k = 2 r_k (-2 v_k) off the label, 0 on it.
    assert v.grad[0].tolist() == pytest.approx([2 * 0.64 * -1.2, 0.0, 2 * -0.04 * -0.4], rel=1e-5)
    # u from both terms: d(-log q_1)/dU_1 = -1/(p_1 + .25) + 1/S, then dU/du = 2u = 1; d(square)/du = 2 (-.75) (2u).
    assert u.grad.item() == pytest.approx((-1.0 / (p1 + 0.25) + 1.0 / 0.85) + 2 * -0.75, rel=1e-5)


def test_the_clamps_stop_gradients_where_official_code_does():
    logits, y, u, v = _case()
    with torch.no_grad():
        u.fill_(1.5)  # u^2 = 2.25 > 1: U is clamped to 1, no gradient to u
        v[0, 0] = 0.0
    _, loss = sop_terms(logits, y, u, v)
    loss.sum().backward()
    assert u.grad.item() == 0.0
    assert v.grad[0, 0].item() == 0.0  # d(v^2)/dv = 0 at v = 0


def test_balance_term_is_the_cross_entropy_of_the_uniform_prior():
    q = torch.tensor([[0.5, 0.5], [0.1, 0.9]], dtype=torch.float64)
    mean = (0.3, 0.7)
    assert balance_term(q).item() == pytest.approx(-(math.log(mean[0]) + math.log(mean[1])) / 2, rel=1e-9)


def test_bad_parameters_are_refused():
    assert_bad_strategy_parameter("{name: sop, lr_u: 0}", "lr_u")
    assert_bad_strategy_parameter("{name: sop_plus, ratio_balance: -1}", "ratio_balance")


def _v_mass(strategy, dm):
    flipped = dm.train_tensors()["y"] != dm.train_tensors()["y_clean"]
    mass = strategy.noise_estimate()
    return mass[flipped].mean().item(), mass[~flipped].mean().item()


def test_v_absorbs_the_flipped_labels(tmp_path):
    """On 20 % symmetric noise v carries far more mass on the flipped samples than on the clean ones (the noise is
    explained by the sparse term, not fitted by the network). From the official init (1e-8) v grows by a factor
    1 + 4 lr_v / B per epoch on a sample the network disagrees with, so a short run starts it at 1e-3 with lr_v 100
    (the official asymmetric rate): about 7x per epoch at B = 64."""
    rec = Recorder()
    result = fit(smoke(tmp_path, "strategies=[{name: sop, lr_v: 100, init_std: 0.001}]", "trainer.epochs=4"),
                 quiet=True, callbacks=[rec])
    assert result["status"] == "completed", result["error"]
    (sop,) = rec.strategies
    flipped, clean = _v_mass(sop, rec.module.trainer.datamodule)
    assert flipped > 0.3 and flipped > 5 * clean


def test_sop_plus_resumes_exactly(tmp_path):
    assert_resumes_exactly(tmp_path, ["strategies=[{name: sop_plus}]", "trainer.epochs=3"])


def test_sop_is_registered_with_its_parameters():
    assert SOP.Params().lr_v == 10.0
