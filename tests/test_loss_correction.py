"""Loss correction (forward, backward), truncated GCE and IMAE: the formulas on hand-computed cases, their limits,
the transition estimate, the oracle flag, bad parameters, and short real fits on the synthetic smoke config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml

from robustlearn.config import load_config
from robustlearn.data.datamodule import RobustDataModule
from robustlearn.data.noise.simple import Symmetric
from robustlearn.errors import ConfigError, RunFailed
from robustlearn.runner import fit
from robustlearn.strategies.noisy.backward_correction import BackwardCorrection
from robustlearn.strategies.noisy.forward_correction import ForwardCorrection
from robustlearn.strategies.noisy.imae import IMAE
from robustlearn.strategies.noisy.transition import estimate_transition
from robustlearn.strategies.noisy.truncated_gce import TruncatedGCE
from tests.conftest import CONFIGS, SMOKE
from tests.protocol_helpers import assert_bad_strategy_parameter, assert_resumes_exactly, rows
from tests.test_resume import KEYS, StopAtEpoch, comparable_rows

# softmax(log [0.2, 0.3, 0.5]) = [0.2, 0.3, 0.5]
P3 = torch.log(torch.tensor([[0.2, 0.3, 0.5]] * 3))
Y3 = torch.tensor([0, 1, 2])
T3 = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.0, 0.3, 0.7]])
# softmax([0, ln 3]) = [0.25, 0.75]
P2 = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
Y2 = torch.tensor([0, 1])
PAIRFLIP = ["noise.kind=pairflip", "noise.rate=0.45"]


def with_matrix(cls, t, **params):
    s = cls(cls.Params(matrix="true", **params))
    s.set_transition(t)
    return s


def random_case(k=4, b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(b, k, generator=g), torch.randint(0, k, (b,), generator=g)


def symmetric_t(k: int, rate: float) -> np.ndarray:
    labels = np.repeat(np.arange(k), 10)
    return Symmetric().transition_and_labels(labels, k, rate, np.random.default_rng(0), None, "synthetic")[1]


# ---- forward correction ---------------------------------------------------------------------------------------------

def test_forward_formula():
    loss = with_matrix(ForwardCorrection, T3).loss(P3, {"y": Y3})
    # (Tᵀp)_y = Σ_i p_i T[i, y]: y=0: .2*.8 + .3*.1 = .19; y=1: .2*.2 + .3*.7 + .5*.3 = .40; y=2: .3*.2 + .5*.7 = .41
    torch.testing.assert_close(loss, torch.tensor([-math.log(0.19), -math.log(0.40), -math.log(0.41)]))
    assert loss.dtype == torch.float32


def test_forward_with_identity_is_cross_entropy():
    logits, y = random_case()
    loss = with_matrix(ForwardCorrection, torch.eye(4)).loss(logits, {"y": y})
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, reduction="none"))


def test_forward_with_the_true_symmetric_t():
    k, rate = 4, 0.4
    t = symmetric_t(k, rate)
    logits, y = random_case(k)
    loss = with_matrix(ForwardCorrection, t).loss(logits, {"y": y})
    p_y = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    # T = (1 - r) I + r / (K - 1) (11ᵀ - I): (Tᵀp)_y = (1 - r) p_y + r / (K - 1) (1 - p_y)
    torch.testing.assert_close(loss, -torch.log((1 - rate) * p_y + rate / (k - 1) * (1 - p_y)))


def test_forward_clamps_before_the_log_and_accepts_bf16():
    s = with_matrix(ForwardCorrection, torch.eye(2))
    loss = s.loss(torch.tensor([[0.0, -300.0]]), {"y": torch.tensor([1])})  # p_1 underflows to 0
    assert loss.item() == pytest.approx(-math.log(1e-7), rel=1e-6)
    half = s.loss(P2.to(torch.bfloat16), {"y": Y2})
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


def test_warm_up_is_cross_entropy():
    logits, y = random_case()
    for cls in (ForwardCorrection, BackwardCorrection):
        torch.testing.assert_close(cls().loss(logits, {"y": y}), F.cross_entropy(logits, y, reduction="none"))


# ---- backward correction --------------------------------------------------------------------------------------------

def test_backward_formula():
    # T = [[.8, .2], [.3, .7]], det .5, T⁻¹ = [[1.4, -.4], [-.6, 1.6]]; ℓ(p) = [-ln .25, -ln .75]
    loss = with_matrix(BackwardCorrection, [[0.8, 0.2], [0.3, 0.7]]).loss(P2, {"y": Y2})
    l0, l1 = -math.log(0.25), -math.log(0.75)
    torch.testing.assert_close(loss, torch.tensor([1.4 * l0 - 0.4 * l1, -0.6 * l0 + 1.6 * l1]))
    assert loss[1].item() == pytest.approx(-0.371485, abs=1e-5)  # unbiased, hence negative here


def test_backward_with_identity_is_cross_entropy():
    logits, y = random_case()
    loss = with_matrix(BackwardCorrection, torch.eye(4)).loss(logits, {"y": y})
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, reduction="none"))


def test_backward_floors_log_p():
    loss = with_matrix(BackwardCorrection, [[0.8, 0.2], [0.3, 0.7]]).loss(
        torch.tensor([[0.0, -300.0]]), {"y": torch.tensor([0])})
    # log p = [0, -300] clamped to [0, ln 1e-7]: 1.4 * 0 - 0.4 * (-ln 1e-7)
    assert loss.item() == pytest.approx(-0.4 * -math.log(1e-7), rel=1e-5)


def test_backward_refuses_a_singular_t():
    with pytest.raises(RunFailed, match="singular"):
        with_matrix(BackwardCorrection, symmetric_t(4, 0.75))  # every row 1/4
    with_matrix(ForwardCorrection, symmetric_t(4, 0.75))  # forward correction needs no inverse


def test_backward_singular_true_t_fails_the_run_with_the_reason(tmp_path):
    cfg = load_config(SMOKE, [f"output.root={tmp_path}", "noise.rate=0.75", "trainer.epochs=1",
                              "strategies=[{name: backward_correction, matrix: true}]"])
    result = fit(cfg, quiet=True)
    assert result["status"] == "failed"
    assert "singular" in result["error"] and "backward_correction" in result["error"]


# ---- the transition estimate ----------------------------------------------------------------------------------------

def test_anchor_is_the_sample_below_the_percentile():
    # column 0 over 101 samples: 0.00, 0.01, ..., 1.00; numpy's 97th percentile ('higher') is 0.97, so the anchor is
    # the largest value strictly below it, 0.96; with percentile 100 it is the argmax, 1.00
    col = torch.linspace(0, 1, 101, dtype=torch.float64)
    probs = torch.stack([col, 1 - col], 1)
    expected = np.percentile(col.numpy(), 97, method="higher")
    assert expected == pytest.approx(0.97)
    t = estimate_transition(probs, 97)
    torch.testing.assert_close(t[0], torch.tensor([0.96, 0.04], dtype=torch.float64))
    torch.testing.assert_close(t[1], torch.tensor([0.04, 0.96], dtype=torch.float64))  # column 1 mirrored
    torch.testing.assert_close(estimate_transition(probs, 100)[0], torch.tensor([1.0, 0.0], dtype=torch.float64))
    unnormalised = estimate_transition(probs * 2, 100)
    torch.testing.assert_close(unnormalised.sum(1), torch.ones(2, dtype=torch.float64))  # rows sum to one


class Capture(pl.Callback):
    def on_train_end(self, trainer, pl_module):
        self.strategy = trainer.callbacks[0]


@pytest.fixture
def hidden_true_t(monkeypatch):
    """The datamodule's true T replaced by NaN once loaded: a run that read it would fail."""
    load = RobustDataModule.load

    def poisoned(self):
        out = load(self)
        self.noise_info.transition = np.full_like(self.noise_info.transition, np.nan)
        return out

    monkeypatch.setattr(RobustDataModule, "load", poisoned)


