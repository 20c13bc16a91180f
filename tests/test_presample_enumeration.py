"""Presampling is unbiased exactly: enumerating every with-replacement draw of b from B scored candidates, the expected
weighted loss and the expected weighted gradient equal the candidates' uniform mean (float64, a tiny linear model)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from robustlearn.strategies.sampling.presample import importance_sample


@pytest.mark.parametrize("smooth", [0.0, 0.3])
def test_expected_weighted_loss_and_gradient_equal_the_uniform_mean_by_enumeration(smooth):
    torch.manual_seed(0)
    B, b = 4, 3
    x = torch.randn(B, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    weight = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    losses = F.cross_entropy(x @ weight.T, y, reduction="none")
    scores = torch.tensor([0.5, 3.0, 1.0, 0.1], dtype=torch.float64)  # any positive scores
    _, _, p = importance_sample(scores, b, smooth)
    p = p.double()

    def weighted(picks):
        # what the strategy trains on for these picks: its weights 1 / (B p) from the returned p, reduced Σ w l / b
        w = 1.0 / (B * p[list(picks)])
        return (w * losses[list(picks)]).sum() / b

    expected_loss = torch.zeros((), dtype=torch.float64)
    for picks in itertools.product(range(B), repeat=b):  # every ordered draw with replacement
        expected_loss = expected_loss + torch.prod(p[list(picks)]) * weighted(picks)
    (grad_expected,) = torch.autograd.grad(expected_loss, weight, retain_graph=True)
    (grad_mean,) = torch.autograd.grad(losses.mean(), weight)
    # p is computed in float32 by the strategy: exact up to float32 rounding of p (a biased scheme, e.g. weights from
    # the raw scores, is off by far more: tests/test_presample.py)
    torch.testing.assert_close(expected_loss, losses.mean(), rtol=1e-6, atol=0.0)
    torch.testing.assert_close(grad_expected, grad_mean, rtol=1e-6, atol=1e-9)
    wrong = sum(torch.prod(p[list(c)]) * ((losses[list(c)] / (B * scores[list(c)] / scores.sum())).sum() / b)
                for c in itertools.product(range(B), repeat=b))  # weights from the raw scores, unsmoothed
    if smooth:
        assert not torch.isclose(wrong, losses.mean(), rtol=1e-3)


def test_the_returned_weights_are_one_over_B_p_of_the_picks():
    g = torch.Generator().manual_seed(3)
    scores = torch.tensor([0.5, 3.0, 1.0, 0.1])
    pick, w, p = importance_sample(scores, 6, 0.0, g)
    torch.testing.assert_close(w, 1.0 / (4 * p[pick]))
