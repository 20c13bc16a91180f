"""Presampling (Katharopoulos & Fleuret 2018): τ against its formula, the importance weights and their unbiasedness,
the known mistakes of public implementations (τ's exponent, weights from raw scores, weights applied twice, drawing
without replacement), each score against its definition, the on/off switch without host syncs, parameter checks, the
method files, and short fits (an off switch trains exactly like plain training; resume is exact)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import robustlearn.strategies.sampling.presample  # noqa: F401  (registers presample)
from robustlearn.config import load_config
from robustlearn.epoch_means import EpochMeans
from robustlearn.errors import ConfigError
from robustlearn.runner import fit
from robustlearn.strategies.sampling.grad_norms import per_sample_grad_sq_norms
from robustlearn.strategies.sampling.presample import Presample, importance_sample, logit_scores
from robustlearn.strategies.sampling.tau import smoothed, threshold, variance_reduction
from robustlearn.strategies.step import StepPlan, strategy_step
from tests.conftest import CONFIGS, SMOKE
from tests.protocol_helpers import assert_bad_strategy_parameter, assert_resumes_exactly, rows, smoke
from tests.sync_guard import no_host_sync
from tests.test_resume import comparable_rows

# ---- τ -------------------------------------------------------------------------------------------------------------


def test_tau_formula_on_a_hand_computed_case():
    # s = [1, 3]: g = [1/4, 3/4], u = 1/2, ‖g − u‖² = 1/8, ‖g‖² = 5/8, ratio 1/5, τ = (4/5)^(−1/2) = √5 / 2
    tau = variance_reduction(torch.tensor([1.0, 3.0]))
    assert tau.item() == pytest.approx(math.sqrt(5) / 2, rel=1e-6)
    # the mistake τ = (1 − r)**-1/2, which parses as ((1 − r)⁻¹)/2 = 0.625, is not what is computed
    assert tau.item() != pytest.approx((1 - 0.2) ** -1 / 2, rel=1e-3)


def test_tau_is_the_ratio_of_moments_one_for_equal_scores_and_root_n_for_one():
    s = torch.tensor([0.5, 2.0, 0.1, 4.0, 1.0], dtype=torch.float64)
    assert variance_reduction(s).item() == pytest.approx(math.sqrt((s**2).mean().item()) / s.mean().item(), rel=1e-12)
    assert variance_reduction(torch.full((7,), 3.0)).item() == pytest.approx(1.0, abs=1e-6)
    assert variance_reduction(torch.tensor([0.0, 0.0, 5.0, 0.0])).item() == pytest.approx(2.0, rel=1e-6)
    assert variance_reduction(torch.zeros(4)).item() == pytest.approx(1.0)  # no information: uniform
    assert smoothed(torch.tensor(0.0), torch.tensor(2.0), 0.9).item() == pytest.approx(0.2)


# ---- the draw and its weights ----------------------------------------------------------------------------------------

LOSSES = torch.tensor([0.1, 2.5, 0.3, 0.05, 1.2, 0.7, 3.0, 0.2, 0.02, 0.9, 0.4, 1.6], dtype=torch.float64)
SCORES = torch.tensor([0.3, 1.5, 0.2, 0.1, 1.0, 0.9, 2.0, 0.1, 0.05, 0.5, 0.6, 0.8])  # not proportional to the loss


def estimates(sampler, draws: int = 4000, b: int = 4) -> torch.Tensor:
    """Σ w l / b over `draws` independent draws of b from the 12 candidates."""
    g = torch.Generator().manual_seed(0)
    out = torch.empty(draws, dtype=torch.float64)
    for r in range(draws):
        pick, w = sampler(g, b)
        out[r] = (w.double() * LOSSES[pick]).sum() / b
    return out


def assert_unbiased(est: torch.Tensor) -> None:
    """|mean − mean loss over the B| < 4 standard errors (a 6e-5 chance of failing by luck; the seed is fixed)."""
    se = est.std().item() / math.sqrt(len(est))
    assert abs(est.mean().item() - LOSSES.mean().item()) < 4 * se, (est.mean().item(), LOSSES.mean().item(), se)


def test_the_weighted_loss_is_an_unbiased_estimate_of_the_mean_over_the_candidates():
    for smooth in (0.0, 0.5):
        assert_unbiased(estimates(lambda g, b, smooth=smooth: importance_sample(SCORES, b, smooth, g)[:2]))


def test_weights_are_one_over_B_p_of_the_smoothed_sampling_probabilities_not_of_the_raw_scores():
    g = torch.Generator().manual_seed(3)
    pick, w, p = importance_sample(SCORES, 6, 0.5, g)
    smoothed_p = (SCORES + 0.5) / (SCORES + 0.5).sum()
    torch.testing.assert_close(p, smoothed_p)
    torch.testing.assert_close(w, 1.0 / (12 * smoothed_p[pick]))
    raw = SCORES.mean() / SCORES[pick]  # the mistake: weights from the raw scores while sampling the smoothed ones
    assert (w - raw).abs().max() > 0.1

    def from_raw_scores(g, b):
        pick, _, _ = importance_sample(SCORES, b, 0.5, g)
        return pick, SCORES.mean() / SCORES[pick]

    est = estimates(from_raw_scores)  # ... and the test above catches it
    with pytest.raises(AssertionError):
        assert_unbiased(est)


def test_draws_are_with_replacement_and_without_replacement_would_be_biased():
    g = torch.Generator().manual_seed(0)
    peaked = torch.tensor([100.0] + [1e-3] * 11)
    pick, _, _ = importance_sample(peaked, 4, 0.0, g)
    assert pick.tolist() == [0, 0, 0, 0]  # one dominant candidate drawn again and again

    def without_replacement(g, b):  # the mistake: distinct draws weighted as independent ones
        p = SCORES / SCORES.sum()
        pick = torch.multinomial(p, b, replacement=False, generator=g)
        return pick, 1.0 / (12 * p[pick])

    with pytest.raises(AssertionError):
        assert_unbiased(estimates(without_replacement))


def test_scores_proportional_to_the_loss_give_the_mean_with_zero_variance():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        pick, w, _ = importance_sample(LOSSES.float(), 4, 0.0, g)
        assert (w.double() * LOSSES[pick]).sum().item() / 4 == pytest.approx(LOSSES.mean().item(), rel=1e-5)


def test_degenerate_scores_sample_uniformly():
    g = torch.Generator().manual_seed(0)
    for s in (torch.zeros(5), torch.tensor([float("nan"), 0.0, float("inf"), 0.0, -1.0])):
        _, w, p = importance_sample(s, 3, 0.0, g)
        torch.testing.assert_close(p, torch.full((5,), 0.2))
        torch.testing.assert_close(w, torch.ones(3))
    pick, _, _ = importance_sample(torch.ones(5), 1, 0.0, g)  # one draw (taken as the first of two)
    assert pick.shape == (1,)


# ---- the scores and the step, on a small module ------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.body(x))


class Module(nn.Module):
    """What the strategy reads from a module: `net`, `num_classes`, `trainer`, `epoch_means`."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = Net()
        self.num_classes = 3
        self.trainer = SimpleNamespace(current_epoch=0, global_rank=0)
        self.epoch_means = EpochMeans()

    def forward(self, x):
        return self.net(x)