def estimated_t(root, percentile: int, seed: int = 0):
    """T estimated on 30 % pair flips after 4 warm-up epochs of 5 (the datamodule's true T is hidden), and the run."""
    cap = Capture()
    cfg = load_config(SMOKE, [f"output.root={root}", "noise.kind=pairflip", "noise.rate=0.3", "trainer.epochs=5",
                              f"seed={seed}", f"strategies=[{{name: forward_correction, warmup_epochs: 4, "
                              f"percentile: {percentile}}}]"])
    result = fit(cfg, quiet=True, callbacks=[cap])
    assert result["status"] == "completed", result["error"]
    return cap.strategy, result


def test_estimated_t_is_close_to_the_true_one_and_never_reads_it(tmp_path, hidden_true_t):
    strategy, result = estimated_t(tmp_path / "p97", 97)
    assert result["oracle"] is None and strategy.oracle is None
    true_t = 0.7 * np.eye(4) + 0.3 * np.roll(np.eye(4), 1, axis=1)  # pair flips i -> i + 1 at rate 0.3
    est = strategy.transition.numpy()
    mad = np.abs(est - true_t).mean()
    # mean absolute difference, measured: 0.057 (seed 0; seeds 0-4: 0.045-0.057); the identity is at 0.150
    assert mad < 0.08
    assert np.argmax(est - np.diag(np.diag(est)), axis=1).tolist() == [1, 2, 3, 0]  # the flip structure is found
    logged = [r for r in rows(result["run_dir"]) if r.get("forward_correction/t_diag_mean")]
    assert float(logged[0]["forward_correction/t_diag_mean"]) == pytest.approx(np.diag(est).mean(), abs=1e-6)
    assert logged[0]["epoch"] == "3"  # estimated at the end of the last warm-up epoch
    # the paper's robust anchor (97th percentile) against the plain argmax (measured 0.092 at seed 0)
    argmax = estimated_t(tmp_path / "p100", 100)[0].transition.numpy()
    assert mad < np.abs(argmax - true_t).mean() - 0.02


