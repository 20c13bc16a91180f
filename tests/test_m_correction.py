"""M-correction: the beta mixture on data from a known mixture, the noise posterior, the bootstrap losses against
their formulas on hand-computed cases, mixup's mixed targets, the class-balance penalty, bad parameters, and real
fits on the synthetic smoke config (mixture logged, no host sync, exact resume)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

import robustlearn.strategies.noisy.m_correction  # noqa: F401  (registers m_correction)
from robustlearn.runner import fit
from robustlearn.strategies.noisy.beta_mixture import BetaMixture, weighted_beta_moments
from robustlearn.strategies.noisy.m_correction import (
    MCorrection,
    bootstrap_targets,
    class_balance_penalty,
    noise_posterior,
)
from tests.conftest import CONFIGS
from tests.protocol_helpers import assert_bad_strategy_parameter, assert_resumes_exactly, rows, smoke
from tests.sync_guard import _WatchStrategies

# softmax(log [0.2, 0.3, 0.5]) = [0.2, 0.3, 0.5]
P = torch.log(torch.tensor([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]], dtype=torch.float64))


def known_mixture(n: int = 20000, seed: int = 0):
    """0.7 Beta(2, 8) + 0.3 Beta(8, 2), and which component drew each sample."""
    rng = np.random.default_rng(seed)
    high = rng.random(n) < 0.3
    return np.where(high, rng.beta(8, 2, n), rng.beta(2, 8, n)), high


# ---- the beta mixture -----------------------------------------------------------------------------------------------

def test_weighted_moments_by_hand():
    # mean .3, variance .01: m (1 - m) / s² - 1 = .21 / .01 - 1 = 20, α = .3 · 20 = 6, β = 6 · .7 / .3 = 14
    a, b = weighted_beta_moments(np.array([0.2, 0.4]), np.array([1.0, 1.0]))
    assert (a, b) == pytest.approx((6.0, 14.0))
    # weights 3:1 on .2 and .4: mean .25, variance .0075, .1875 / .0075 - 1 = 24, α = 6, β = 18
    assert weighted_beta_moments(np.array([0.2, 0.4]), np.array([3.0, 1.0])) == pytest.approx((6.0, 18.0))


@pytest.mark.parametrize("seed", [0, 1])
def test_beta_mixture_recovers_a_known_mixture(seed):
    x, high = known_mixture(seed=seed)
    m = BetaMixture().fit(x, max_iters=100)
    low, hi = np.argsort(m.means)
    # measured (seeds 0-2): α, β within 8 % of (2, 8) and (8, 2); weights within 0.006 of .7/.3; means within 0.007
    assert m.weights[[low, hi]] == pytest.approx([0.7, 0.3], abs=0.02)
    assert m.means[[low, hi]] == pytest.approx([0.2, 0.8], abs=0.01)
    assert [m.alphas[low], m.betas[low]] == pytest.approx([2.0, 8.0], rel=0.10)
    assert [m.alphas[hi], m.betas[hi]] == pytest.approx([8.0, 2.0], rel=0.10)
    assert m.high_component() == hi
    assert ((m.posterior(x, hi) > 0.5) == high).mean() > 0.97  # measured 0.983 (the Bayes rule's accuracy)


def test_beta_mixture_with_the_official_ten_iterations():
    # 10 EM iterations (the default, official) from (1, 2), (2, 1) are not converged on this mixture (measured:
    # weights .61/.39, means .18/.69) but order the components and classify 95 % of the samples
    x, high = known_mixture()
    m = BetaMixture().fit(x)
    assert m.means[0] < 0.3 < 0.6 < m.means[1]
    assert ((m.posterior(x, 1) > 0.5) == high).mean() > 0.94


def test_beta_mixture_survives_degenerate_data():
    for x in (np.full(50, 0.3), np.r_[np.full(50, 0.3), np.full(5, 0.9)]):  # no spread: peaked betas, never NaN
        m = BetaMixture().fit(x)
        assert np.isfinite(m.alphas).all() and np.isfinite(m.betas).all() and np.isfinite(m.weights).all()
        assert np.isfinite(m.posterior(x, 1)).all()


# ---- the noise posterior ------------------------------------------------------------------------------------------

def test_noise_posterior_separates_high_losses_and_is_monotone():
    g = torch.Generator().manual_seed(0)
    clean = 0.1 * torch.rand(700, generator=g)  # small losses
    noisy = 2.0 + torch.rand(300, generator=g)  # large losses
    losses = torch.cat([clean, noisy])
    w, mixture = noise_posterior(losses)
    assert w.shape == (1000,) and w.dtype == torch.float32
    assert w.min() >= 1e-4 and w.max() <= 1 - 1e-4  # clamped as the official code does
    assert (w[:700] < 0.5).float().mean() > 0.99 and (w[700:] > 0.5).float().mean() > 0.99
    order = torch.argsort(losses)
    assert (torch.diff(w[order]) >= -1e-6).all()  # non-decreasing in the loss (the held peak)
    noisy_k = mixture.high_component()
    # fitted on the samples between p5 and p95: 250 high of 900; measured 0.22 after the 10 official iterations
    assert mixture.weights[noisy_k] == pytest.approx(250 / 900, abs=0.1)


# ---- the bootstrap losses -----------------------------------------------------------------------------------------

def active(bootstrap: str, w: list[float], **params) -> MCorrection:
    s = MCorrection(MCorrection.Params(bootstrap=bootstrap, mixup_alpha=0, **params))
    s.noisy_prob.values = torch.tensor(w, dtype=torch.float64)
    s.active = True
    return s


def test_hard_bootstrap_formula():
    s = active("hard", [0.25, 0.6])
    loss = s.loss(P, {"y": torch.tensor([0, 1]), "index": torch.tensor([0, 1])})
    # argmax p = class 2 (p = .5): −(1 − w) log p_y − w log .5
    expected = [-(0.75 * math.log(0.2) + 0.25 * math.log(0.5)), -(0.4 * math.log(0.3) + 0.6 * math.log(0.5))]
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float32))


def test_soft_bootstrap_formula():
    s = active("soft", [0.25, 0.6])
    loss = s.loss(P, {"y": torch.tensor([0, 2]), "index": torch.tensor([0, 1])})
    entropy = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))
    # −Σ ((1 − w) y + w p) log p = −(1 − w) log p_y + w H(p)
    expected = [-0.75 * math.log(0.2) + 0.25 * entropy, -0.4 * math.log(0.5) + 0.6 * entropy]
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float32))


def test_the_prediction_in_the_target_is_detached():
    z = P.float().clone().requires_grad_(True)
    active("soft", [0.25, 0.6]).loss(z, {"y": torch.tensor([0, 2]), "index": torch.tensor([0, 1])}).sum().backward()
    p = torch.tensor([0.2, 0.3, 0.5])
    targets = torch.stack([0.75 * torch.tensor([1.0, 0, 0]) + 0.25 * p, 0.4 * torch.tensor([0, 0, 1.0]) + 0.6 * p])
    torch.testing.assert_close(z.grad, p - targets)  # CE against a constant target: ∂ℓ/∂z = p − t


def test_before_the_first_fit_it_is_cross_entropy_and_the_index_is_used():
    s = MCorrection(MCorrection.Params(mixup_alpha=0))
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0])
    batch = {"y": y, "index": torch.arange(5)}
    torch.testing.assert_close(s.loss(logits, batch), torch.nn.functional.cross_entropy(logits, y, reduction="none"))
    assert s.penalty(logits, batch) is None  # the class-balance penalty only while bootstrapping
    s = active("hard", [0.0, 0.0, 0.9, 0.0, 0.0])
    hard = s.loss(logits[[2]], {"y": y[[2]], "index": torch.tensor([2])})  # w looked up at the sample's position
    log_p = torch.log_softmax(logits[2], 0)
    torch.testing.assert_close(hard, (-(0.1 * log_p[2] + 0.9 * log_p.max())).reshape(1))


def test_bootstrap_targets_rows_sum_to_one():
    t = bootstrap_targets(torch.tensor([0, 1]), P, torch.tensor([0.3, 0.7]), "soft")
    torch.testing.assert_close(t.sum(1), torch.ones(2))


def test_mixup_loss_mixes_the_two_samples_targets():
    s = active("hard", [0.25, 0.6])
    y = torch.tensor([0, 1])
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]]))  # the mixed inputs' predictions
    pred = P.float()  # un-mixed predictions: argmax class 2 for both
    batch = {"y": y, "index": torch.tensor([0, 1]), "mixup_lam": torch.tensor([0.7, 0.7]),
             "mixup_perm": torch.tensor([1, 0]), "mixup_pred": pred}
    loss = s.loss(logits, batch)
    log_p = torch.log_softmax(logits, 1)

    def part(i, j):  # (1 − w_j) CE(o_i, y_j) + w_j CE(o_i, argmax p_j)
        w = [0.25, 0.6][j]
        return -(1 - w) * log_p[i, y[j]] - w * log_p[i, 2]

    expected = torch.stack([0.7 * part(0, 0) + 0.3 * part(0, 1), 0.7 * part(1, 1) + 0.3 * part(1, 0)])
    torch.testing.assert_close(loss, expected)


def test_mixup_batch_is_a_convex_combination():
    s = MCorrection()  # mixup_alpha = 32 by default
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    batch = {"x": x, "y": torch.zeros(8, dtype=torch.long), "index": torch.arange(8)}
    out = s.on_batch(batch, None)  # before the first fit: no prediction pass, so no module needed
    lam, perm = out["mixup_lam"][0], out["mixup_perm"]
    assert 0 < lam < 1 and sorted(perm.tolist()) == list(range(8)) and "mixup_pred" not in out
    torch.testing.assert_close(out["x"], lam * x + (1 - lam) * x[perm])
    assert out["x"] is not x and batch["x"] is x  # the incoming batch is left alone
    assert MCorrection(MCorrection.Params(mixup_alpha=0)).on_batch(batch, None) is batch


def test_class_balance_penalty_by_hand():
    assert class_balance_penalty(torch.zeros(3, 4)).item() == pytest.approx(0.0, abs=1e-7)  # uniform mean
    logits = torch.log(torch.tensor([[0.25, 0.75], [0.25, 0.75]]))
    expected = 0.5 * (math.log(0.5 / 0.25) + math.log(0.5 / 0.75))
    assert class_balance_penalty(logits).item() == pytest.approx(expected, rel=1e-5)
    s = active("hard", [0.1, 0.1], reg_term=2.0)
    assert s.penalty(logits, {}).item() == pytest.approx(2 * expected, rel=1e-5)


# ---- parameters -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "key"), [
    ("{name: m_correction, bootstrap: medium}", "bootstrap"),
    ("{name: m_correction, start_epoch: 0}", "start_epoch"),
    ("{name: m_correction, start_epoch: 1.5}", "start_epoch"),
    ("{name: m_correction, start_epoch: 2}", "start_epoch"),  # not below trainer.epochs = 2
    ("{name: m_correction, mixup_alpha: -1}", "mixup_alpha"),
    ("{name: m_correction, mixup_alpha: .nan}", "mixup_alpha"),
    ("{name: m_correction, reg_term: -0.5}", "reg_term"),
    ("{name: m_correction, max_iters: 0}", "max_iters"),
    ("{name: m_correction, alpha: 32}", "alpha"),
])
def test_bad_parameters_name_the_key(entry, key):
    assert_bad_strategy_parameter(entry, key)


def test_method_file_sets_every_parameter_at_its_default():
    data = yaml.safe_load((CONFIGS / "methods" / "m_correction.yaml").read_text())
    assert data["method"] == "m_correction"
    defaults = {"bootstrap": "hard", "start_epoch": 5, "mixup_alpha": 32.0, "reg_term": 1.0, "max_iters": 10}
    assert data["strategies"] == [{"name": "m_correction", **defaults}]
    params = MCorrection.Params()
    assert {k: getattr(params, k) for k in defaults} == defaults


# ---- real fits ------------------------------------------------------------------------------------------------------

class Capture:
    def __init__(self):
        import pytorch_lightning as pl

        outer = self

        class _Cb(pl.Callback):
            def on_train_end(self, trainer, pl_module):
                outer.strategy = next(c for c in trainer.callbacks if isinstance(c, MCorrection))
                outer.dm = trainer.datamodule

        self.callback = _Cb()


def test_fit_logs_the_mixture_and_flags_flipped_samples_without_host_syncs(tmp_path, guarded_step):
    cap = Capture()
    cfg = smoke(tmp_path, "noise.rate=0.3", "trainer.epochs=3", "output.save_checkpoint=false",
                "strategies=[{name: m_correction, start_epoch: 1}]")  # with mixup (alpha 32)
    result = fit(cfg, quiet=True, callbacks=[cap.callback, _WatchStrategies()])
    assert result["status"] == "completed", result["error"]
    assert result["oracle"] is None
    logged = rows(result["run_dir"])
    # fitted at the ends of epochs 0 and 1 (not after the last); epochs 1 and 2 trained with w
    fits = [r for r in logged if r["m_correction/noisy_mean"]]
    assert [r["epoch"] for r in fits] == ["0", "1"]
    assert all(float(r["m_correction/clean_mean"]) < float(r["m_correction/noisy_mean"]) for r in fits)
    assert [bool(r["m_correction/w_mean"]) for r in logged] == [False, True, True]
    w = cap.strategy.noisy_prob.values
    flipped = torch.as_tensor(cap.dm.noise_info.flip_mask[cap.dm.train_ids])  # the test's view of the truth only
    # measured: w > 0.5 on 85 % of the flipped samples and on none of the clean ones; mean w 0.86 and 0.06
    # (without mixup: 86 % and none; 0.70 and 0.0001)
    assert (w[flipped] > 0.5).float().mean() > 0.75 and (w[~flipped] > 0.5).float().mean() < 0.05
    assert w[flipped].mean() > 0.5 > 0.1 > w[~flipped].mean()
    assert result["test_acc_last"] > 0.8  # measured 0.899 (without mixup 0.993)


@pytest.mark.slow  # three fits: about 5 s on an idle 2-core machine
def test_mixup_fit_resumes_exactly(tmp_path):
    # mixup draws λ and π from the global RNG, whose state the checkpoint keeps; w and the flag are checkpointed
    straight, _ = assert_resumes_exactly(
        tmp_path, ["trainer.epochs=3", "noise.rate=0.3", "strategies=[{name: m_correction, start_epoch: 1}]"])
    assert straight["status"] == "completed"
    assert any(r["m_correction/w_mean"] for r in rows(straight["run_dir"]))