class DataModule:
    """`draw(n)` from 40 fixed samples, uniformly with replacement, from its own generator."""

    def __init__(self):
        g = torch.Generator().manual_seed(5)
        self.cfg = SimpleNamespace(seed=0)
        self.data_cfg = SimpleNamespace(batch_size=6)  # the b of `loader_batch()`
        self.drawn = []  # the n of every draw
        self.data = {"x": torch.randn(40, 5, generator=g), "y": torch.randint(0, 3, (40,), generator=g),
                     "index": torch.arange(40)}
        self.data["y_clean"] = self.data["y"].clone()
        self.g = torch.Generator().manual_seed(6)

    def draw(self, n):
        self.drawn.append(n)
        pos = torch.randint(40, (n,), generator=self.g)
        return {k: v[pos] for k, v in self.data.items()}


def strategy(**params) -> Presample:
    s = Presample(Presample.Params(**params))
    s.dm = DataModule()
    return s


def test_each_score_against_its_definition():
    module = Module()
    x, y = DataModule().data["x"][:10], DataModule().data["y"][:10]
    module.eval()
    with torch.no_grad():
        logits, h = module(x), module.net.body(x)
    module.train()
    upper = (torch.softmax(logits, 1) - F.one_hot(y, 3)).norm(dim=1)
    z = logits.clone().requires_grad_(True)
    F.cross_entropy(z, y, reduction="sum").backward()  # ‖∂l_i/∂z_i‖, the upper bound by autograd
    torch.testing.assert_close(upper, z.grad.norm(dim=1))
    last = per_sample_grad_sq_norms(module.net, x, y, per_layer=True)["fc"].sqrt()
    full = per_sample_grad_sq_norms(module.net, x, y).sqrt()
    expected = {"loss": F.cross_entropy(logits, y, reduction="none"), "upper_bound": upper,
                "last_layer": upper * torch.sqrt(h.square().sum(1) + 1), "exact": full}
    torch.testing.assert_close(expected["last_layer"], last)  # the closed form is the last layer's exact norm
    for kind, value in expected.items():
        got = strategy(score=kind).scores(x, y, module)
        torch.testing.assert_close(got, value.detach(), rtol=1e-4, atol=1e-6, msg=kind)
        assert all(m.training for m in module.modules())  # eval mode only while scoring


