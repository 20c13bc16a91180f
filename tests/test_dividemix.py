"""DivideMix: the MixMatch pieces against their formulas on hand-computed cases, the mixture split on two groups of
losses, the co-divide wiring of a step, bad parameters, exact resume (peer and probabilities included), evaluation on
the mean of both networks, and a short run on the synthetic smoke config without a host sync in the step."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import robustlearn.strategies.noisy.dividemix as dividemix_module
from robustlearn.config import load_config
from robustlearn.epoch_means import EpochMeans
from robustlearn.errors import ConfigError
from robustlearn.module import RobustClassifier
from robustlearn.runner import fit
from robustlearn.strategies.noisy.dividemix import DivideMix, clean_probability
from robustlearn.strategies.noisy.mixmatch import (
    guess_labels,
    labelled_rows,
    mixup,
    negative_entropy,
    prior_penalty,
    refine_labels,
    semi_supervised_loss,
    sharpen,
    unlabelled_rows,
)
from tests.conftest import CONFIGS, SMOKE
from tests.protocol_helpers import Recorder, assert_bad_strategy_parameter, assert_resumes_exactly, rows
from tests.sync_guard import _WatchStrategies, no_host_sync
from tests.test_owned_network import _assert_same

D64 = torch.float64
SMALL = ["data.n_train=600"]  # 540 training samples, 8 steps per epoch: keeps the fits to about a second each
DM = "strategies=[{name: dividemix, warmup_epochs: 1, rampup_epochs: 1}]"


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=D64)


# ---- the MixMatch pieces --------------------------------------------------------------------------------------------

def test_sharpen_formula():
    # [0.2, 0.8]^(1/0.5) = [0.04, 0.64], / 0.68
    torch.testing.assert_close(sharpen(t64([[0.2, 0.8]]), 0.5), t64([[1 / 17, 16 / 17]]))
    torch.testing.assert_close(sharpen(t64([[0.2, 0.3, 0.5]]), 1.0), t64([[0.2, 0.3, 0.5]]))  # T = 1: unchanged
    hot = sharpen(t64([[0.3, 0.7]]), 0.05)  # T -> 0: one-hot
    assert hot[0, 1].item() > 1 - 1e-7


def test_label_co_refinement_formula():
    # w y + (1 - w) p̄ = 0.7 [0, 1, 0] + 0.3 [0.5, 0.3, 0.2] = [0.15, 0.79, 0.06]; squared / sum at T = 0.5
    refined = refine_labels(F.one_hot(torch.tensor([1]), 3), t64([0.7]), t64([[0.5, 0.3, 0.2]]), 0.5)
    torch.testing.assert_close(refined, t64([[0.0225, 0.6241, 0.0036]]) / 0.6502)
    # w = 1 keeps the label, w = 0 is the sharpened prediction
    y, p = F.one_hot(torch.tensor([0, 2]), 3), t64([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    torch.testing.assert_close(refine_labels(y, t64([1.0, 1.0]), p, 0.5), y.to(D64))
    torch.testing.assert_close(refine_labels(y, t64([0.0, 0.0]), p, 0.5), sharpen(p, 0.5))


def test_label_co_guessing_formula():
    # the mean of [0.6, 0.4], [0.4, 0.6], [0.8, 0.2], [0.6, 0.4] is [0.6, 0.4]; sharpened: [0.36, 0.16] / 0.52
    preds = [t64([[0.6, 0.4]]), t64([[0.4, 0.6]]), t64([[0.8, 0.2]]), t64([[0.6, 0.4]])]
    torch.testing.assert_close(guess_labels(preds, 0.5), t64([[9 / 13, 4 / 13]]))


def test_mixup_formula():
    values = torch.tensor([[1.0], [3.0], [5.0]])
    torch.testing.assert_close(mixup(values, 0.75, torch.tensor([1, 2, 0])), torch.tensor([[1.5], [3.5], [4.0]]))
    torch.testing.assert_close(mixup(values, 1.0, torch.tensor([2, 0, 1])), values)


def test_lx_formula():
    # softmax(log [0.5, 0.25, 0.25]); t = [0.2, 0.8, 0]: -(0.2 log 0.5 + 0.8 log 0.25) = 1.8 ln 2
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    expected = torch.tensor([1.8 * math.log(2)])
    torch.testing.assert_close(labelled_rows(logits, torch.tensor([[0.2, 0.8, 0.0]])), expected)


def test_lu_formula():
    # p = [0.5, 0.25, 0.25], t = [1, 0, 0]: (0.25 + 0.0625 + 0.0625) / 3 = 0.125 (the mean over the classes too)
    logits = torch.log(t64([[0.5, 0.25, 0.25], [0.1, 0.45, 0.45]]))
    targets = t64([[1.0, 0.0, 0.0], [0.1, 0.45, 0.45]])
    torch.testing.assert_close(unlabelled_rows(logits, targets), t64([0.125, 0.0]))


def test_prior_penalty_formula():
    # mean p = [0.3, 0.35, 0.35]: sum_k (1/3) log((1/3) / q̄_k) = -(1/3)(ln 0.9 + 2 ln 1.05)
    logits = torch.log(t64([[0.5, 0.25, 0.25], [0.1, 0.45, 0.45]]))
    expected = -(math.log(0.9) + 2 * math.log(1.05)) / 3
    torch.testing.assert_close(prior_penalty(logits), torch.tensor(expected, dtype=D64))
    uniform_mean = t64([[0.2, 0.5, 0.3], [2 / 3 - 0.2, 2 / 3 - 0.5, 2 / 3 - 0.3]])
    assert prior_penalty(torch.log(uniform_mean)).abs().item() < 1e-12


def test_negative_entropy_formula():
    torch.testing.assert_close(negative_entropy(t64([[0.0, 0.0], [5.0, 5.0]])), t64([-math.log(2)] * 2))


def test_semi_supervised_loss_on_a_hand_case():
    """B = 2, sample 0 labelled (w = 0.9, y = 0), sample 1 unlabelled; forward = identity (the views are logits), no
    mixing (λ' = 1): loss = Lx over the rows of sample 0 + λu Lu over those of sample 1 + the prior penalty."""
    v1 = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]))
    v2 = torch.log(torch.tensor([[0.6, 0.2, 0.2], [0.25, 0.25, 0.5]]))
    own = (torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]]), torch.tensor([[0.5, 0.4, 0.1], [0.1, 0.3, 0.6]]))
    other = (torch.tensor([[0.2, 0.2, 0.6], [0.1, 0.1, 0.8]]), torch.tensor([[0.6, 0.2, 0.2], [0.1, 0.3, 0.6]]))
    y, w, labelled = torch.tensor([0, 1]), torch.tensor([0.9, 0.2]), torch.tensor([True, False])
    per_sample, parts = semi_supervised_loss((v1, v2), own, other, y, w, labelled, lambda z: z, 1.0,
                                             torch.arange(4), 0.5, 3.0)
    # refined (sample 0): 0.9 [1, 0, 0] + 0.1 [0.6, 0.3, 0.1] = [0.96, 0.03, 0.01] -> squared / sum
    refined = torch.tensor([0.9216, 0.0009, 0.0001]) / 0.9226
    # guessed (sample 1): mean of [.3 .3 .4], [.1 .3 .6], [.1 .1 .8], [.1 .3 .6] = [0.15, 0.25, 0.6] -> squared / sum
    guessed = torch.tensor([0.0225, 0.0625, 0.36]) / 0.445
    lx = -(refined * (torch.log(torch.tensor([0.5, 0.25, 0.25])) + torch.log(torch.tensor([0.6, 0.2, 0.2])))).sum() / 2
    lu = (((torch.tensor([0.2, 0.2, 0.6]) - guessed) ** 2).mean() + ((torch.tensor([0.25, 0.25, 0.5]) - guessed) ** 2)
          .mean()) / 2
    mean_p = torch.tensor([0.5 + 0.2 + 0.6 + 0.25, 0.25 + 0.2 + 0.2 + 0.25, 0.25 + 0.6 + 0.2 + 0.5]) / 4
    prior = (torch.log(1 / (3 * mean_p)) / 3).sum()
    torch.testing.assert_close(parts["lx"], lx)
    torch.testing.assert_close(parts["lu"], lu)
    torch.testing.assert_close(parts["prior"], prior)
    torch.testing.assert_close(per_sample.mean(), lx + 3.0 * lu + prior)
    # each sample carries its own two rows, B (c_i + c_{i+B}): here 2 (Lx / 1 labelled sample + prior / 2)
    torch.testing.assert_close(per_sample, torch.stack([2 * lx + prior, 2 * 3.0 * lu + prior]))