def test_forward_with_true_t_beats_cross_entropy_under_pair_flips(tmp_path):
    for seed in (0, 1):
        over = [*PAIRFLIP, "trainer.epochs=4", f"seed={seed}", "output.save_checkpoint=false"]
        ce = fit(load_config(SMOKE, [f"output.root={tmp_path / 'ce'}", *over]), quiet=True)
        fc = fit(load_config(SMOKE, [f"output.root={tmp_path / 'fc'}", *over,
                                     "strategies=[{name: forward_correction, matrix: true}]"]), quiet=True)
        # measured (seeds 0, 1, 2): CE 0.645, 0.733, 0.747; forward correction 0.998, 0.998, 0.997
        assert fc["test_acc_last"] > 0.95
        assert fc["test_acc_last"] > ce["test_acc_last"] + 0.15
        assert fc["oracle"] == "true T" and ce["oracle"] is None


def test_estimated_t_resumes_exactly(tmp_path):
    over = [*PAIRFLIP, "trainer.epochs=4", "strategies=[{name: forward_correction, warmup_epochs: 2}]"]
    cap = Capture()
    assert_resumes_exactly(tmp_path, over, stop_epoch=3, callbacks=[cap])
    assert cap.strategy.transition is not None  # from the checkpoint: epoch 3 trained with it


@pytest.mark.parametrize("name", ["forward_correction", "backward_correction"])
def test_oracle_only_with_the_true_matrix(name):
    cls = {"forward_correction": ForwardCorrection, "backward_correction": BackwardCorrection}[name]
    assert cls(cls.Params(matrix="true")).oracle == "true T"
    assert cls(cls.Params(matrix=True)).oracle == "true T"  # YAML's `matrix: true`
    assert cls().oracle is None and cls().params.matrix == "estimated"
    cfg = load_config(SMOKE, [f"strategies=[{{name: {name}, matrix: true}}]"])
    assert cls.from_config(dict(cfg.strategies[0])).oracle == "true T"