def test_last_layer_needs_a_linear_output_layer():
    module = Module()
    module.net = nn.Sequential(nn.Flatten(), nn.Conv1d(1, 3, 5))  # no nn.Linear at all
    with pytest.raises(ConfigError, match="no nn.Linear"):
        strategy(score="last_layer").scores(torch.randn(4, 1, 5), torch.tensor([0, 1, 2, 0]), module)
    module.net = nn.Sequential(nn.Linear(5, 3), nn.Tanh())  # the output is not the linear layer's
    with pytest.raises(RuntimeError, match="last nn.Linear"):
        strategy(score="last_layer").scores(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]), module)


def step(s: Presample, module: Module, batch: dict) -> dict:
    return strategy_step(module, batch, plan=StepPlan([s]))


def loader_batch(b=6):
    data = DataModule().data
    return {k: v[-b:].clone() for k, v in data.items()}


def test_the_loss_applies_the_importance_weights_once():
    s, module = strategy(score="loss", tau_th=0.0, switch="step"), Module()
    s.tau_bar = torch.tensor(1.0)  # above the threshold: this step samples
    out = step(s, module, loader_batch())
    trained = out["batch"]
    assert not torch.equal(trained["index"], loader_batch()["index"])
    torch.testing.assert_close(out["weights"], trained["weight"])  # no strategy multiplies them again
    per_sample = F.cross_entropy(out["logits"], trained["y"], reduction="none")
    torch.testing.assert_close(out["per_sample"], per_sample)
    torch.testing.assert_close(out["loss"], (trained["weight"] * per_sample).sum() / 6)  # Σ w l / b, once
    assert not torch.allclose(trained["weight"], torch.ones(6))


def test_below_the_threshold_the_step_trains_on_the_loaders_batch_with_weight_one():
    s, module = strategy(score="upper_bound", tau_th=50.0, switch="step"), Module()
    batch = loader_batch()
    out = step(s, module, batch)
    for k in ("x", "y", "index", "y_clean"):
        assert torch.equal(out["batch"][k], batch[k])
    assert torch.equal(out["batch"]["weight"], torch.ones(6))
    assert s.tau_bar.item() > 0  # τ̄ still follows the candidates' scores


def test_the_switch_follows_tau_bar_without_reading_the_device():
    s, module = strategy(score="upper_bound", tau_th=0.9, a_tau=0.5, switch="step"), Module()  # τ ≈ 1 untrained
    batch, active = loader_batch(), []
    with no_host_sync():
        for _ in range(8):
            before = s.tau_bar.clone()
            trained = s.on_batch(batch, module)
            active.append((before, trained["index"]))
    flags = [(before > 0.9).item() for before, _ in active]
    assert flags[0] is False and flags[-1] is True  # τ̄ starts at 0 and rises above 0.9
    for flag, (_, index) in zip(flags, active):
        assert torch.equal(index, batch["index"]) != flag
    means = {}
    module.epoch_means.flush(lambda k, v, **kw: means.update({k: float(v)}), torch.device("cpu"))
    assert means["presample/active"] == pytest.approx(sum(flags) / 8)