def test_semi_supervised_loss_mixes_inputs_and_targets_alike():
    g = torch.Generator().manual_seed(0)
    views = (torch.randn(3, 4, generator=g, dtype=D64), torch.randn(3, 4, generator=g, dtype=D64))
    own = tuple(torch.softmax(torch.randn(3, 4, generator=g), 1) for _ in range(2))
    other = tuple(torch.softmax(torch.randn(3, 4, generator=g), 1) for _ in range(2))
    y, w, labelled = torch.tensor([0, 3, 1]), torch.tensor([0.8, 0.1, 0.6]), torch.tensor([True, False, True])
    seen = []
    perm = torch.tensor([5, 2, 0, 1, 3, 4])
    per_sample, _ = semi_supervised_loss(views, own, other, y, w, labelled, lambda z: seen.append(z) or z, 0.7, perm,
                                         0.5, 2.0)
    rows_in = torch.cat(views)
    torch.testing.assert_close(seen[0], 0.7 * rows_in + 0.3 * rows_in[perm])
    # rows 0-2 and 3-5 are the two views of samples 0-2, each keeping the role of its own sample
    target = torch.where(labelled[:, None], refine_labels(F.one_hot(y, 4), w, (own[0] + own[1]) / 2, 0.5),
                         guess_labels((*own, *other), 0.5))
    targets = torch.cat([target, target])
    mixed_t = 0.7 * targets + 0.3 * targets[perm]
    logits = seen[0].float()
    lab = torch.cat([labelled, labelled]).float()
    lx = (labelled_rows(logits, mixed_t) * lab).sum() / lab.sum()
    lu = (unlabelled_rows(logits, mixed_t) * (1 - lab)).sum() / (1 - lab).sum()
    torch.testing.assert_close(per_sample.mean(), lx + 2.0 * lu + prior_penalty(logits))