@pytest.mark.parametrize(("entry", "key"), [
    ("{name: forward_correction, warmup_epochs: 2}", "warmup_epochs"),
    ("{name: backward_correction, warmup_epochs: 3}", "warmup_epochs"),
    ("{name: truncated_gce, start_epoch: 2}", "start_epoch"),
])
def test_warm_up_not_shorter_than_the_run_is_bad_input(entry, key):
    # trainer.epochs = 2 in the smoke config: refused when the config loads, before anything runs or is written
    with pytest.raises(ConfigError, match=rf"strategies\[0\]\.{key}: .* is not below trainer.epochs = 2") as err:
        load_config(SMOKE, [f"strategies=[{entry}]"])
    assert err.value.key == f"strategies[0].{key}"


# ---- truncated GCE --------------------------------------------------------------------------------------------------

def test_truncated_gce_formula_with_weights_one_and_zero():
    s = TruncatedGCE(TruncatedGCE.Params(q=0.5, k=0.5))
    batch = {"y": Y2, "index": torch.tensor([0, 1])}
    # L_q(p) = (1 - p^q) / q = 2 (1 - √p): loss = 2 (1 - √p_y) - 2 (1 - √.5) = 2 (√.5 - √p_y)
    expected = torch.tensor([2 * (math.sqrt(0.5) - math.sqrt(0.25)), 2 * (math.sqrt(0.5) - math.sqrt(0.75))])
    torch.testing.assert_close(s.loss(P2, batch), expected)  # before allocation: w = 1
    s.weight.values = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(s.loss(P2, batch), torch.tensor([expected[0].item(), 0.0]))
    s.weight.values = torch.tensor([0.0, 1.0])
    torch.testing.assert_close(s.loss(P2, batch), torch.tensor([0.0, expected[1].item()]))
    assert expected[1] < 0 < expected[0]  # p_y above k: below the truncation level


def test_truncated_gce_gradient_is_plain_lq_with_weight_one():
    logits = P2.clone().requires_grad_(True)
    TruncatedGCE(TruncatedGCE.Params(q=0.7)).loss(logits, {"y": Y2, "index": torch.tensor([0, 1])}).sum().backward()
    plain = P2.clone().requires_grad_(True)
    p_y = torch.softmax(plain, 1).gather(1, Y2[:, None]).squeeze(1)
    ((1 - p_y**0.7) / 0.7).sum().backward()
    torch.testing.assert_close(logits.grad, plain.grad)


