"""JoCoR: the joint loss against the formula on hand-computed cases (float64) and the official KL-div form, the
gradient reaching both networks as the official joint backward does, the selection in a fit, resume, no host syncs,
and bad parameters refused."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml

import robustlearn.strategies.noisy.jocor  # noqa: F401  (registers jocor)
from robustlearn.config import load_config
from robustlearn.runner import fit
from robustlearn.strategies.noisy.jocor import JoCoR, joint_loss
from robustlearn.strategies.noisy.selection import forget_rate_at, keep_count
from tests.conftest import CONFIGS, SMOKE
from tests.protocol_helpers import (
    Recorder,
    assert_bad_strategy_parameter,
    assert_resumes_exactly,
    fake_module,
    rows,
    smoke,
)
from tests.sync_guard import _WatchStrategies

D = torch.float64
LN2, LN3 = math.log(2.0), math.log(3.0)


# ---- JoCoR: the joint loss ----------------------------------------------------------------------------------------


def test_joint_loss_on_a_hand_computed_case():
    # p1 = softmax([0, ln 3]) = [1/4, 3/4], p2 = softmax([0, 0]) = [1/2, 1/2]
    z1 = torch.tensor([[0.0, LN3], [0.0, LN3]], dtype=D)
    z2 = torch.zeros(2, 2, dtype=D)
    y = torch.tensor([0, 1])
    # KL(p1||p2) + KL(p2||p1) = sum_k (p1_k - p2_k)(ln p1_k - ln p2_k) = (-1/4) ln(1/2) + (1/4) ln(3/2) = ln(3) / 4
    kl = 0.25 * LN3
    row0 = 0.1 * (math.log(4.0) + LN2) + 0.9 * kl  # CE(p1, 0) = ln 4, CE(p2, 0) = ln 2
    row1 = 0.1 * (math.log(4.0 / 3.0) + LN2) + 0.9 * kl  # CE(p1, 1) = ln 4/3
    loss = joint_loss(z1, z2, y, 0.9)
    assert loss.dtype == D
    torch.testing.assert_close(loss, torch.tensor([row0, row1], dtype=D), rtol=0, atol=1e-12)
    assert loss[0].item() == pytest.approx(0.455132, abs=1e-6)
    # λ = 0: the two cross-entropies; the KL part alone is symmetric in the two networks
    torch.testing.assert_close(joint_loss(z1, z2, y, 0.0), torch.tensor([3 * LN2, math.log(8.0 / 3.0)], dtype=D))
    torch.testing.assert_close(joint_loss(z1, z2, y, 0.5), joint_loss(z2, z1, y, 0.5))


def test_joint_loss_matches_the_official_kl_div_form():
    # official: (1 - λ)(CE(z1) + CE(z2)) + λ kl_div(log_softmax(z1), softmax(z2)) + λ kl_div(log_softmax(z2), ...)
    g = torch.Generator().manual_seed(0)
    z1, z2 = 3 * torch.randn(16, 5, generator=g, dtype=D), 3 * torch.randn(16, 5, generator=g, dtype=D)
    y = torch.randint(0, 5, (16,), generator=g)
    lam = 0.65

    def kl(a, b):  # F.kl_div(input=log q, target=p) = sum p (log p - log q) = KL(softmax(b) || softmax(a))
        return F.kl_div(F.log_softmax(a, 1), F.softmax(b, 1), reduction="none").sum(1)

    official = ((1 - lam) * (F.cross_entropy(z1, y, reduction="none") + F.cross_entropy(z2, y, reduction="none"))
                + lam * kl(z1, z2) + lam * kl(z2, z1))
    torch.testing.assert_close(joint_loss(z1, z2, y, lam), official, rtol=0, atol=1e-12)


class FakePeer:
    """A peer network whose step only runs backward (the gradients stay for the test to read)."""

    def __init__(self, net):
        self.net = net
        self.steps = 0

    def __call__(self, x):
        return self.net(x)

    def step(self, loss):
        loss.backward()
        self.steps += 1


def test_each_network_gets_the_official_joint_gradient():
    torch.manual_seed(0)
    x, y = torch.randn(8, 5, dtype=D), torch.randint(0, 3, (8,))
    main, peer = torch.nn.Linear(5, 3).to(D), torch.nn.Linear(5, 3).to(D)
    ref_main, ref_peer = torch.nn.Linear(5, 3).to(D), torch.nn.Linear(5, 3).to(D)
    ref_main.load_state_dict(main.state_dict())
    ref_peer.load_state_dict(peer.state_dict())
    lam, tau = 0.7, 0.25

    # the official step: one scalar over both networks, the mean of ℓ over the ⌊(1 - τ) B⌋ = 6 smallest, one backward
    ell = joint_loss(ref_main(x), ref_peer(x), y, lam)
    keep = ell.detach().argsort()[:6]
    ell[keep].mean().backward()

    s = JoCoR(JoCoR.Params(co_lambda=lam, forget_rate=tau, ramp_epochs=1))
    s.tau, s.peer = tau, FakePeer(peer)
    module = fake_module(epoch=3)
    per_sample = s.loss(main(x), {"x": x, "y": y}, module)
    w = s.weights(per_sample, None, {"x": x, "y": y}, torch.ones(8, dtype=D), module)
    assert s.peer.steps == 1 and (w > 0).sum().item() == 6
    assert set((w > 0).nonzero().flatten().tolist()) == set(keep.tolist())
    (w * per_sample).sum().div(8).backward()  # what strategy_step and Lightning do for the main network
    torch.testing.assert_close(per_sample.detach(), ell.detach())
    for ours, reference in ((main, ref_main), (peer, ref_peer)):
        for a, b in zip(ours.parameters(), reference.parameters()):
            assert b.grad.abs().sum().item() > 0
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)


def test_the_kl_term_is_not_detached():
    # with λ near 1 the gradient is mostly the co-regularisation: it must reach the main network through p1 in both
    # KL directions (KL(p2||p1) alone would give a different gradient)
    z1 = torch.tensor([[0.0, LN3, 1.0]], dtype=D, requires_grad=True)
    z2 = torch.tensor([[1.0, 0.0, 0.0]], dtype=D)
    y = torch.tensor([2])
    joint_loss(z1, z2, y, 0.99).sum().backward()
    ref = z1.detach().clone().requires_grad_(True)
    p1, p2 = torch.softmax(ref, 1), torch.softmax(z2, 1)
    both = (p1 * (p1.log() - p2.log())).sum() + (p2 * (p2.log() - p1.log())).sum()
    (0.01 * F.cross_entropy(ref, y) + 0.01 * F.cross_entropy(z2, y) + 0.99 * both).backward()
    torch.testing.assert_close(z1.grad, ref.grad)
    one_way = ref.detach().clone().requires_grad_(True)
    (0.01 * F.cross_entropy(one_way, y) + 0.99 * (p2 * (p2.log() - torch.log_softmax(one_way, 1))).sum()).backward()
    assert (one_way.grad - z1.grad).abs().max().item() > 1e-2


# ---- JoCoR in a fit ---------------------------------------------------------------------------------------------


class KeptPerStep(pl.Callback):
    """Per step: (epoch, batch size, samples with a non-zero weight); the peer's weights before and after."""

    def __init__(self):
        self.kept: list[tuple[int, int, int]] = []
        self.flipped: list[tuple[int, int, int]] = []  # (epoch, flipped in the batch, flipped and kept)

    def on_train_start(self, trainer, pl_module):
        s = next(cb for cb in trainer.callbacks if isinstance(cb, JoCoR))
        self.peer_start = [p.detach().clone() for p in s.peer.parameters()]
        self.main_start = [p.detach().clone() for p in pl_module.net.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        w, b = outputs["weights"], outputs["batch"]
        self.kept.append((trainer.current_epoch, len(w), int((w > 0).sum())))
        flipped = b["y"] != b["y_clean"]  # diagnostics only
        self.flipped.append((trainer.current_epoch, int(flipped.sum()), int((flipped & (w > 0)).sum())))


def test_jocor_fit_selects_and_trains_both_networks(tmp_path):
    kept, rec = KeptPerStep(), Recorder()
    over = ["strategies=[{name: jocor, ramp_epochs: 2}]", "trainer.epochs=2", "noise.rate=0.4", "data.n_train=800"]
    result = fit(smoke(tmp_path, *over), quiet=True, callbacks=[kept, rec])
    assert result["status"] == "completed", result.get("error")
    assert result["oracle"] == "true noise rate"
    # R = 0 in epoch 0, 0.4 in epoch 1 (τ = noise.rate, ramp over 2 epochs): ⌊(1 - R) B⌋ kept in every step
    assert [b for _, b, _ in kept.kept] == [64] * 11 + [16] + [64] * 11 + [16]  # 720 training samples per epoch
    for epoch, b, n in kept.kept:
        assert n == keep_count(b, forget_rate_at(epoch, 0.4, 2)), (epoch, b, n)
    assert kept.kept[0][2] == 64 and kept.kept[-2][2] == 38 and kept.kept[-1][2] == 9
    # the shared small-loss set of epoch 1 holds fewer flipped samples than the batches do (seed 0: 24 % against 41 %)
    seen = sum(f for e, f, _ in kept.flipped if e == 1) / 720
    in_kept = sum(k for e, _, k in kept.flipped if e == 1) / sum(n for e, _, n in kept.kept if e == 1)
    assert in_kept < seen - 0.1, (seen, in_kept)
    metrics = rows(result["run_dir"])
    assert [float(r["jocor/forget_rate"]) for r in metrics] == [0.0, pytest.approx(0.4)]
    assert all(0.5 < float(r["jocor/agreement"]) <= 1.0 for r in metrics)
    s = rec.strategies[0]
    peer_end, main_end = list(s.peer.parameters()), list(rec.module.net.parameters())
    assert all((a - b).abs().max() > 0 for a, b in zip(peer_end, kept.peer_start))  # the peer trained
    assert all((a - b).abs().max() > 0 for a, b in zip(main_end, kept.main_start))  # and the main network
    assert all((a - b).abs().max() > 0 for a, b in zip(peer_end, main_end))  # two different networks


def test_jocor_oracle_only_without_a_forget_rate():
    assert JoCoR().oracle == "true noise rate"
    assert JoCoR(JoCoR.Params(forget_rate=0.3)).oracle is None
    cfg = load_config(SMOKE, ["strategies=[{name: jocor, forget_rate: 0.3}]", "noise.rate=0.1"])
    assert cfg.strategies[0].forget_rate == 0.3


def test_jocor_resumes_exactly(tmp_path):
    # interrupted after epoch 0: the peer, its optimiser and the forget-rate ramp (0 then 0.4) carry over
    over = ["strategies=[{name: jocor, ramp_epochs: 2, co_lambda: 0.5}]", "trainer.epochs=2", "noise.rate=0.4",
            "data.n_train=400"]
    straight, _ = assert_resumes_exactly(tmp_path, over, stop_epoch=1)
    ckpt = torch.load(f"{straight['run_dir']}/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["callbacks"]["jocor[0]"]["peer"]["optimizer"]["state"]  # the peer's optimiser state is in it



# ---- no host syncs in the step -------------------------------------------------------------------------------------


def test_step_makes_no_host_sync(tmp_path, guarded_step):
    result = fit(smoke(tmp_path, "strategies=[{name: jocor, ramp_epochs: 1}]", "trainer.epochs=1", "noise.rate=0.4",
                       "data.n_train=400"), quiet=True, callbacks=[_WatchStrategies()])
    assert result["status"] == "completed", result["error"]


# ---- configuration ------------------------------------------------------------------------------------------------


def test_method_file_sets_every_parameter_at_its_default():
    defaults = {"co_lambda": 0.9, "forget_rate": None, "ramp_epochs": 10, "exponent": 1.0}
    data = yaml.safe_load((CONFIGS / "methods" / "jocor.yaml").read_text())
    assert data["method"] == "jocor"
    # The YAML shortens the ramp to 3 epochs for this repository's 8-20-epoch runs; the rest is at the defaults.
    assert data["strategies"] == [{"name": "jocor", **defaults, "ramp_epochs": 3}]
    assert vars(JoCoR.Params()) == defaults
    assert JoCoR.provides_loss and JoCoR.extra_logits == 0


@pytest.mark.parametrize(
    "strategy,key",
    [
        ("{name: jocor, co_lambda: 1}", "co_lambda"),
        ("{name: jocor, co_lambda: -0.1}", "co_lambda"),
        ("{name: jocor, co_lambda: .nan}", "co_lambda"),
        ("{name: jocor, co_lambda: high}", "co_lambda"),
        ("{name: jocor, forget_rate: 1}", "forget_rate"),
        ("{name: jocor, forget_rate: -0.2}", "forget_rate"),
        ("{name: jocor, forget_rate: .inf}", "forget_rate"),
        ("{name: jocor, ramp_epochs: 0}", "ramp_epochs"),
        ("{name: jocor, ramp_epochs: 2.5}", "ramp_epochs"),
        ("{name: jocor, ramp_epochs: true}", "ramp_epochs"),
        ("{name: jocor, exponent: 0}", "exponent"),
        ("{name: jocor, exponent: -1}", "exponent"),
        ("{name: jocor, lam: 0.5}", "lam"),
    ],
)
def test_bad_parameters_name_the_key(strategy, key):
    assert_bad_strategy_parameter(strategy, key)


def test_edge_values_are_accepted():
    entry = "{name: jocor, co_lambda: 0, forget_rate: 0, ramp_epochs: 1}"
    assert len(load_config(SMOKE, [f"strategies=[{entry}]"]).strategies) == 1
