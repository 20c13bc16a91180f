"""The robust-loss family (MAE, NCE+RCE, Taylor-CE, Poly-1) against their formulas on hand-computed cases, their
limits, gradients at extreme logits, parameter validation, and one short real fit each."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml

from robustlearn.config import load_config
from robustlearn.errors import ConfigError
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.noisy.gce import GCE
from robustlearn.strategies.noisy.mae import MAE
from robustlearn.strategies.noisy.nce_rce import NCERCE
from robustlearn.strategies.noisy.poly1 import Poly1
from robustlearn.strategies.noisy.taylor_ce import TaylorCE
from tests.conftest import CONFIGS, SMOKE
from tests.protocol_helpers import assert_bad_strategy_parameter, fit_method

# softmax(log [1, 2, 5]) = [1/8, 2/8, 5/8]. Row 0 is labelled 2 (p_y = 0.625), row 1 is labelled 0 (p_y = 0.125).
P = [0.125, 0.25, 0.625]
LOGITS = torch.tensor([[math.log(1.0), math.log(2.0), math.log(5.0)]] * 2)
BATCH = {"y": torch.tensor([2, 0])}
P_Y = [0.625, 0.125]

# Extreme logits: row 0 is saturated on its label (p_y = 1), row 1 on another class (p_y underflows to 0).
EXTREME = torch.tensor([[50.0, -50.0, 0.0, -50.0], [50.0, -50.0, 50.0, -50.0], [-50.0, 50.0, -50.0, 0.0]])
EXTREME_BATCH = {"y": torch.tensor([0, 3, 0])}


def ce(p_y: float) -> float:
    return -math.log(p_y)


def expected(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# ---- MAE ------------------------------------------------------------------------------------------------------------


def test_mae_is_the_l1_distance_to_the_one_hot_label():
    loss = MAE().loss(LOGITS, BATCH)
    # sum_k |onehot_k - p_k|, written out for both rows
    row0 = abs(0 - P[0]) + abs(0 - P[1]) + abs(1 - P[2])
    row1 = abs(1 - P[0]) + abs(0 - P[1]) + abs(0 - P[2])
    torch.testing.assert_close(loss, expected([row0, row1]))
    torch.testing.assert_close(loss, expected([2 * (1 - 0.625), 2 * (1 - 0.125)]))  # = 2 (1 - p_y)
    assert loss[0].item() == pytest.approx(0.75, abs=1e-6)


def test_mae_is_twice_gce_with_q_one():
    torch.testing.assert_close(MAE().loss(LOGITS, BATCH), 2 * GCE(GCE.Params(q=1.0)).loss(LOGITS, BATCH))


# ---- NCE + RCE ------------------------------------------------------------------------------------------------------


def test_nce_rce_formula():
    loss = NCERCE(NCERCE.Params(alpha=0.5, beta=2.0, log_zero=-4.0)).loss(LOGITS, BATCH)
    denominator = -sum(math.log(p) for p in P)  # -sum_k log p_k, the same for both rows
    nce = [ce(p) / denominator for p in P_Y]
    rce = [4.0 * (1 - p) for p in P_Y]  # -A (1 - p_y) with A = -4
    torch.testing.assert_close(loss, expected([0.5 * n + 2.0 * r for n, r in zip(nce, rce)]))
    # by hand: -log 0.625 = 0.4700036, denominator = 3.9357395, NCE = 0.1194195; RCE = 1.5
    assert loss[0].item() == pytest.approx(0.5 * 0.1194195 + 2.0 * 1.5, abs=1e-6)


def test_nce_rce_defaults_are_the_sum_of_both_terms():
    loss = NCERCE().loss(LOGITS, BATCH)
    denominator = -sum(math.log(p) for p in P)
    torch.testing.assert_close(loss, expected([ce(p) / denominator + 4.0 * (1 - p) for p in P_Y]))


def test_nce_alone_and_rce_alone():
    nce = NCERCE(NCERCE.Params(alpha=1.0, beta=0.0)).loss(LOGITS, BATCH)
    denominator = -sum(math.log(p) for p in P)
    torch.testing.assert_close(nce, expected([ce(p) / denominator for p in P_Y]))
    rce = NCERCE(NCERCE.Params(alpha=0.0, beta=1.0, log_zero=-9.0)).loss(LOGITS, BATCH)
    torch.testing.assert_close(rce, expected([9.0 * (1 - p) for p in P_Y]))


def test_nce_is_in_unit_interval_and_one_over_k_for_uniform_predictions():
    nce = NCERCE(NCERCE.Params(alpha=1.0, beta=0.0))
    for k in (2, 4, 10):
        uniform = nce.loss(torch.zeros(3, k), {"y": torch.tensor([0, 1, k - 1])})
        torch.testing.assert_close(uniform, torch.full((3,), 1.0 / k))
    g = torch.Generator().manual_seed(0)
    logits = 6.0 * torch.randn(500, 7, generator=g)
    values = nce.loss(logits, {"y": torch.randint(0, 7, (500,), generator=g)})
    assert values.min().item() >= 0.0 and values.max().item() <= 1.0
    assert values.max().item() > 0.3 and values.min().item() < 0.01  # the sample spreads over the interval
    # both ends: a confident right prediction gives ~0, a confident wrong one between two classes gives ~1
    ends = nce.loss(torch.tensor([[10.0, -10.0], [10.0, -10.0]]), {"y": torch.tensor([0, 1])})
    torch.testing.assert_close(ends, expected([0.0, 1.0]), rtol=0, atol=1e-6)


# ---- Taylor cross-entropy -------------------------------------------------------------------------------------------


def test_taylor_ce_formula():
    loss = TaylorCE(TaylorCE.Params(order=3)).loss(LOGITS, BATCH)
    values = [(1 - p) + (1 - p) ** 2 / 2 + (1 - p) ** 3 / 3 for p in P_Y]
    torch.testing.assert_close(loss, expected(values))
    # by hand for p_y = 0.625: 0.375 + 0.0703125 + 0.017578125
    assert loss[0].item() == pytest.approx(0.462890625, abs=1e-6)
    default = TaylorCE().loss(LOGITS, BATCH)  # order 2
    torch.testing.assert_close(default, expected([(1 - p) + (1 - p) ** 2 / 2 for p in P_Y]))


def test_taylor_ce_order_one_is_one_minus_p_y():
    torch.testing.assert_close(TaylorCE(TaylorCE.Params(order=1)).loss(LOGITS, BATCH), expected([1 - p for p in P_Y]))


def test_taylor_ce_approaches_ce_as_the_order_grows():
    # a confident case: p_y = 0.9 and 0.75 (the remainder after order t is below (1 - p_y)^(t+1) / ((t+1) p_y))
    logits = torch.tensor([[math.log(0.9), math.log(0.1)], [math.log(0.25), math.log(0.75)]])
    batch = {"y": torch.tensor([0, 1])}
    target = F.cross_entropy(logits, batch["y"], reduction="none")
    torch.testing.assert_close(target, expected([ce(0.9), ce(0.75)]))
    gaps = [(TaylorCE(TaylorCE.Params(order=t)).loss(logits, batch) - target).abs().max().item() for t in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))  # monotone approach
    torch.testing.assert_close(TaylorCE(TaylorCE.Params(order=60)).loss(logits, batch), target, rtol=1e-6, atol=1e-6)


# ---- Poly-1 ---------------------------------------------------------------------------------------------------------


def test_poly1_formula():
    loss = Poly1(Poly1.Params(epsilon=2.0)).loss(LOGITS, BATCH)
    torch.testing.assert_close(loss, expected([ce(p) + 2.0 * (1 - p) for p in P_Y]))
    # by hand for p_y = 0.625: 0.4700036 + 0.75
    assert loss[0].item() == pytest.approx(1.2200036, abs=1e-6)
    default = Poly1().loss(LOGITS, BATCH)  # epsilon 1
    torch.testing.assert_close(default, expected([ce(p) + (1 - p) for p in P_Y]))


def test_poly1_with_epsilon_zero_is_ce():
    loss = Poly1(Poly1.Params(epsilon=0.0)).loss(LOGITS, BATCH)
    torch.testing.assert_close(loss, F.cross_entropy(LOGITS, BATCH["y"], reduction="none"))
    torch.testing.assert_close(loss, expected([ce(p) for p in P_Y]))


def test_poly1_with_epsilon_minus_one_drops_the_first_taylor_term():
    # CE = sum_{j>=1} (1 - p_y)^j / j; epsilon = -1 removes the j = 1 term
    poly = Poly1(Poly1.Params(epsilon=-1.0)).loss(LOGITS, BATCH)
    ce_loss = F.cross_entropy(LOGITS, BATCH["y"], reduction="none")
    torch.testing.assert_close(poly, ce_loss - TaylorCE(TaylorCE.Params(order=1)).loss(LOGITS, BATCH))


# ---- all of them: extreme logits, precision -------------------------------------------------------------------------

ALL = [
    MAE(), NCERCE(), NCERCE(NCERCE.Params(alpha=1.0, beta=0.0)), TaylorCE(), TaylorCE(TaylorCE.Params(order=1)),
    TaylorCE(TaylorCE.Params(order=12)), Poly1(), Poly1(Poly1.Params(epsilon=-1.0)),
]


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: f"{s.name}-{s.describe()}")
def test_finite_values_and_gradients_at_extreme_logits(strategy):
    logits = EXTREME.clone().requires_grad_(True)
    loss = strategy.loss(logits, EXTREME_BATCH)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: f"{s.name}-{s.describe()}")
def test_half_precision_logits_are_computed_in_float32(strategy):
    loss = strategy.loss(LOGITS.to(torch.bfloat16), BATCH)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, strategy.loss(LOGITS, BATCH), rtol=2e-2, atol=2e-2)


def test_losses_at_extreme_logits_take_their_limits():
    # row 0 has p_y = 1 (every loss 0), row 1 has p_y -> 0
    torch.testing.assert_close(MAE().loss(EXTREME, EXTREME_BATCH)[:2], expected([0.0, 2.0]))
    torch.testing.assert_close(TaylorCE(TaylorCE.Params(order=3)).loss(EXTREME, EXTREME_BATCH)[:2],
                               expected([0.0, 1 + 1 / 2 + 1 / 3]))
    nce = NCERCE(NCERCE.Params(alpha=1.0, beta=0.0)).loss(EXTREME, EXTREME_BATCH)
    assert nce[0].item() == pytest.approx(0.0, abs=1e-6) and 0.0 < nce[1].item() <= 1.0
    poly = Poly1().loss(EXTREME, EXTREME_BATCH)
    assert poly[0].item() == pytest.approx(0.0, abs=1e-6)
    assert poly[1].item() == pytest.approx(100.0 + math.log(2.0) + 1.0, rel=1e-5)  # CE = 100 + log 2, p_y ~ 0


# ---- parameters -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy,key",
    [
        ("{name: mae, scale: 2}", "scale"),
        ("{name: nce_rce, alpha: -1}", "alpha"),
        ("{name: nce_rce, beta: -0.5}", "beta"),
        ("{name: nce_rce, alpha: 0, beta: 0}", "alpha"),
        ("{name: nce_rce, alpha: .nan}", "alpha"),
        ("{name: nce_rce, beta: .inf}", "beta"),
        ("{name: nce_rce, alpha: one}", "alpha"),
        ("{name: nce_rce, log_zero: 0}", "log_zero"),
        ("{name: nce_rce, log_zero: 2}", "log_zero"),
        ("{name: nce_rce, log_zero: -.inf}", "log_zero"),
        ("{name: nce_rce, log_zero: [1]}", "log_zero"),
        ("{name: nce_rce, gamma: 1}", "gamma"),
        ("{name: taylor_ce, order: 0}", "order"),
        ("{name: taylor_ce, order: -2}", "order"),
        ("{name: taylor_ce, order: 2.5}", "order"),
        ("{name: taylor_ce, order: 2.0}", "order"),
        ("{name: taylor_ce, order: true}", "order"),
        ("{name: taylor_ce, order: two}", "order"),
        ("{name: taylor_ce, t: 2}", "t"),
        ("{name: poly1, epsilon: -1.5}", "epsilon"),
        ("{name: poly1, epsilon: .nan}", "epsilon"),
        ("{name: poly1, epsilon: .inf}", "epsilon"),
        ("{name: poly1, epsilon: big}", "epsilon"),
        ("{name: poly1, eps: 1}", "eps"),
    ],
)
def test_bad_parameters_name_the_key(strategy, key):
    assert_bad_strategy_parameter(strategy, key)


def test_good_edge_values_are_accepted():
    cfg = load_config(SMOKE, ["strategies=[{name: nce_rce, alpha: 0, beta: 2, log_zero: -0.5}]"])
    assert cfg.strategies[0].alpha == 0.0 and cfg.strategies[0].log_zero == -0.5
    assert load_config(SMOKE, ["strategies=[{name: poly1, epsilon: -1}]"]).strategies[0].epsilon == -1.0
    assert load_config(SMOKE, ["strategies=[{name: taylor_ce, order: 1}]"]).strategies[0].order == 1


@pytest.mark.parametrize(
    "params,key",
    [(lambda: TaylorCE.Params(order=2.0), "order"), (lambda: TaylorCE.Params(order=True), "order"),
     (lambda: NCERCE.Params(alpha=float("nan")), "alpha"), (lambda: Poly1.Params(epsilon=-2), "epsilon")],
)
def test_params_check_themselves_when_built_in_code(params, key):
    with pytest.raises(ConfigError) as err:
        params()
    assert err.value.key == key


# ---- the method files and a real fit --------------------------------------------------------------------------------

DEFAULTS = {"mae": {}, "nce_rce": {"alpha": 1.0, "beta": 1.0, "log_zero": -4.0}, "taylor_ce": {"order": 2},
            "poly1": {"epsilon": 1.0}}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_method_file_sets_every_parameter_at_its_default(name):
    data = yaml.safe_load((CONFIGS / "methods" / f"{name}.yaml").read_text())
    assert data["method"] == name
    assert data["strategies"] == [{"name": name, **DEFAULTS[name]}]


class StepLosses(pl.Callback):
    """The per-sample losses each step trained on, beside the run's strategy recomputed on that step's logits."""

    def __init__(self):
        self.trained, self.recomputed, self.ce = [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        (strategy,) = [cb for cb in trainer.callbacks if isinstance(cb, Strategy)]
        logits, y = outputs["logits"], outputs["batch"]["y"]
        self.trained.append(outputs["per_sample"])
        self.recomputed.append(strategy.loss(logits, outputs["batch"]).detach())
        self.ce.append(F.cross_entropy(logits.float(), y, reduction="none"))


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_one_epoch_fit_completes(name, tmp_path):
    steps = StepLosses()
    cfg, result = fit_method(name, tmp_path, "trainer.epochs=1", callbacks=[steps])
    assert [s.name for s in cfg.strategies] == [name]
    assert result["status"] == "completed", result.get("error")
    assert result["strategies"] == [name] and result["method"] == name
    # the run trained on this loss, not on cross-entropy
    trained, recomputed, ce_loss = (torch.cat(v) for v in (steps.trained, steps.recomputed, steps.ce))
    assert len(trained) == 1800 and torch.isfinite(trained).all()
    torch.testing.assert_close(trained, recomputed)
    assert (trained - ce_loss).abs().max().item() > 1e-3