def test_truncated_gce_refresh_on_a_tiny_case():
    s = TruncatedGCE(TruncatedGCE.Params(k=0.5))
    s.weight.values = torch.ones(4)
    # p_y = .75, .25, .5 (not above k), .9
    logits = torch.log(torch.tensor([[0.25, 0.75], [0.25, 0.75], [0.5, 0.5], [0.9, 0.1]]))
    s.refresh(logits, torch.tensor([1, 0, 1, 0]))
    torch.testing.assert_close(s.weight.values, torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert s.kept_mask().tolist() == [True, False, False, True]
    loss = s.loss(logits[[3, 1]], {"y": torch.tensor([0, 0]), "index": torch.tensor([3, 1])})
    assert loss[1].item() == 0.0 and loss[0].item() < 0  # the weights are looked up by index


def test_truncated_gce_refresh_schedule():
    s = TruncatedGCE(TruncatedGCE.Params(start_epoch=3, refresh_every=2))
    # ends of epochs 2, 4, 6 (counted from 0): epochs 3, 5, 7 are the first to train with the new weights
    assert [e for e in range(8) if s.refresh_due(e)] == [2, 4, 6]


def test_truncated_gce_fit_refreshes_and_resumes(tmp_path):
    strategies = "strategies=[{name: truncated_gce, start_epoch: 2, refresh_every: 1}]"
    over = ["trainer.epochs=4", strategies]
    cap = Capture()
    straight = fit(load_config(SMOKE, [f"output.root={tmp_path / 'a'}", *over]), quiet=True, callbacks=[cap])
    kept = [float(r["truncated_gce/kept"]) for r in rows(straight["run_dir"])]  # the share each epoch trained on
    assert kept[:2] == [1.0, 1.0] and all(0.5 < x < 1.0 for x in kept[2:])  # refreshed after epochs 1 and 2
    mask = cap.strategy.kept_mask()
    assert mask.shape == (1800,) and 0.5 < mask.float().mean() < 1.0
    with pytest.raises(KeyboardInterrupt):
        fit(load_config(SMOKE, [f"output.root={tmp_path / 'b'}", *over]), quiet=True, callbacks=[StopAtEpoch(3)])
    resumed = fit(load_config(SMOKE, [f"output.root={tmp_path / 'b'}", *over, "resume=true"]), quiet=True)
    assert {k: resumed[k] for k in KEYS} == {k: straight[k] for k in KEYS}
    assert comparable_rows(resumed["run_dir"]) == comparable_rows(straight["run_dir"])


# ---- IMAE -----------------------------------------------------------------------------------------------------------
# The official derivative (XinshaoAmosWang/ProSelfLC-AT, src/proselflc/trainer/trainer_cnn_vision.py, `dm_exp_pi`):
#   e_i = exp(β (1 − p_i) (p_i + 1e-8)^λ),   ∂L/∂z_i = (p(z_i) − onehot(y_i)) / (2 (1 − p_i) + 1e-8) · e_i / Σ_j e_j
# with p_i = p_{y_i}: CE's logit gradient divided by its L1 norm 2 (1 − p_i), times the emphasis normalised to sum one.

def imae_emphasis_by_hand(p_y: list[float], beta: float, lam: float) -> list[float]:
    raw = [math.exp(beta * (1.0 - p) * (p + 1e-8) ** lam) for p in p_y]
    return [r / sum(raw) for r in raw]


def imae_official_gradient(logits: torch.Tensor, y: torch.Tensor, beta: float, lam: float) -> torch.Tensor:
    """The official ∂L/∂z, written out sample by sample in Python floats (float64)."""
    rows = []
    probs = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits.tolist()]
    p_y = [p[t] for p, t in zip(probs, y.tolist())]
    emphasis = imae_emphasis_by_hand(p_y, beta, lam)
    for p, t, py, e in zip(probs, y.tolist(), p_y, emphasis):
        rows.append([(pj - (1.0 if j == t else 0.0)) / (2.0 * (1.0 - py) + 1e-8) * e for j, pj in enumerate(p)])
    return torch.tensor(rows, dtype=torch.float64)


def imae_gradient(logits: torch.Tensor, y: torch.Tensor, beta: float, lam: float) -> torch.Tensor:
    """∂/∂z of the step's loss Σ_i w_i CE_i / B with IMAE's weights (CE: no loss provider), float64."""
    z = logits.detach().double().requires_grad_(True)
    per_sample = F.cross_entropy(z, y, reduction="none")
    w = IMAE(IMAE.Params(beta=beta, lam=lam)).weights(per_sample, z, {"y": y}, torch.ones_like(per_sample), None)
    ((w * per_sample).sum() / len(y)).backward()
    return z.grad


def test_imae_gradient_is_the_official_derivative_by_hand():
    # p_y = .75, .25, .5 (β = 8, λ = 1): e = exp(8 · .25 · .75) = e^1.5, exp(8 · .75 · .25) = e^1.5, exp(8 · .5 · .5)
    # = e^2 (up to the official 1e-8 in the power). CE's gradient p − onehot is (.25, −.25), (−.75, .75), (.5, −.5), of
    # L1 norm 2 (1 − p_y) = .5, 1.5, 1: each row becomes ±(.5, −.5) times e_i / Σ e.
    logits = torch.log(torch.tensor([[0.25, 0.75], [0.25, 0.75], [0.5, 0.5]], dtype=torch.float64))
    y = torch.tensor([1, 0, 1])
    e = [math.exp(8 * 0.25 * (0.75 + 1e-8)), math.exp(8 * 0.75 * (0.25 + 1e-8)), math.exp(8 * 0.5 * (0.5 + 1e-8))]
    a, b, c = (0.25 / (0.5 + 1e-8) * e[0], 0.75 / (1.5 + 1e-8) * e[1], 0.5 / (1.0 + 1e-8) * e[2])
    expected = torch.tensor([[a, -a], [-b, b], [c, -c]], dtype=torch.float64) / sum(e)
    # .5 e^1.5 / (2 e^1.5 + e^2) = 0.1370343..., .5 e^2 / (2 e^1.5 + e^2) = 0.2259313...
    by_hand = torch.tensor([[0.1370343, -0.1370343], [-0.1370343, 0.1370343], [0.2259314, -0.2259314]],
                           dtype=torch.float64)
    torch.testing.assert_close(expected, by_hand, atol=1e-7, rtol=0)
    grad = imae_gradient(logits, y, 8.0, 1.0)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad, imae_official_gradient(logits, y, 8.0, 1.0), rtol=1e-12, atol=1e-15)
    # each sample's gradient has L1 norm e_i / Σ e: the emphasis, summing to one over the batch
    torch.testing.assert_close(grad.abs().sum(1), torch.tensor(e, dtype=torch.float64) / sum(e), rtol=1e-7, atol=0)