def test_lambda_u_ramps_linearly_after_the_warm_up():
    s = DivideMix(DivideMix.Params(warmup_epochs=10, lambda_u=25.0, rampup_epochs=16))
    assert [s.lambda_u_at(t) for t in (0.0, 10.0, 18.0, 26.0, 40.0)] == [0.0, 0.0, 12.5, 25.0, 25.0]
    step = DivideMix(DivideMix.Params(warmup_epochs=2, lambda_u=5.0, rampup_epochs=0))
    assert step.lambda_u_at(1.9) == 0.0 and step.lambda_u_at(2.0) == 5.0


# ---- the mixture ----------------------------------------------------------------------------------------------------

def test_gmm_separates_two_groups_of_losses():
    rng = np.random.default_rng(0)
    clean, noisy = rng.normal(0.3, 0.05, 800), rng.normal(2.5, 0.2, 200)
    losses = np.concatenate([clean, noisy])
    prob = clean_probability(losses, random_state=0)
    assert prob.shape == (1000,)
    assert prob[:800].min() > 0.99 and prob[800:].max() < 0.01
    assert ((prob > 0.5) == (np.arange(1000) < 800)).all()
    # min-max normalised: a shift and a scale of the losses change nothing; the smaller-mean component is found
    # whatever the component order of the fit
    for state in range(3):
        np.testing.assert_allclose(clean_probability(7.0 * losses + 3.0, random_state=state), prob, atol=1e-3)
    np.testing.assert_allclose(clean_probability(losses[::-1], random_state=0), prob[::-1], atol=1e-3)