def test_the_sampling_stream_is_seeded_by_epoch_and_step():
    picks = []
    for _ in range(2):
        s, module = strategy(score="loss", tau_th=0.0, switch="step"), Module()
        s.tau_bar = torch.tensor(5.0)
        picks.append([s.on_batch(loader_batch(), module)["index"] for _ in range(3)])
    assert all(torch.equal(a, b) for a, b in zip(*picks))  # the same draws (and candidates) again
    assert not torch.equal(picks[0][0], picks[0][1])


class CountingModule(Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


def start_epoch(s: Presample, module: Module) -> None:
    s.on_train_epoch_start(module.trainer, module)


@pytest.mark.parametrize("score", ["loss", "upper_bound"])
def test_an_off_epoch_trains_the_loaders_batch_and_takes_tau_from_its_training_logits(score):
    s, module = strategy(score=score, a_tau=0.5), CountingModule()
    start_epoch(s, module)  # τ̄ = 0 <= τ_th: off
    batch = loader_batch()
    with no_host_sync():
        out = step(s, module, batch)
    assert out["batch"] is batch and module.calls == 1  # no candidates drawn, no scoring forward
    assert torch.equal(out["weights"], torch.ones(6))
    want = logit_scores(out["logits"][:, :3], batch["y"], score)
    want = 0.5 * variance_reduction(want / want.sum())
    torch.testing.assert_close(s.tau_bar, want)
    means = {}
    module.epoch_means.flush(lambda k, v, **kw: means.update({k: float(v)}), torch.device("cpu"))
    assert means["presample/active"] == 0.0 and means["presample/tau"] == pytest.approx(float(want))


@pytest.mark.parametrize("score", ["last_layer", "exact"])
def test_an_off_epoch_scores_the_trained_batch_itself_for_layer_scores(score):
    s, module = strategy(score=score, a_tau=0.5), Module()
    start_epoch(s, module)
    batch = loader_batch()
    scores = strategy(score=score).scores(batch["x"], batch["y"], module)  # before the step updates BatchNorm
    out = step(s, module, batch)
    assert out["batch"] is batch
    torch.testing.assert_close(s.tau_bar, 0.5 * variance_reduction(scores / scores.sum()))


def test_the_epoch_switch_is_read_at_the_epoch_start_and_holds_for_the_epoch():
    s, module = strategy(score="loss", tau_th=1.2, a_tau=0.0), Module()
    s.tau_bar = torch.tensor(1.5)
    start_epoch(s, module)  # on for this epoch, whatever τ̄ does during it
    batch = loader_batch()
    for _ in range(3):
        with no_host_sync():
            out = step(s, module, batch)
        assert not torch.equal(out["batch"]["index"], batch["index"])  # presampled
        assert not torch.allclose(out["weights"], torch.ones(6))
        s.tau_bar = torch.tensor(1.0)  # below τ_th now: still on until the next epoch starts
    start_epoch(s, module)
    assert step(s, module, batch)["batch"] is batch


# ---- parameters and method files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("entry, key", [
    ("{name: presample, score: gnorm}", "score"),
    ("{name: presample, presample: 1}", "presample"),
    ("{name: presample, presample: .nan}", "presample"),
    ("{name: presample, smooth: -0.1}", "smooth"),
    ("{name: presample, tau_th: -1}", "tau_th"),
    ("{name: presample, a_tau: 1.0}", "a_tau"),
    ("{name: presample, a_tau: true}", "a_tau"),
    ("{name: presample, switch: batch}", "switch"),
])
def test_bad_parameters_are_refused(entry, key):
    assert_bad_strategy_parameter(entry, key)


def test_default_threshold_is_eq_29():
    assert Presample().tau_threshold(64) == 2.0  # (3b + 3b) / (3b)
    assert Presample(Presample.Params(presample=6.0)).tau_threshold(64) == 3.0
    assert Presample(Presample.Params(tau_th=1.5)).tau_threshold(64) == 1.5


def test_default_threshold_counts_the_candidates_actually_drawn():
    """Official `ImportanceTraining.sampler`: B = int(presample * batch_size), tau_th = (B + 3b) / (3b). With presample
    2.5 and b = 5, B = int(12.5) = 12 and tau_th = 27 / 15 = 1.8, where (presample + 3) / 3 = 11 / 6 = 1.8333..."""
    assert threshold(12, 5) == 1.8
    s = strategy(presample=2.5)
    assert s.tau_threshold(5) == 1.8
    assert s.tau_threshold(4) == 1.8333333333333333  # B = 10 of b = 4: (10 + 12) / 12, whole here
    assert Presample(Presample.Params(presample=2.2)).tau_threshold(7) == 1.7142857142857142  # B = 15: 36 / 21


