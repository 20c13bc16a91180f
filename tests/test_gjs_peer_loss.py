"""GJS (Englesson & Azizpour 2021) and peer loss (Liu & Guo 2020): formulas by hand, the draws of peer pairs, the
settings per noise, and their behaviour on small noisy data against cross-entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustlearn.config import load_config
from robustlearn.errors import ConfigError
from robustlearn.runner import fit
from robustlearn.strategies.noisy.gjs import gjs_loss
from robustlearn.strategies.noisy.peer_loss import PeerLoss, alpha_plan, stable_ce, warmup_of
from tests.protocol_helpers import SMOKE, assert_bad_strategy_parameter, fit_method, rows, smoke


def test_gjs_with_one_view_by_hand():
    """K = 2, label 0, p = (1/2, 1/2), pi = (1/2, 1/2): m = (3/4, 1/4); KL(e_0 || m) = log 4/3,
    KL(p || m) = (1/2) log(2/3) + (1/2) log 2; Z = -1 / ((1/2) log(1/2))."""
    out = gjs_loss([torch.zeros(1, 2, dtype=torch.float64)], torch.tensor([0]), [0.5, 0.5])
    js = 0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert out.item() == pytest.approx(js * -1.0 / (0.5 * math.log(0.5)), rel=1e-6)


def test_gjs_with_two_views_by_hand():
    """pi = (0.3, 0.35, 0.35), K = 3, label 2; two views with p = softmax(z)."""
    z1 = torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64)
    z2 = torch.tensor([[0.0, 3.0, 0.0]], dtype=torch.float64)
    w = [0.3, 0.35, 0.35]
    p1, p2 = torch.softmax(z1, 1)[0].tolist(), torch.softmax(z2, 1)[0].tolist()
    label = [0.0, 0.0, 1.0]
    m = [w[0] * label[k] + w[1] * p1[k] + w[2] * p2[k] for k in range(3)]
    kl = lambda d: sum(d[k] * math.log(d[k] / m[k]) for k in range(3) if d[k] > 0)  # noqa: E731
    expected = (w[0] * kl(label) + w[1] * kl(p1) + w[2] * kl(p2)) * -1.0 / (0.7 * math.log(0.7))
    assert gjs_loss([z1, z2], torch.tensor([2]), w).item() == pytest.approx(expected, rel=1e-6)


def test_gjs_is_bounded_where_cross_entropy_is_not():
    """A confidently wrong prediction: CE grows without bound, GJS tends to Z times the JS of two disjoint
    distributions, H(pi) = log 2 at pi = (1/2, 1/2): Z log 2 = 2."""
    y = torch.tensor([0])
    losses = [gjs_loss([torch.tensor([[-s, s, 0.0]])], y, [0.5, 0.5]).item() for s in (5.0, 20.0, 80.0)]
    assert losses[0] < losses[1] <= losses[2] <= 2.0 + 1e-6 and losses[2] == pytest.approx(2.0, abs=1e-4)


def test_bad_parameters_are_refused():
    assert_bad_strategy_parameter("{name: gjs, weights: [0.5, 0.6]}", "weights")
    assert_bad_strategy_parameter("{name: gjs, weights: [1.0]}", "weights")
    assert_bad_strategy_parameter("{name: peer_loss, alpha: -1}", "alpha")


def test_gjs_weights_follow_the_noise_kind(tmp_path):
    from robustlearn.config import load_config
    from tests.conftest import CONFIGS, SMOKE

    cfg = load_config(SMOKE, ["noise.kind=asymmetric"], includes=[CONFIGS / "methods" / "gjs.yaml"])
    assert list(cfg.strategies[0].weights) == [0.3, 0.35, 0.35]


def test_peer_pairs_are_drawn_independently_from_the_whole_split(tmp_path):
    from robustlearn.data.datamodule import RobustDataModule

    dm = RobustDataModule(smoke(tmp_path)).load()
    dm.set_train_subset(torch.arange(10))  # another strategy's subset: peer draws ignore it
    tensors = dm.train_tensors()
    pairs = PeerLoss().peer_batch(dm, 4000)
    assert pairs["index"].max() >= 10
    # the input's own label agrees with the pair's label at the rate of two independent draws, sum_k prior_k^2
    own = torch.stack([tensors["y"][(tensors["x"] == x).all(1)][0] for x in pairs["x"][:600]])
    prior = torch.bincount(tensors["y"]).double() / len(tensors["y"])
    agree = (own == pairs["y"][:600]).double().mean().item()
    assert abs(agree - (prior ** 2).sum().item()) < 0.08


# Data a 256-unit MLP can memorise: 400 points in 40 dimensions, overlapping blobs, 40 % symmetric noise, 15 epochs.
MEMORISE = ["data.n_train=400", "data.n_features=40", "data.spread=3.0", "model.hidden=[256]", "data.batch_size=32",
            "trainer.epochs=15", "noise.rate=0.4", "output.save_checkpoint=false"]


def _memorized(root, name):
    cfg, result = fit_method(name, root, *MEMORISE)
    assert result["status"] == "completed", result["error"]
    curve = [float(r["train/memorized"]) for r in rows(result["run_dir"]) if r.get("train/memorized")]
    return curve, result["test_acc_last"]


def test_memorise_far_fewer_flipped_labels_than_cross_entropy(tmp_path):
    """The same seed and data: in the last epoch CE predicts most flipped samples as their noisy label (measured
    0.93), GJS few (0.05), and tests better (CE 0.68, GJS 0.98)."""
    (*_, ce), ce_acc = _memorized(tmp_path / "ce", "ce")
    assert ce > 0.6
    (*_, memorized), acc = _memorized(tmp_path / "gjs", "gjs")
    assert memorized < ce / 4 and acc > ce_acc + 0.1


def test_peer_loss_unlearns_flipped_labels_once_its_term_rises(tmp_path):
    """Peer loss is CE for its first 6 of 15 epochs (official plan: 40 %), memorising as CE does (0.45 at the end of
    warm-up); as alpha rises the memorised share falls (measured 0.29 at the end) while CE's climbs to 0.93, and it
    tests better (0.93 against CE's 0.68)."""
    ce_curve, ce_acc = _memorized(tmp_path / "ce", "ce")
    curve, acc = _memorized(tmp_path / "peer_loss", "peer_loss")
    warmup = 6
    assert curve[: warmup + 1] == ce_curve[: warmup + 1]  # alpha = 0: the same run as CE
    assert curve[-1] < 0.8 * curve[warmup] and curve[-1] < ce_curve[-1] / 3
    assert acc > ce_acc + 0.1


def test_peer_term_is_logged_negative_and_weighted_by_the_plan(tmp_path):
    result = fit(smoke(tmp_path, "strategies=[{name: peer_loss, warmup_epochs: 0}]", "trainer.epochs=2"), quiet=True)
    assert result["status"] == "completed", result["error"]
    logged = [r for r in rows(result["run_dir"]) if r.get("peer_loss/alpha")]
    assert [float(r["peer_loss/alpha"]) for r in logged] == [0.0, 1.0]
    assert float(rows(result["run_dir"])[-1]["peer_loss/penalty"]) < 0


def test_alpha_plan_is_the_official_fashion_mnist_plan():
    """Official `f_alpha` (Fashion_MNIST/runner.py): concatenate(linspace(0, 0, 120), linspace(0, 1, 180)),
    one value per epoch of 300; `warmup_epochs: null` takes the same 40 %."""
    official = np.concatenate((np.linspace(0.0, 0.0, num=120), np.linspace(0.0, 1, num=180)))
    assert warmup_of(None, 300) == 120 and warmup_of(7, 300) == 7
    ours = [alpha_plan(1.0, 120, 300, e) for e in range(300)]
    np.testing.assert_allclose(ours, official, rtol=0, atol=1e-15)
    assert [alpha_plan(0.5, 3, 8, e) for e in range(8)] == [0, 0, 0, 0, 0.125, 0.25, 0.375, 0.5]


def test_peer_term_is_the_official_bounded_cross_entropy():
    """-log(softmax(z)_y + 1e-5) in float64 by hand; at most -log(1e-5) however wrong the prediction."""
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [60.0, -60.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 2, 1])
    p = [math.exp(-1) / (math.exp(2) + math.exp(-1) + math.exp(0.5)), 1 / 3, math.exp(-120) / (1 + math.exp(-60))]
    expected = [-math.log(v + 1e-5) for v in p]
    assert stable_ce(z.float(), y).tolist() == pytest.approx(expected, rel=1e-6)
    assert float(stable_ce(z.float(), y).max()) <= -math.log(1e-5) + 1e-6
    assert float(torch.nn.functional.cross_entropy(z, y, reduction="none")[2]) > 100  # the unbounded CE


def test_a_warmup_that_leaves_no_ramp_is_refused():
    with pytest.raises(ConfigError, match="warmup_epochs") as err:
        load_config(SMOKE, ["strategies=[{name: peer_loss, warmup_epochs: 1}]", "trainer.epochs=2"])
    assert err.value.key.endswith("warmup_epochs")