def test_gmm_on_equal_losses_does_not_fail():
    prob = clean_probability(np.full(50, 0.7))
    assert prob.shape == (50,) and np.isfinite(prob).all()


# ---- the wiring of one step (stubs) ---------------------------------------------------------------------------------

class _StubModule(nn.Module):
    def __init__(self, k: int, trainer):
        super().__init__()
        self.net = nn.Linear(2, k)
        self.num_classes = k
        self.trainer = trainer
        self.epoch_means = EpochMeans()

    def forward(self, x):
        return self.net(x)


class _StubPeer:
    def __init__(self, k: int):
        self.net = nn.Linear(2, k)
        self.losses: list[torch.Tensor] = []

    def __call__(self, x):
        return self.net(x)

    def step(self, loss):
        loss.backward()
        self.losses.append(loss.detach())


def _stubbed(epoch: int):
    torch.manual_seed(0)
    k, n = 3, 6
    trainer = SimpleNamespace(current_epoch=epoch, global_rank=0, num_training_batches=4,
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=1)))
    module, peer = _StubModule(k, trainer), _StubPeer(k)
    x = torch.randn(n, 2)
    s = DivideMix(DivideMix.Params(warmup_epochs=2, lambda_u=10.0, rampup_epochs=4))
    s.dm = SimpleNamespace(cfg=SimpleNamespace(seed=0), train_tensors=lambda: {"x": x}, augment=lambda v, g: v + 0.5)
    s.peer = peer
    s.prob_main.values = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    s.prob_peer.values = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.6, 0.95])
    index = torch.tensor([4, 1, 2])
    batch = {"x": x[index], "y": torch.tensor([0, 2, 1]), "index": index}
    return s, module, peer, batch


def test_warm_up_is_cross_entropy_on_both_networks():
    s, module, peer, batch = _stubbed(epoch=1)
    logits = module(batch["x"])
    loss = s.loss(logits, batch, module)
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch["y"], reduction="none"))
    torch.testing.assert_close(peer.losses[0], F.cross_entropy(peer.net(batch["x"]), batch["y"]))
    s.params.warmup_penalty = True  # plus Σ p log p on each
    logits = module(batch["x"])
    p = torch.softmax(logits, 1)
    torch.testing.assert_close(s.loss(logits, batch, module),
                               F.cross_entropy(logits, batch["y"], reduction="none") + (p * p.log()).sum(1))