def test_tau_bar_between_eq_29_and_the_rounded_free_formula_turns_sampling_on():
    """presample 2.5, b = 5: τ_th = 1.8 (B = 12 drawn); τ̄ = 1.82 is above it but below (2.5 + 3) / 3 = 1.8333."""
    # the epoch switch turns on (it would stay off at (presample + 3) / 3) ...
    s, module = strategy(presample=2.5, score="loss"), Module()
    s.dm.data_cfg.batch_size = 5
    s.tau_bar = torch.tensor(1.82)
    start_epoch(s, module)
    batch = loader_batch(5)
    out = step(s, module, batch)
    assert s.dm.drawn == [12] and not torch.equal(out["batch"]["index"], batch["index"])
    # ... and so does the step switch, which draws the same B = 12 and compares τ̄ before the step with 1.8
    s, module = strategy(presample=2.5, score="loss", switch="step", a_tau=0.99), Module()
    s.tau_bar = torch.tensor(1.82)
    with no_host_sync():
        trained = s.on_batch(batch, module)
    assert s.dm.drawn == [12] and not torch.equal(trained["index"], batch["index"])
    s.tau_bar = torch.tensor(1.79)
    with no_host_sync():
        trained = s.on_batch(batch, module)
    assert torch.equal(trained["index"], batch["index"]) and torch.equal(trained["weight"], torch.ones(5))


@pytest.mark.parametrize("name, score", [("presample_upper_bound", "upper_bound"), ("presample_loss", "loss"),
                                         ("presample_last_layer", "last_layer"), ("presample_exact", "exact")])
def test_method_files_set_every_parameter_at_its_default(name, score):
    data = yaml.safe_load((CONFIGS / "methods" / f"{name}.yaml").read_text())
    assert data["method"] == name
    (entry,) = data["strategies"]
    assert entry.pop("name") == "presample"
    defaults = Presample.Params(score=score)
    assert entry == {k: getattr(defaults, k) for k in entry} and set(entry) == set(vars(defaults))
    load_config(SMOKE, [], includes=[CONFIGS / "methods" / f"{name}.yaml"])


# ---- short fits ------------------------------------------------------------------------------------------------------


def test_switched_off_it_trains_exactly_like_plain_training(tmp_path):
    plain = fit(smoke(tmp_path / "plain", "trainer.epochs=1"), quiet=True)
    off = fit(smoke(tmp_path / "off", "trainer.epochs=1", "strategies=[{name: presample, tau_th: 1000.0}]"),
              quiet=True)
    assert off["status"] == "completed", off.get("error")
    presampled = comparable_rows(off["run_dir"])
    assert float(presampled[0]["presample/active"]) == 0.0 and float(presampled[0]["presample/tau"]) > 0
    drop = lambda r: {k: v for k, v in r.items() if not k.startswith("presample/")}  # noqa: E731
    assert [drop(r) for r in presampled] == comparable_rows(plain["run_dir"])


def test_resumes_exactly_while_sampling(tmp_path, guarded_step):  # the step makes no host sync either
    over = ["strategies=[{name: presample, score: loss, tau_th: 0.0, smooth: 0.1, switch: step}]", "trainer.epochs=2"]
    straight, _ = assert_resumes_exactly(tmp_path, over, stop_epoch=1)
    active = [float(r["presample/active"]) for r in rows(straight["run_dir"])]
    assert active[0] == pytest.approx(28 / 29) and active[1] == 1.0  # on from the second step (τ̄ > 0)


def test_the_epoch_switch_resumes_exactly(tmp_path, guarded_step):
    over = ["strategies=[{name: presample, score: upper_bound, tau_th: 0.0}]", "trainer.epochs=3"]
    straight, _ = assert_resumes_exactly(tmp_path, over, stop_epoch=2)
    active = [float(r["presample/active"]) for r in rows(straight["run_dir"])]
    assert active == [0.0, 1.0, 1.0]  # off while τ̄ = 0 at the first epoch's start, then on