@pytest.mark.parametrize("beta, lam, seed", [(8.0, 1.0, 1), (8.0, 0.5, 2), (3.0, 2.0, 3), (0.0, 1.0, 4)])
def test_imae_gradient_is_the_official_derivative_on_random_logits(beta, lam, seed):
    logits, y = random_case(k=3, b=5, seed=seed)
    logits = logits.double()
    torch.testing.assert_close(imae_gradient(logits, y, beta, lam), imae_official_gradient(logits, y, beta, lam),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("lam, peak", [(1.0, 0.5), (0.5, 0.33), (2.0, 0.67)])
def test_imae_emphasis_peaks_at_lambda_over_one_plus_lambda(lam, peak):
    # one sample per p_y = .01, .02, ..., .99 (two classes): the L1 norm of each sample's logit gradient, as a function
    # of p_y, is the emphasis exp(β (1 − p_y) p_y^λ) over the batch's sum, largest at p_y = λ / (1 + λ)
    p_y = torch.arange(1, 100, dtype=torch.float64) / 100
    logits = torch.stack([p_y.log(), (1 - p_y).log()], 1)
    y = torch.zeros(99, dtype=torch.long)
    norm = imae_gradient(logits, y, 8.0, lam).abs().sum(1)
    emphasis = torch.tensor(imae_emphasis_by_hand(p_y.tolist(), 8.0, lam), dtype=torch.float64)
    unit = 2 * (1 - p_y) / (2 * (1 - p_y) + 1e-8)  # CE's direction at L1 norm one, up to the official 1e-8
    torch.testing.assert_close(norm, emphasis * unit, rtol=1e-10, atol=0)
    assert p_y[norm.argmax()].item() == pytest.approx(peak)
    assert norm.sum().item() == pytest.approx(1.0)


def test_imae_weights_formula():
    # the weights B e_i / Σ e / (2 (1 − p_y) + 1e-8): times CE they give the official derivative
    logits = torch.log(torch.tensor([[0.25, 0.75], [0.25, 0.75], [0.5, 0.5]], dtype=torch.float64))
    y = torch.tensor([1, 0, 1])  # p_y = .75, .25, .5; 2 (1 − p_y) = .5, 1.5, 1
    w = IMAE(IMAE.Params(beta=8.0, lam=2.0)).weights(None, logits, {"y": y}, torch.ones(3, dtype=torch.float64), None)
    # exp(8 · .25 · .5625) = e^1.125, exp(8 · .75 · .0625) = e^.375, exp(8 · .5 · .25) = e^1, over their mean
    raw = torch.tensor([math.exp(1.125), math.exp(0.375), math.exp(1.0)], dtype=torch.float64)
    divisor = torch.tensor([0.5, 1.5, 1.0], dtype=torch.float64) + 1e-8
    torch.testing.assert_close(w, raw / raw.mean() / divisor, rtol=1e-7, atol=0)
    # they multiply the incoming weights (e.g. a presampler's importance weights); β = 0: CE's gradient at unit norm
    incoming = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    e1 = torch.tensor(imae_emphasis_by_hand([0.75, 0.25, 0.5], 8.0, 1.0), dtype=torch.float64) * 3
    torch.testing.assert_close(IMAE().weights(None, logits, {"y": y}, incoming, None), incoming * e1 / divisor)
    torch.testing.assert_close(IMAE(IMAE.Params(beta=0.0)).weights(None, logits, {"y": y}, incoming, None),
                               incoming / divisor)
    # float32 logits (bf16 too) give float32 weights; a fitted sample (p_y = 1 in float32) gets a finite weight
    z = torch.tensor([[0.0, 40.0], [0.0, 0.0]])
    w32 = IMAE().weights(None, z, {"y": torch.tensor([1, 0])}, torch.ones(2), None)
    assert w32.dtype == torch.float32 and torch.isfinite(w32).all()


# ---- parameters, method files and real fits -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "strategy,key",
    [("{name: forward_correction, matrix: false}", "matrix"), ("{name: forward_correction, matrix: oracle}", "matrix"),
     ("{name: forward_correction, warmup_epochs: 0}", "warmup_epochs"),
     ("{name: forward_correction, warmup_epochs: 1.5}", "warmup_epochs"),
     ("{name: forward_correction, percentile: 0}", "percentile"),
     ("{name: forward_correction, percentile: 101}", "percentile"),
     ("{name: backward_correction, matrix: estimate}", "matrix"),
     ("{name: backward_correction, warmup_epochs: -1}", "warmup_epochs"),
     ("{name: backward_correction, percentile: -5}", "percentile"),
     ("{name: truncated_gce, q: 0}", "q"), ("{name: truncated_gce, q: 1.5}", "q"),
     ("{name: truncated_gce, k: 0}", "k"), ("{name: truncated_gce, k: 1}", "k"),
     ("{name: truncated_gce, start_epoch: 0}", "start_epoch"),
     ("{name: truncated_gce, refresh_every: 0}", "refresh_every"),
     ("{name: truncated_gce, refresh_every: 2.5}", "refresh_every"),
     ("{name: imae, beta: -1}", "beta"), ("{name: imae, beta: .nan}", "beta"), ("{name: imae, lam: -0.5}", "lam"),
     ("{name: imae, lamda: 1}", "lamda")],
)
def test_bad_parameters_name_the_key(strategy, key):
    assert_bad_strategy_parameter(strategy, key)