def test_step_co_divides_and_steps_the_peer(monkeypatch):
    s, module, peer, batch = _stubbed(epoch=2)
    calls = []

    def recording(views, own, other, y, w, labelled, *rest):
        calls.append({"views": views, "own": own, "other": other, "w": w, "labelled": labelled, "lambda_u": rest[-1]})
        out = semi_supervised_loss(views, own, other, y, w, labelled, *rest)
        calls[-1]["per_sample"] = out[0]
        return out

    monkeypatch.setattr(dividemix_module, "semi_supervised_loss", recording)
    x = batch["x"]
    logits = module(x)
    loss = s.loss(logits, batch, module)
    main, other = calls
    # net 1 (the module's) learns from the peer's division and the peer from net 1's
    torch.testing.assert_close(main["w"], torch.tensor([0.6, 0.9, 0.2]))
    assert main["labelled"].tolist() == [True, True, False]
    torch.testing.assert_close(other["w"], torch.tensor([0.7, 0.1, 0.8]))
    assert other["labelled"].tolist() == [True, False, True]
    # views: the loader's batch and the augmentation of the stored originals
    torch.testing.assert_close(main["views"][0], x)
    torch.testing.assert_close(main["views"][1], x + 0.5)
    # own predictions and the other network's, on both views
    with torch.no_grad():
        p_main = [torch.softmax(module.net(v), 1) for v in (x, x + 0.5)]
        p_peer = [torch.softmax(peer.net(v), 1) for v in (x, x + 0.5)]
    for got, want in ((main["own"], p_main), (main["other"], p_peer), (other["own"], p_peer), (other["other"], p_main)):
        torch.testing.assert_close(list(got), want)
    # λu = 10 · (2 + 1/4 − 2) / 4
    assert main["lambda_u"] == other["lambda_u"] == pytest.approx(0.625)
    assert loss is main["per_sample"] and loss.requires_grad
    torch.testing.assert_close(peer.losses[0], other["per_sample"].mean().detach())
    assert all(p.grad is not None for p in peer.net.parameters())  # the peer stepped on its own graph
    assert all(p.grad is None for p in module.parameters())  # net 1's gradient comes from the returned loss
    labelled = module.epoch_means._num["dividemix/labelled"] / module.epoch_means._den["dividemix/labelled"]
    assert labelled.item() == pytest.approx(2 / 3)


# ---- parameters -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "key"), [
    ("{name: dividemix, warmup_epochs: 0}", "warmup_epochs"),
    ("{name: dividemix, warmup_epochs: 1.5}", "warmup_epochs"),
    ("{name: dividemix, p_threshold: 0}", "p_threshold"), ("{name: dividemix, p_threshold: 1}", "p_threshold"),
    ("{name: dividemix, temperature: 0}", "temperature"), ("{name: dividemix, temperature: .nan}", "temperature"),
    ("{name: dividemix, alpha: -1}", "alpha"), ("{name: dividemix, alpha: 0}", "alpha"),
    ("{name: dividemix, lambda_u: -1}", "lambda_u"), ("{name: dividemix, rampup_epochs: -1}", "rampup_epochs"),
    ("{name: dividemix, rampup_epochs: 2.5}", "rampup_epochs"),
    ("{name: dividemix, warmup_penalty: 2}", "warmup_penalty"),
    ("{name: dividemix, warmup_epochs: 1, lamda_u: 2}", "lamda_u"),
])
def test_bad_parameters_name_the_key(entry, key):
    assert_bad_strategy_parameter(entry, key)


def test_warm_up_not_shorter_than_the_run_is_bad_input():
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.warmup_epochs: .* is not below trainer.epochs = 2") as e:
        load_config(SMOKE, ["strategies=[{name: dividemix, warmup_epochs: 2}]"])
    assert e.value.key == "strategies[0].warmup_epochs"


def test_method_file_sets_every_parameter():
    data = yaml.safe_load((CONFIGS / "methods" / "dividemix.yaml").read_text())
    assert data["method"] == "dividemix"
    (entry,) = data["strategies"]
    assert set(entry) - {"name"} == set(DivideMix.Params.__dataclass_fields__)
    official = DivideMix.Params()
    # the official values, except the warm-up and the ramp, shortened for short schedules (documented in the file)
    assert {k: v for k, v in entry.items() if k not in ("name", "warmup_epochs", "rampup_epochs")} == {
        "p_threshold": official.p_threshold, "temperature": official.temperature, "alpha": official.alpha,
        "lambda_u": official.lambda_u, "warmup_penalty": official.warmup_penalty}
    assert (official.warmup_epochs, official.rampup_epochs) == (10, 16)


