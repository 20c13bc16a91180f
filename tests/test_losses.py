"""Robust losses against their formulas on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from robustlearn.config import load_config
from robustlearn.errors import ConfigError
from robustlearn.strategies.noisy.gce import GCE
from robustlearn.strategies.noisy.sce import SCE
from tests.conftest import SMOKE

# softmax([0, ln 3]) = [0.25, 0.75]; label 1 has p_y = 0.75, label 0 has p_y = 0.25
LOGITS = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
BATCH = {"y": torch.tensor([1, 0])}


def test_gce_formula():
    loss = GCE(GCE.Params(q=0.5)).loss(LOGITS, BATCH)
    expected = torch.tensor([2 * (1 - math.sqrt(0.75)), 2 * (1 - math.sqrt(0.25))])  # (1 - p^q) / q
    torch.testing.assert_close(loss, expected)
    assert loss[0].item() == pytest.approx(0.2679492, abs=1e-6)


def test_gce_limits_mae_and_ce():
    torch.testing.assert_close(GCE(GCE.Params(q=1.0)).loss(LOGITS, BATCH), torch.tensor([0.25, 0.75]))
    near_ce = GCE(GCE.Params(q=1e-6)).loss(LOGITS, BATCH)
    torch.testing.assert_close(near_ce, torch.tensor([-math.log(0.75), -math.log(0.25)]), rtol=1e-4, atol=1e-5)


def test_sce_formula():
    loss = SCE(SCE.Params(alpha=0.1, beta=1.0, log_zero=-4.0)).loss(LOGITS, BATCH)
    expected = torch.tensor([0.1 * -math.log(0.75) + 4 * 0.25, 0.1 * -math.log(0.25) + 4 * 0.75])
    torch.testing.assert_close(loss, expected)
    assert loss[0].item() == pytest.approx(1.0287682, abs=1e-6)


def test_losses_have_gradients():
    logits = LOGITS.clone().requires_grad_(True)
    (GCE().loss(logits, BATCH).sum() + SCE().loss(logits, BATCH).sum()).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "strategy,key",
    [("{name: gce, q: 0}", "strategies[0].q"), ("{name: gce, q: 1.5}", "strategies[0].q"),
     ("{name: sce, log_zero: 1}", "strategies[0].log_zero"), ("{name: gce, k: 1}", "strategies[0].k")],
)
def test_bad_parameters_name_the_key(strategy, key):
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [f"strategies=[{strategy}]"])
    assert err.value.key == key and key in str(err.value)
