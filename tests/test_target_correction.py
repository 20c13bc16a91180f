"""The target-correction family (bootstrapping, label smoothing, ProSelfLC, ELR) against their formulas on
hand-computed cases, their limits, parameter validation, and one short real fit each (ELR's formulas, memorisation
and resume: test_elr.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml

from robustlearn.config import load_config
from robustlearn.errors import ConfigError
from robustlearn.schedules import training_progress
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.noisy.bootstrap import BootstrapHard, BootstrapSoft
from robustlearn.strategies.noisy.elr import ELR
from robustlearn.strategies.noisy.label_smoothing import LabelSmoothing
from robustlearn.strategies.noisy.proselflc import ProSelfLC
from tests.conftest import CONFIGS, SMOKE
from tests.protocol_helpers import assert_bad_strategy_parameter, fit_method, rows

# softmax([0, ln 3]) = [0.25, 0.75] in both rows; row 0 is labelled 1, row 1 is labelled 0.
LOGITS = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
BATCH = {"y": torch.tensor([1, 0])}
LN4, LN43 = math.log(4.0), math.log(4.0 / 3.0)  # -log 0.25, -log 0.75

# softmax(log [1, 2, 5]) = [1/8, 2/8, 5/8]; row 0 is labelled 2, row 1 is labelled 0.
LOGITS3 = torch.tensor([[0.0, math.log(2.0), math.log(5.0)]] * 2)
BATCH3 = {"y": torch.tensor([2, 0])}
NLL3 = [math.log(8.0), math.log(4.0), math.log(8.0 / 5.0)]  # -log p_k

# Extreme logits: saturated on the label, and saturated on another class.
EXTREME = torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, -50.0]])
EXTREME_BATCH = {"y": torch.tensor([0, 2])}


def expected(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def ce(logits, batch):
    return F.cross_entropy(logits, batch["y"], reduction="none")


# ---- bootstrapping --------------------------------------------------------------------------------------------------


def test_soft_bootstrap_formula():
    loss = BootstrapSoft(BootstrapSoft.Params(beta=0.6)).loss(LOGITS, BATCH)
    # target = 0.6 q + 0.4 p: row 0 [0.1, 0.9], row 1 [0.7, 0.3]; loss = -sum_k t_k log p_k
    row0 = 0.1 * LN4 + 0.9 * LN43
    row1 = 0.7 * LN4 + 0.3 * LN43
    torch.testing.assert_close(loss, expected([row0, row1]))
    assert loss[0].item() == pytest.approx(0.397543, abs=1e-6)
    default = BootstrapSoft().loss(LOGITS, BATCH)  # beta 0.95: target 0.95 q + 0.05 p
    torch.testing.assert_close(default, expected([0.0125 * LN4 + 0.9875 * LN43, 0.9625 * LN4 + 0.0375 * LN43]))


def test_soft_bootstrap_keeps_the_gradient_through_the_prediction():
    # beta CE + (1 - beta) H(p): the paper's entropy-minimisation reading, true only if p in the target is not detached
    logits = LOGITS3.clone().requires_grad_(True)
    BootstrapSoft(BootstrapSoft.Params(beta=0.6)).loss(logits, BATCH3).sum().backward()
    reference = LOGITS3.clone().requires_grad_(True)
    log_p = torch.log_softmax(reference, 1)
    entropy = -(log_p.exp() * log_p).sum(1)
    (0.6 * F.nll_loss(log_p, BATCH3["y"], reduction="none") + 0.4 * entropy).sum().backward()
    torch.testing.assert_close(logits.grad, reference.grad)
    detached = LOGITS3.clone().requires_grad_(True)  # and it differs from the detached variant
    target = 0.6 * F.one_hot(BATCH3["y"], 3) + 0.4 * torch.softmax(LOGITS3, 1)
    (-(target * torch.log_softmax(detached, 1)).sum(1)).sum().backward()
    assert (logits.grad - detached.grad).abs().max().item() > 1e-2


def test_hard_bootstrap_formula():
    loss = BootstrapHard(BootstrapHard.Params(beta=0.6)).loss(LOGITS, BATCH)
    # argmax p = 1 in both rows: -0.6 log p_y - 0.4 log p_1
    torch.testing.assert_close(loss, expected([LN43, 0.6 * LN4 + 0.4 * LN43]))
    assert loss[1].item() == pytest.approx(0.946849, abs=1e-6)
    default = BootstrapHard().loss(LOGITS3, BATCH3)  # beta 0.8; argmax = class 2 in both rows
    torch.testing.assert_close(default, expected([NLL3[2], 0.8 * NLL3[0] + 0.2 * NLL3[2]]))


@pytest.mark.parametrize("cls", [BootstrapSoft, BootstrapHard])
def test_bootstrap_with_beta_one_is_cross_entropy(cls):
    strategy = cls(cls.Params(beta=1.0))
    for logits, batch in ((LOGITS, BATCH), (LOGITS3, BATCH3)):
        torch.testing.assert_close(strategy.loss(logits, batch), ce(logits, batch))
        a, b = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
        strategy.loss(a, batch).sum().backward()
        ce(b, batch).sum().backward()
        torch.testing.assert_close(a.grad, b.grad)


def test_bootstrap_with_beta_zero_ignores_the_label():
    soft = BootstrapSoft(BootstrapSoft.Params(beta=0.0)).loss(LOGITS, BATCH)
    entropy = 0.25 * LN4 + 0.75 * LN43
    torch.testing.assert_close(soft, expected([entropy, entropy]))
    hard = BootstrapHard(BootstrapHard.Params(beta=0.0)).loss(LOGITS, BATCH)
    torch.testing.assert_close(hard, expected([LN43, LN43]))


# ---- label smoothing ------------------------------------------------------------------------------------------------


def test_label_smoothing_formula():
    loss = LabelSmoothing(LabelSmoothing.Params(smoothing=0.3)).loss(LOGITS3, BATCH3)
    # target = 0.7 q + 0.3 / 3: 0.8 on the label, 0.1 elsewhere
    row0 = 0.1 * NLL3[0] + 0.1 * NLL3[1] + 0.8 * NLL3[2]
    row1 = 0.8 * NLL3[0] + 0.1 * NLL3[1] + 0.1 * NLL3[2]
    torch.testing.assert_close(loss, expected([row0, row1]))
    assert loss[0].item() == pytest.approx(0.722576, abs=1e-6)
    default = LabelSmoothing().loss(LOGITS, BATCH)  # a = 0.1, K = 2: 0.95 on the label, 0.05 elsewhere
    torch.testing.assert_close(default, expected([0.05 * LN4 + 0.95 * LN43, 0.95 * LN4 + 0.05 * LN43]))


def test_negative_label_smoothing_formula():
    loss = LabelSmoothing(LabelSmoothing.Params(smoothing=-0.6)).loss(LOGITS3, BATCH3)
    # target = 1.6 q - 0.6 / 3: 1.4 on the label, -0.2 elsewhere; the loss can be negative
    row0 = -0.2 * NLL3[0] - 0.2 * NLL3[1] + 1.4 * NLL3[2]
    row1 = 1.4 * NLL3[0] - 0.2 * NLL3[1] - 0.2 * NLL3[2]
    torch.testing.assert_close(loss, expected([row0, row1]))
    assert loss[0].item() == pytest.approx(-0.035142, abs=1e-6)
    edge = LabelSmoothing(LabelSmoothing.Params(smoothing=-1.0)).loss(LOGITS, BATCH)  # 1.5 on the label, -0.5 else
    torch.testing.assert_close(edge, expected([-0.5 * LN4 + 1.5 * LN43, 1.5 * LN4 - 0.5 * LN43]))


def test_label_smoothing_zero_is_cross_entropy():
    strategy = LabelSmoothing(LabelSmoothing.Params(smoothing=0.0))
    for logits, batch in ((LOGITS, BATCH), (LOGITS3, BATCH3)):
        torch.testing.assert_close(strategy.loss(logits, batch), ce(logits, batch))


def test_label_smoothing_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits, y = 3.0 * torch.randn(16, 5, generator=g), torch.randint(0, 5, (16,), generator=g)
    ours = LabelSmoothing(LabelSmoothing.Params(smoothing=0.25)).loss(logits, {"y": y})
    torch.testing.assert_close(ours, F.cross_entropy(logits, y, reduction="none", label_smoothing=0.25))


# ---- ProSelfLC ------------------------------------------------------------------------------------------------------

# p = [0.1, 0.9]: a confident prediction of class 1, labelled 0 (disagreeing) and 1 (agreeing)
CONFIDENT = torch.tensor([[0.0, math.log(9.0)], [0.0, math.log(9.0)]])
CONFIDENT_BATCH = {"y": torch.tensor([0, 1])}


def hand_epsilon(p, progress, b=16.0, r=0.5):
    g = 1.0 / (1.0 + math.exp(-b * (progress - r)))
    entropy = -sum(x * math.log(x) for x in p)
    return g * (1.0 - entropy / math.log(len(p)))


def fake_module(epoch, epochs, step, steps, logged=None):
    """Just what `training_progress` and `log_metric` read: progress (epoch + (step + 1) / steps) / epochs."""
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=step))
    trainer = SimpleNamespace(current_epoch=epoch, max_epochs=epochs, num_training_batches=steps, fit_loop=loop)
    logged = [] if logged is None else logged
    return SimpleNamespace(trainer=trainer, log=lambda key, value, **kw: logged.append((key, value)))


def test_proselflc_epsilon_matches_the_formula():
    s = ProSelfLC()
    # by hand for p = [0.1, 0.9], t = 0.75: g = 1 / (1 + e^-4) = 0.982014, H = 0.325083, 1 - H / ln 2 = 0.531004
    assert hand_epsilon([0.1, 0.9], 0.75) == pytest.approx(0.521453, abs=1e-6)
    torch.testing.assert_close(s.epsilon(CONFIDENT, 0.75), expected([0.521453, 0.521453]), rtol=0, atol=1e-6)
    assert s.global_trust(0.75) == pytest.approx(1.0 / (1.0 + math.exp(-4.0)))
    # a uniform prediction gets no trust; three classes, another ramp
    torch.testing.assert_close(s.epsilon(torch.zeros(2, 4), 0.9), torch.zeros(2), rtol=0, atol=1e-6)
    other = ProSelfLC(ProSelfLC.Params(B=6.0, transit_ratio=0.3))
    value = hand_epsilon([1 / 8, 2 / 8, 5 / 8], 0.2, b=6.0, r=0.3)
    torch.testing.assert_close(other.epsilon(LOGITS3, 0.2), expected([value, value]))


def test_proselflc_loss_after_warmup_at_a_stubbed_progress():
    s = ProSelfLC(ProSelfLC.Params(warmup_epochs=1))
    logged = []
    module = fake_module(epoch=2, epochs=4, step=4, steps=10, logged=logged)  # t = (2 + 5/10) / 4 = 0.625
    loss = s.loss(CONFIDENT, CONFIDENT_BATCH, module)
    eps = hand_epsilon([0.1, 0.9], 0.625)
    # target (1 - eps) q + eps p: row 0 [1 - 0.9 eps, 0.9 eps], row 1 [0.1 eps, 1 - 0.1 eps]
    ln10, ln109 = math.log(10.0), math.log(10.0 / 9.0)
    row0 = (1 - 0.9 * eps) * ln10 + 0.9 * eps * ln109
    row1 = 0.1 * eps * ln10 + (1 - 0.1 * eps) * ln109
    torch.testing.assert_close(loss, expected([row0, row1]))
    assert row0 < ce(CONFIDENT, CONFIDENT_BATCH)[0].item() - 0.5  # the disagreeing label counts much less
    torch.testing.assert_close(s.loss_at(CONFIDENT, CONFIDENT_BATCH["y"], 0.625, 2), loss)
    assert dict(logged)["proselflc/global_trust"] == pytest.approx(1.0 / (1.0 + math.exp(-16 * 0.125)))
    assert dict(logged)["proselflc/epsilon"].item() == pytest.approx(eps, abs=1e-6)


def test_proselflc_during_warmup_is_cross_entropy():
    s = ProSelfLC(ProSelfLC.Params(warmup_epochs=2))
    late_in_warmup = fake_module(epoch=1, epochs=3, step=9, steps=10, logged=[])  # t = 2/3: eps would be ~0.5
    assert s.epsilon(CONFIDENT, 2 / 3).min().item() > 0.4
    for logits, batch in ((CONFIDENT, CONFIDENT_BATCH), (LOGITS3, BATCH3)):
        torch.testing.assert_close(s.loss(logits, batch, late_in_warmup), ce(logits, batch))
        torch.testing.assert_close(s.loss_at(logits, batch["y"], 2 / 3, 1), ce(logits, batch))
    after = s.loss(CONFIDENT, CONFIDENT_BATCH, fake_module(epoch=2, epochs=3, step=0, steps=10))
    assert (after - ce(CONFIDENT, CONFIDENT_BATCH)).abs().max().item() > 0.1


def test_proselflc_gradient_of_the_official_objective():
    # The official code detaches eps only: d/dz of -sum_k ((1 - eps) q_k + eps p_k) log p_k is
    # p - q~ - eps * p * (log p + H(p)), the extra term being eps times the gradient of the entropy H(p).
    s = ProSelfLC()
    assert s.params.target_grad
    z = LOGITS3.double()
    logits = LOGITS3.clone().requires_grad_(True)
    s.loss_at(logits, BATCH3["y"], 0.8, 5).sum().backward()
    p = torch.softmax(z, 1)
    log_p = torch.log_softmax(z, 1)
    entropy = -(p * log_p).sum(1, keepdim=True)
    eps = s.epsilon(LOGITS3, 0.8)[:, None].double()
    target = (1 - eps) * F.one_hot(BATCH3["y"], 3).double() + eps * p
    official = p - target - eps * p * (log_p + entropy)
    torch.testing.assert_close(logits.grad.double(), official, rtol=1e-5, atol=1e-6)
    assert (official - (p - target)).abs().max().item() > 1e-3  # the two objectives differ here


def test_proselflc_gradient_treats_the_target_as_constant():
    s = ProSelfLC(ProSelfLC.Params(target_grad=False))
    logits = LOGITS3.clone().requires_grad_(True)
    s.loss_at(logits, BATCH3["y"], 0.8, 5).sum().backward()
    p = torch.softmax(LOGITS3, 1)
    eps = s.epsilon(LOGITS3, 0.8)[:, None]
    target = (1 - eps) * F.one_hot(BATCH3["y"], 3) + eps * p
    torch.testing.assert_close(logits.grad, p - target)  # d/dz of -sum t log softmax(z) with t fixed, sum t = 1


def test_proselflc_early_in_training_is_almost_cross_entropy():
    # g(0) = sigmoid(-8) = 3.4e-4 with the defaults: the official code's start, without a warm-up
    loss = ProSelfLC().loss(CONFIDENT, CONFIDENT_BATCH)  # no module: progress 0, epoch 0
    torch.testing.assert_close(loss, ce(CONFIDENT, CONFIDENT_BATCH), rtol=0, atol=2e-3)


# ---- ELR is a penalty --------------------------------------------------------------------------------------------


def test_elr_is_a_penalty_not_a_loss():
    assert not ELR.provides_loss and ELR.state_attrs == ("targets",)
    assert all(cls.provides_loss for cls in (BootstrapSoft, BootstrapHard, LabelSmoothing, ProSelfLC))
    cfg = load_config(SMOKE, ["strategies=[{name: bootstrap_hard}, {name: elr}]"])  # composes with any loss
    assert [s.name for s in cfg.strategies] == ["bootstrap_hard", "elr"]
    with pytest.raises(ConfigError, match="both provide the training loss"):
        load_config(SMOKE, ["strategies=[{name: label_smoothing}, {name: proselflc}]"])


# ---- half precision and extreme logits ------------------------------------------------------------------------------

LOSSES = [BootstrapSoft(), BootstrapHard(), LabelSmoothing(), LabelSmoothing(LabelSmoothing.Params(smoothing=-1.0)),
          ProSelfLC()]


@pytest.mark.parametrize("strategy", LOSSES, ids=lambda s: f"{s.name}-{s.describe()}")
def test_losses_are_float32_and_finite_at_extreme_logits(strategy):
    assert strategy.loss(LOGITS3.to(torch.bfloat16), BATCH3).dtype == torch.float32
    torch.testing.assert_close(strategy.loss(LOGITS3.to(torch.bfloat16), BATCH3), strategy.loss(LOGITS3, BATCH3),
                               rtol=2e-2, atol=2e-2)
    logits = EXTREME.clone().requires_grad_(True)
    loss = strategy.loss(logits, EXTREME_BATCH)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


# ---- parameters -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy,key",
    [
        ("{name: bootstrap_soft, beta: -0.1}", "beta"),
        ("{name: bootstrap_soft, beta: 1.5}", "beta"),
        ("{name: bootstrap_soft, beta: .nan}", "beta"),
        ("{name: bootstrap_soft, beta: soft}", "beta"),
        ("{name: bootstrap_hard, beta: 2}", "beta"),
        ("{name: bootstrap_hard, beta: -.inf}", "beta"),
        ("{name: bootstrap_hard, alpha: 0.5}", "alpha"),
        ("{name: label_smoothing, smoothing: 1}", "smoothing"),
        ("{name: label_smoothing, smoothing: 1.5}", "smoothing"),
        ("{name: label_smoothing, smoothing: -1.01}", "smoothing"),
        ("{name: label_smoothing, smoothing: -8}", "smoothing"),
        ("{name: label_smoothing, smoothing: .nan}", "smoothing"),
        ("{name: label_smoothing, smoothing: [0.1]}", "smoothing"),
        ("{name: label_smoothing, epsilon: 0.1}", "epsilon"),
        ("{name: proselflc, B: -1}", "B"),
        ("{name: proselflc, B: 501}", "B"),
        ("{name: proselflc, B: .inf}", "B"),
        ("{name: proselflc, transit_ratio: -0.1}", "transit_ratio"),
        ("{name: proselflc, transit_ratio: 1.5}", "transit_ratio"),
        ("{name: proselflc, transit_ratio: .nan}", "transit_ratio"),
        ("{name: proselflc, warmup_epochs: -1}", "warmup_epochs"),
        ("{name: proselflc, target_grad: 1}", "target_grad"),
        ("{name: proselflc, warmup_epochs: 1.5}", "warmup_epochs"),
        ("{name: proselflc, warmup_epochs: true}", "warmup_epochs"),
        ("{name: proselflc, b: 16}", "b"),
        ("{name: elr, lam: 0}", "lam"),
        ("{name: elr, lam: -3}", "lam"),
        ("{name: elr, lam: .inf}", "lam"),
        ("{name: elr, beta: 1}", "beta"),
        ("{name: elr, beta: -0.1}", "beta"),
        ("{name: elr, beta: .nan}", "beta"),
        ("{name: elr, beta: high}", "beta"),
        ("{name: elr, lambda: 3}", "lambda"),
    ],
)
def test_bad_parameters_name_the_key(strategy, key):
    assert_bad_strategy_parameter(strategy, key)


def test_edge_values_are_accepted():
    edges = ["{name: bootstrap_soft, beta: 0}", "{name: bootstrap_hard, beta: 1}",
             "{name: label_smoothing, smoothing: -1}", "{name: label_smoothing, smoothing: 0.99}",
             "{name: proselflc, B: 0, transit_ratio: 1, warmup_epochs: 1}", "{name: elr, beta: 0, lam: 0.01}"]
    for entry in edges:
        assert len(load_config(SMOKE, [f"strategies=[{entry}]"]).strategies) == 1


@pytest.mark.parametrize(
    "params,key",
    [(lambda: BootstrapSoft.Params(beta=True), "beta"), (lambda: LabelSmoothing.Params(smoothing="0.1"), "smoothing"),
     (lambda: ProSelfLC.Params(warmup_epochs=2.0), "warmup_epochs"), (lambda: ELR.Params(lam=float("nan")), "lam")],
)
def test_params_check_themselves_when_built_in_code(params, key):
    with pytest.raises(ConfigError) as err:
        params()
    assert err.value.key == key


def test_proselflc_warmup_must_leave_epochs():
    for over in (["strategies=[{name: proselflc, warmup_epochs: 2}]"],  # the smoke config trains 2 epochs
                 ["strategies=[{name: proselflc, warmup_epochs: 5}]", "trainer.epochs=4"]):
        with pytest.raises(ConfigError, match="is not below trainer.epochs") as err:
            load_config(SMOKE, over)
        assert err.value.key == "strategies[0].warmup_epochs"
    cfg = load_config(SMOKE, ["strategies=[{name: elr}, {name: proselflc, warmup_epochs: 3}]", "trainer.epochs=4"])
    assert cfg.strategies[1].warmup_epochs == 3
    with pytest.raises(ConfigError) as err:  # a trainer built by hand is checked at set-up
        ProSelfLC(ProSelfLC.Params(warmup_epochs=3), position=1).setup(SimpleNamespace(max_epochs=3), None, "fit")
    assert err.value.key == "strategies[1].warmup_epochs"


# ---- the method files, a real fit each, resume ----------------------------------------------------------------------

DEFAULTS = {
    "bootstrap_soft": {"beta": 0.95},
    "bootstrap_hard": {"beta": 0.8},
    "label_smoothing": {"smoothing": 0.1},
    "proselflc": {"B": 16.0, "transit_ratio": 0.5, "warmup_epochs": 0, "target_grad": True},
    "elr": {"lam": 3.0, "beta": 0.7},
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_method_file_sets_every_parameter_at_its_default(name):
    data = yaml.safe_load((CONFIGS / "methods" / f"{name}.yaml").read_text())
    assert data["method"] == name
    assert data["strategies"] == [{"name": name, **DEFAULTS[name]}]
    cls = {"bootstrap_soft": BootstrapSoft, "bootstrap_hard": BootstrapHard, "label_smoothing": LabelSmoothing,
           "proselflc": ProSelfLC, "elr": ELR}[name]
    assert vars(cls.Params()) == DEFAULTS[name]


class StepLosses(pl.Callback):
    """The per-sample losses each step trained on, beside the run's loss strategy recomputed on that step's logits
    (ProSelfLC at the step's training progress, which `on_train_batch_end` still sees)."""

    def __init__(self):
        self.trained, self.recomputed, self.ce = [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        logits, b = outputs["logits"], outputs["batch"]
        self.trained.append(outputs["per_sample"])
        self.ce.append(F.cross_entropy(logits.float(), b["y"], reduction="none"))
        for s in (cb for cb in trainer.callbacks if isinstance(cb, Strategy) and cb.provides_loss):
            if isinstance(s, ProSelfLC):
                self.recomputed.append(s.loss_at(logits, b["y"], training_progress(trainer), trainer.current_epoch))
            else:
                self.recomputed.append(s.loss(logits, b))


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_one_epoch_fit_completes(name, tmp_path):
    steps = StepLosses()
    cfg, result = fit_method(name, tmp_path, "trainer.epochs=1", callbacks=[steps])
    assert [s.name for s in cfg.strategies] == [name]
    assert result["status"] == "completed", result.get("error")
    assert result["strategies"] == [name] and result["method"] == name
    last = rows(result["run_dir"])[-1]
    trained, ce_loss = torch.cat(steps.trained), torch.cat(steps.ce)
    assert len(trained) == 1800 and torch.isfinite(trained).all()
    if name == "elr":  # cross-entropy plus the penalty
        torch.testing.assert_close(trained, ce_loss)
        assert float(last["elr/penalty"]) < 0
        assert float(last["train/loss"]) == pytest.approx(float(last["train/loss_main"]) + float(last["elr/penalty"]),
                                                          rel=1e-5)
        return
    if name == "proselflc":  # the whole ramp within one epoch: g(t) averages 1/2, eps below it
        assert float(last["proselflc/global_trust"]) == pytest.approx(0.5, abs=0.05)
        assert 0.01 < float(last["proselflc/epsilon"]) < float(last["proselflc/global_trust"])
    torch.testing.assert_close(trained, torch.cat(steps.recomputed))
    assert (trained - ce_loss).abs().max().item() > 1e-3