# ---- real runs ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """2 epochs (1 warm-up), interrupted after the warm-up and resumed: it must end exactly like an uninterrupted run.
    Every step of the three fits, and the strategy's batch hook in the resumed one, refuse any host sync."""
    step = RobustClassifier.training_step

    def guarded(self, batch, batch_idx):
        with no_host_sync("training_step"):
            return step(self, batch, batch_idx)

    rec = Recorder()
    RobustClassifier.training_step = guarded
    try:
        straight, resumed = assert_resumes_exactly(tmp_path_factory.mktemp("dm"), [DM, "trainer.epochs=2", *SMALL],
                                                   stop_epoch=1, callbacks=[rec, _WatchStrategies()])
    finally:
        RobustClassifier.training_step = step
    return straight, resumed, rec


def test_resumes_exactly_with_peer_and_probabilities(resumed_run):
    straight, resumed, _ = resumed_run
    a, b = (torch.load(f"{r['run_dir']}/checkpoints/last.ckpt", weights_only=False)["callbacks"]["dividemix[0]"]
            for r in (straight, resumed))
    assert a["peer"]["optimizer"]["state"]  # momentum buffers exist, so the comparison covers them
    _assert_same(a["peer"], b["peer"])
    assert a["prob_main"]["values"] is not None and a["prob_peer"]["values"] is not None
    _assert_same(a["prob_main"], b["prob_main"])
    _assert_same(a["prob_peer"], b["prob_peer"])


def test_short_run_completes_above_chance_without_host_sync(resumed_run):
    _, result, _ = resumed_run
    assert result["status"] == "completed", result["error"]
    assert result["test_acc_last"] > 0.6  # 4 classes: chance is 0.25
    warm, mixed = rows(result["run_dir"])
    assert "dividemix/peer_loss" in warm and not warm.get("dividemix/lx")
    assert 0.5 < float(mixed["dividemix/labelled"]) < 1.0  # 20 % noise: most samples labelled, not all
    assert float(mixed["dividemix/lambda_u"]) > 0 and float(mixed["dividemix/lx"]) > 0


def test_labelled_sets_are_mostly_clean_and_differ_between_networks(resumed_run):
    _, _, rec = resumed_run
    (s,) = rec.strategies
    tensors = rec.module.trainer.datamodule.train_tensors()
    clean = tensors["y"] == tensors["y_clean"]  # diagnostics only
    kept = s.kept_mask()
    precision = (kept & clean).sum().item() / kept.sum().item()
    recall = (kept & clean).sum().item() / clean.sum().item()
    assert precision > 0.9 and recall > 0.8, (precision, recall)
    assert not torch.equal(s.prob_main.values, s.prob_peer.values)


def test_eval_logits_average_both_networks(resumed_run):
    _, _, rec = resumed_run
    (s,) = rec.strategies
    module = rec.module
    x = module.trainer.datamodule.splits["test"]["x"][:32]
    module.eval()
    with torch.no_grad():
        own, peer = module(x), s.peer.net(x)
        averaged = s.eval_logits(x, own, module)
        torch.testing.assert_close(averaged, (own + peer) / 2)
        torch.testing.assert_close(module.eval_logits(x), (own + peer) / 2)
    assert not torch.allclose(own, peer)


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["device", "dataloader"])
def test_image_run_with_crop_augmentation(tmp_path, loader):
    """Digits 8x8 with a CNN (BatchNorm) and random crops: the second view is a fresh augmentation of the stored
    originals on both loader paths; 40 % symmetric noise, 3 epochs (1 warm-up)."""
    cfg = load_config(CONFIGS / "base.yaml", [
        f"output.root={tmp_path}", f"data.loader={loader}", "data.batch_size=64", "data.crop_padding=1",
        "data.hflip=false", "noise.kind=symmetric", "noise.rate=0.4", "trainer.epochs=3",
        "strategies=[{name: dividemix, warmup_epochs: 1, rampup_epochs: 1}]"],
        includes=[CONFIGS / "datasets" / "digits.yaml", CONFIGS / "models" / "cnn.yaml"])
    result = fit(cfg, quiet=True)
    assert result["status"] == "completed", result["error"]
    assert result["test_acc_last"] > 0.6  # 10 classes