DEFAULTS = {
    "forward_correction": {"matrix": "estimated", "warmup_epochs": 5, "percentile": 97},
    "backward_correction": {"matrix": "estimated", "warmup_epochs": 5, "percentile": 97},
    "forward_correction_true_t": {"matrix": True, "warmup_epochs": 5, "percentile": 97},
    "truncated_gce": {"q": 0.7, "k": 0.5, "start_epoch": 5, "refresh_every": 5},
    "imae": {"beta": 8.0, "lam": 1.0},
}
LABEL = {"forward_correction_true_t": "forward_correction"}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_method_file_sets_every_parameter_at_its_default(name):
    data = yaml.safe_load((CONFIGS / "methods" / f"{name}.yaml").read_text())
    strategy = LABEL.get(name, name)
    assert data["method"] == strategy
    assert data["strategies"] == [{"name": strategy, **DEFAULTS[name]}]
    cls = {"forward_correction": ForwardCorrection, "backward_correction": BackwardCorrection,
           "truncated_gce": TruncatedGCE, "imae": IMAE}[strategy]
    params = cls.Params()
    expected = {k: ("estimated" if v is True and k == "matrix" else v) for k, v in DEFAULTS[name].items()}
    if name != "forward_correction_true_t":
        assert {k: getattr(params, k) for k in expected} == expected


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_a_short_fit_with_the_method_file_completes(name, tmp_path):
    # six epochs: the defaults estimate T (or refresh the weights) at the end of epoch 4
    cfg = load_config(SMOKE, [f"output.root={tmp_path}", "trainer.epochs=6", "output.save_checkpoint=false"],
                      includes=[CONFIGS / "methods" / f"{name}.yaml"])
    result = fit(cfg, quiet=True)
    assert result["status"] == "completed", result.get("error")
    assert result["method"] == LABEL.get(name, name)
    assert result["oracle"] == ("true T" if name == "forward_correction_true_t" else None)
    assert result["test_acc_last"] > 0.5
