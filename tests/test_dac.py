"""The deep abstaining classifier: its loss against the formula on hand-computed cases (float64), the α schedule, the
stage boundary (the samples dropped are those abstained on; a fresh network, optimiser and schedule; plain
cross-entropy on the kept subset after it), DAC dropping noisier samples than the data holds, resume, no host syncs,
and bad parameters refused."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml

import robustlearn.strategies.noisy.dac  # noqa: F401  (registers dac)
import robustlearn.strategies.noisy.jocor  # noqa: F401  (registers jocor)
from robustlearn.config import load_config
from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.runner import fit
from robustlearn.strategies.full_pass import full_pass
from robustlearn.strategies.noisy.dac import DAC, RESTART_SALT, abstained, abstention_loss, alpha_at, stage_split
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


# ---- DAC: the loss and α ------------------------------------------------------------------------------------------


def test_abstention_loss_on_a_hand_computed_case():
    # K = 2 classes + abstain. Row 0: p = [1/4, 1/2, 1/4], labelled 0; row 1: same, labelled 1;
    # row 2: p = [1/8, 1/8, 3/4], labelled 0
    z = torch.tensor([[0.0, LN2, 0.0], [0.0, LN2, 0.0], [0.0, 0.0, math.log(6.0)]], dtype=D)
    y = torch.tensor([0, 1, 0])
    alpha = 0.5
    # (1 - p_abs)(-log(p_y / (1 - p_abs))) + α log(1 / (1 - p_abs))
    row0 = 0.75 * LN3 + alpha * math.log(4.0 / 3.0)  # p_y / (1 - p_abs) = (1/4) / (3/4)
    row1 = 0.75 * math.log(1.5) + alpha * math.log(4.0 / 3.0)  # (1/2) / (3/4)
    row2 = 0.25 * LN2 + alpha * math.log(4.0)  # (1/8) / (1/4)
    loss = abstention_loss(z, y, alpha, k=2)
    assert loss.dtype == D
    torch.testing.assert_close(loss, torch.tensor([row0, row1, row2], dtype=D), rtol=0, atol=1e-12)
    assert loss[0].item() == pytest.approx(0.967800, abs=1e-6)
    # the gradient is the formula's, written with the softmax directly
    leaf = z.clone().requires_grad_(True)
    abstention_loss(leaf, y, alpha, k=2).sum().backward()
    ref = z.clone().requires_grad_(True)
    p = torch.softmax(ref, 1)
    keep = 1 - p[:, 2]
    (keep * -torch.log(p.gather(1, y[:, None]).squeeze(1) / keep) + alpha * torch.log(1 / keep)).sum().backward()
    torch.testing.assert_close(leaf.grad, ref.grad)


def test_abstention_loss_limits():
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(6, 4, generator=g, dtype=D), torch.randint(0, 3, (6,), generator=g)
    never = z.clone()
    never[:, 3] = -200.0  # p_abs = 0: cross-entropy over the K classes, whatever α
    torch.testing.assert_close(abstention_loss(never, y, 0.7, k=3), F.cross_entropy(z[:, :3], y, reduction="none"))
    always = z.clone().requires_grad_(True)
    with torch.no_grad():
        always[:, 3] = 200.0  # p_abs = 1: the official clamp at 1 - 1e-7, finite value and gradient
    loss = abstention_loss(always, y, 0.7, k=3)
    loss.sum().backward()
    ce = torch.logsumexp(z[:, :3], 1) - z[:, :3].gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(loss, 1e-7 * ce - 0.7 * math.log(1e-7))
    assert torch.isfinite(always.grad).all() and always.grad[:, 3].abs().max().item() == 0
    # float32 and bf16 logits give float32 losses close to float64
    for dtype in (torch.float32, torch.bfloat16):
        low = abstention_loss(z.to(dtype).float(), y, 0.7, k=3)
        torch.testing.assert_close(low.double(), abstention_loss(z, y, 0.7, k=3), rtol=2e-2, atol=2e-2)


def test_alpha_schedule_values():
    # L = 2 warm-up epochs of T = 7: 0, 0, then α0 rising linearly to α_final at the last epoch (e = 6)
    values = [alpha_at(e, 0.01, 1.0, 2, 7) for e in range(7)]
    assert values == pytest.approx([0.0, 0.0, 0.01, 0.2575, 0.505, 0.7525, 1.0])
    assert alpha_at(4, 0.02, 0.5, 0, 5) == pytest.approx(0.5)  # no warm-up
    assert alpha_at(3, 0.02, 1.0, 3, 4) == pytest.approx(0.02)  # one abstention epoch: α0 (official: 1 / 0)
    # the official code: α_inc = (α_final - α0) / (total_epochs - epoch) at the first abstention epoch (1-based
    # epoch L + 1), then α += α_inc at every new epoch
    alpha, inc = 0.01, (1.0 - 0.01) / (7 - 3)
    official = [0.0, 0.0]
    for _ in range(5):
        official.append(alpha)
        alpha += inc
    assert values == pytest.approx(official)


def test_dac_warmup_then_alpha_from_the_running_loss():
    s = DAC(DAC.Params(stage1_share=1.0, learn_epochs=2, alpha_init_factor=4.0))  # the DAC over all 5 epochs
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(5, 4, generator=g, dtype=D), torch.randint(0, 3, (5,), generator=g)) for _ in range(5)]

    def first_term(z, y):  # (1 - p_abs)(-log(p_y / (1 - p_abs))), batch mean
        p = torch.softmax(z, 1)
        keep = 1 - p[:, 3]
        return (keep * -torch.log(p.gather(1, y[:, None]).squeeze(1) / keep)).mean().item()

    ewma = None
    for i, epoch in enumerate((0, 0, 1)):  # three warm-up steps: cross-entropy over all K + 1 outputs
        z, y = batches[i]
        out = s.loss(z, {"y": y}, fake_module(epoch, 5, num_classes=3))
        torch.testing.assert_close(out, F.cross_entropy(z, y, reduction="none"))
        ewma = first_term(z, y) if ewma is None else 0.05 * first_term(z, y) + 0.95 * ewma
        assert s.ewma.item() == pytest.approx(ewma, rel=1e-9) and s.alpha0 is None
    z, y = batches[3]  # the first abstention step: this batch joins the average, α0 = average / 4
    out = s.loss(z, {"y": y}, fake_module(2, 5, num_classes=3))
    ewma = 0.05 * first_term(z, y) + 0.95 * ewma
    assert s.alpha0.item() == pytest.approx(ewma / 4.0, rel=1e-9)
    torch.testing.assert_close(out, abstention_loss(z, y, s.alpha0.item(), k=3))
    z, y = batches[4]  # epoch 3 of 5: halfway from α0 to 1
    out = s.loss(z, {"y": y}, fake_module(3, 5, num_classes=3))
    alpha = s.alpha0.item() + (1.0 - s.alpha0.item()) / 2
    torch.testing.assert_close(out, abstention_loss(z, y, alpha, k=3))
    assert s.alpha0.item() == pytest.approx(ewma / 4.0, rel=1e-9)  # set once


def test_alpha_ramps_over_stage_one():
    # T = 10 at the defaults: T1 = 5 epochs of DAC, L = max(1, ⌊0.1 · 5⌋) = 1; α reaches α_final at epoch 4, the last
    # epoch of stage 1
    s = DAC()
    assert s.split(10) == (5, 1)
    assert s.alpha(0, 10) == 0.0  # no α₀ yet
    s.alpha0 = torch.tensor(0.2, dtype=D)
    assert [float(s.alpha(e, 10)) for e in range(5)] == pytest.approx([0.0, 0.2, 0.2 + 0.8 / 3, 0.2 + 1.6 / 3, 1.0])


def test_stage_split_scales_with_the_run():
    P = DAC.Params
    # defaults: T1 = max(1, ⌊T / 2⌋), L = max(1, ⌊T1 / 10⌋)
    assert [stage_split(P(), t) for t in (3, 4, 8, 9, 20, 400)] == [(1, 1), (2, 1), (4, 1), (4, 1), (10, 1), (200, 20)]
    assert stage_split(P(stage1_epochs=200, learn_epochs=20), 400) == (200, 20)  # the README's DAC run, then 200 CE
    assert stage_split(P(stage1_share=1.0), 200) == (200, 20)  # the DAC alone, the README's warm-up
    assert stage_split(P(stage1_share=0.29, warmup_share=0.05), 100) == (29, 1)  # 0.29 · 100 = 28.999999999999996
    assert stage_split(P(learn_epochs=0), 2) == (1, 0)


def test_dropped_are_the_samples_abstained_on():
    # K = 3 classes and the abstain output (index 3): dropped where the argmax over the four outputs is the abstain one
    z = torch.tensor([[0.0, 1.0, 0.0, 2.0],  # abstain
                      [3.0, 1.0, 0.0, 2.0],  # class 0
                      [0.0, 0.0, 0.0, 0.1],  # abstain, by a hair
                      [0.0, 0.0, 5.0, 5.0 - 1e-3],  # class 2, by a hair
                      [0.0, 0.0, 5.0, 5.0],  # a tie goes to the class (the first maximum)
                      [-4.0, -5.0, -6.0, -3.0]])  # abstain, although every output is low
    expected = [True, False, True, False, False, True]
    assert abstained(z, 3).tolist() == expected
    assert abstained(torch.cat([z, torch.full((6, 1), 9.0)], 1), 3).tolist() == expected  # outputs past K + 1 unread


def test_stage_two_loss_is_cross_entropy_over_the_k_classes():
    s = DAC()
    s.stage = 2
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(6, 4, generator=g, dtype=D), torch.randint(0, 3, (6,), generator=g)
    z[:, 3] = 50.0  # the abstain output is ignored, however large
    out = s.loss(z, {"y": y}, fake_module(7, 10, num_classes=3))
    torch.testing.assert_close(out, F.cross_entropy(z[:, :3], y, reduction="none"), rtol=0, atol=1e-12)
    assert s.ewma is None and s.alpha0 is None  # the DAC's running state is left alone


# ---- DAC in a fit -------------------------------------------------------------------------------------------------


class Abstentions(pl.Callback):
    """Per epoch: abstained flipped, flipped, abstained clean, clean (argmax on the abstain output), from `y_clean`
    (diagnostics only: training never reads it)."""

    def __init__(self):
        self.counts: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        b, z = outputs["batch"], outputs["logits"]
        abstained = (z.argmax(1) == pl_module.num_classes).float()
        flipped = (b["y"] != b["y_clean"]).float()
        row = torch.stack([(abstained * flipped).sum(), flipped.sum(), (abstained * (1 - flipped)).sum(),
                           (1 - flipped).sum()])
        self.counts[trainer.current_epoch] = self.counts.get(trainer.current_epoch, 0) + row


def fit_dac(root, overrides, callbacks):
    cfg = smoke(root, *overrides)
    return cfg, fit(cfg, quiet=True, callbacks=callbacks)


def column(metrics, key):
    return [float(r[key]) if r[key] != "" else None for r in metrics]


def test_dac_network_has_an_abstain_output_and_logs(tmp_path):
    rec, counts = Recorder(), Abstentions()
    over = ["trainer.epochs=4", "strategies=[{name: dac, stage1_epochs: 3, learn_epochs: 1}]", "data.n_train=400"]
    cfg, result = fit_dac(tmp_path, over, [rec, counts])
    assert result["status"] == "completed", result.get("error")
    assert result["oracle"] is None
    module = rec.module
    x = torch.randn(7, 2)
    assert module(x).shape == (7, 5) and module.eval_logits(x).shape == (7, 4)  # K + 1 outputs, K evaluated
    metrics = rows(result["run_dir"])
    s = rec.strategies[0]
    assert column(metrics, "dac/alpha") == pytest.approx([0.0, s.alpha0.item(), 1.0, None])  # over stage 1
    assert column(metrics, "dac/stage") == [1, 1, 1, 2]
    assert 0 < s.alpha0.item() < 0.1
    for r, epoch in zip(metrics[:3], range(3)):  # the logged share is the callback's count
        c = counts.counts[epoch]
        assert float(r["dac/abstained"]) == pytest.approx(((c[0] + c[2]) / (c[1] + c[3])).item(), abs=1e-6)
    assert metrics[3]["dac/abstained"] == ""  # stage 2 does not abstain
    n = int(s.dropped.sum())  # the 2-D blobs: the DAC abstains on little or nothing here
    assert column(metrics, "dac/dropped") == [None, None, n, n]


class Boundary(pl.Callback):
    """At the last stage-1 validation (before the boundary): the network's weights and its logits over the training
    split. When stage 2 starts: the weights, the optimiser's state and hyperparameters, the subset. In stage 2: every
    step's epoch, per-sample loss, logits, labels, positions and weights."""

    def __init__(self, t1: int):
        self.t1 = t1
        self.steps: list[tuple] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.t1 - 1:
            self.before = {k: v.clone() for k, v in pl_module.net.state_dict().items()}
            self.logits = full_pass(pl_module, trainer.datamodule)
            self.tensors = trainer.datamodule.train_tensors()

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.t1:
            self.after = {k: v.clone() for k, v in pl_module.net.state_dict().items()}
            opt = trainer.optimizers[0]
            self.optimizer_state = dict(opt.state)
            self.group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
            self.subset = trainer.datamodule.train_subset

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch >= self.t1:
            b = outputs["batch"]
            self.steps.append((trainer.current_epoch, outputs["per_sample"], outputs["logits"].detach(), b["y"],
                               b["index"], outputs["weights"]))


def test_dac_boundary_drops_the_abstained_and_restarts(tmp_path):
    # 40 % noise and no warm-up: α₀ comes from the first batch and is tiny, so the DAC abstains on most samples within
    # its two epochs, and stage 2 trains on a real subset
    boundary, rec = Boundary(t1=2), Recorder()
    over = ["trainer.epochs=4", "noise.rate=0.4", "data.n_train=400", "output.save_checkpoint=false",
            "strategies=[{name: dac, stage1_epochs: 2, learn_epochs: 0}, {name: diagnostics}]"]
    cfg, result = fit_dac(tmp_path, over, [boundary, rec])
    assert result["status"] == "completed", result.get("error")
    s, module = rec.strategies[0], rec.module
    k = module.num_classes
    # dropped: exactly the samples whose argmax over the K + 1 outputs was the abstain class at the end of stage 1
    expected = (boundary.logits.argmax(1) == k).cpu()
    n = int(expected.sum())
    assert torch.equal(s.dropped, expected) and 0 < n < len(expected)
    assert torch.equal(boundary.subset, torch.nonzero(~expected).squeeze(1))
    assert torch.equal(s.kept_mask(), ~expected)
    # the network restarts: every tensor differs from its stage-1 value and equals a new network's initial value
    # drawn from the documented stream (run seed, boundary epoch, RESTART_SALT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(epoch_seed(cfg.seed, 2, salt=RESTART_SALT))
        fresh = module.build_network().state_dict()
    assert boundary.after.keys() == fresh.keys()
    for key, value in boundary.after.items():
        assert torch.equal(value, fresh[key]), key
        assert not torch.equal(value, boundary.before[key]), key
    # and its optimiser: no momentum buffers, the configured rate and momentum
    assert boundary.optimizer_state == {}
    assert boundary.group["lr"] == cfg.optim.lr and boundary.group["momentum"] == cfg.optim.momentum
    metrics = rows(result["run_dir"])
    assert column(metrics, "lr") == pytest.approx([0.1, 0.05, 0.1, 0.05])  # a cosine schedule per stage
    assert column(metrics, "dac/stage") == [1, 1, 2, 2]
    # the result is the retrained network's: the best-validation epoch is chosen within stage 2
    val = column(metrics, "val/acc")
    assert result["best_epoch"] == (2 if val[2] >= val[3] else 3)
    assert result["test_acc_at_best_val"] == pytest.approx(column(metrics, "test/acc")[result["best_epoch"]])
    assert column(metrics, "dac/dropped") == [None, n, n, n]
    assert column(metrics, "dac/dropped_share")[1] == pytest.approx(n / 360)
    assert [int(r["samples"]) for r in metrics] == [360, 360, 360 - n, 360 - n]
    # diagnostics scores the kept set against the flip mask (the strategy never reads it): the share of clean samples
    # among the kept ones, from the boundary epoch on
    tensors = boundary.tensors
    clean = (tensors["y"] == tensors["y_clean"]).cpu()
    assert column(metrics, "diagnostics/dac_kept_precision") == pytest.approx(
        [None] + [clean[~expected].float().mean().item()] * 3)
    # stage 2: plain cross-entropy over the K class outputs, on each kept sample once per epoch, unweighted
    kept = torch.nonzero(~expected).squeeze(1).tolist()
    for epoch in (2, 3):
        steps = [step for step in boundary.steps if step[0] == epoch]
        assert sorted(torch.cat([step[4] for step in steps]).tolist()) == kept
        for _, per_sample, logits, y, _, weights in steps:
            torch.testing.assert_close(per_sample, F.cross_entropy(logits[:, :k].float(), y, reduction="none"))
            assert bool((weights == 1).all())


@pytest.mark.parametrize("scheduler,dac,stop_epoch", [
    ("cosine", "stage1_epochs: 3, learn_epochs: 2", 1),  # in the warm-up: the running mean carries over
    ("onecycle", "stage1_epochs: 3, learn_epochs: 1", 2),  # in stage 1 after α₀ was set, onecycle on stage 1
    ("cosine", "stage1_epochs: 2, learn_epochs: 0", 2),  # right after the boundary: its checkpoint holds the switch
    ("onecycle", "stage1_epochs: 2, learn_epochs: 0, alpha_final: 2.0", 3),  # in stage 2, onecycle on stage 2
])
def test_dac_resumes_exactly(tmp_path, scheduler, dac, stop_epoch):
    over = [f"strategies=[{{name: dac, {dac}}}]", "trainer.epochs=4", "noise.rate=0.4", "data.n_train=400",
            f"scheduler.name={scheduler}"]
    straight, _ = assert_resumes_exactly(tmp_path, over, stop_epoch=stop_epoch)
    assert straight["status"] == "completed", straight["error"]
    ckpt = torch.load(f"{straight['run_dir']}/checkpoints/last.ckpt", weights_only=False)
    state = ckpt["callbacks"]["dac[0]"]
    assert state["stage"] == 2 and state["alpha0"].item() > 0 and state["ewma"].item() > 0
    if "learn_epochs: 0" in dac:  # a real subset, in the datamodule's checkpoint state
        subset = ckpt["RobustDataModule"]["train_subset"]
        assert 0 < len(subset) < 360 and torch.equal(subset, torch.nonzero(~state["dropped"]).squeeze(1))


# 150 samples in 64 dimensions, a wide MLP with Adam: the network can fit single samples, so it can abstain on the
# ones whose labels it cannot fit. 40 % symmetric noise, one warm-up epoch, 16 epochs of DAC and one of retraining.
ABSTAIN = ["noise.rate=0.4", "data.n_train=150", "data.n_features=64", "data.batch_size=16", "model.hidden=[256]",
           "optim.name=adam", "optim.lr=0.003", "optim.weight_decay=0", "trainer.epochs=17",
           "output.save_checkpoint=false", "strategies=[{name: dac, stage1_epochs: 16, learn_epochs: 1}]"]


def test_dac_abstains_on_flipped_samples_and_drops_them(tmp_path):
    counts, rec = Abstentions(), Recorder()
    cfg, result = fit_dac(tmp_path, ABSTAIN, [counts, rec])
    assert result["status"] == "completed", result.get("error")
    late = sum(counts.counts[e] for e in range(10, 16))  # the last 6 epochs of stage 1
    flipped, clean = (late[0] / late[1]).item(), (late[2] / late[3]).item()
    # seed 0: 32 % of the flipped samples abstained on against 5 % of the clean ones
    assert flipped > 0.15 and flipped > 3 * clean, (flipped, clean)
    assert late[1] > 100  # enough flipped samples seen for the comparison
    # the dropped set (abstained on at the end of stage 1) is far noisier than the data; y_clean for the test only
    from robustlearn.data.datamodule import RobustDataModule

    tensors = RobustDataModule(cfg).load().train_tensors()
    noisy = tensors["y"] != tensors["y_clean"]
    dropped = rec.strategies[0].dropped
    rate, in_dropped = noisy.float().mean().item(), noisy[dropped].float().mean().item()
    # seed 0: 8 of the 9 samples dropped are flipped (89 %), against 41 % of the training split
    assert int(dropped.sum()) >= 5 and in_dropped > rate + 0.3, (int(dropped.sum()), in_dropped, rate)
    assert int(rows(result["run_dir"])[-1]["samples"]) == 135 - int(dropped.sum())  # stage 2 trains on the rest


# ---- no host syncs in the step -------------------------------------------------------------------------------------


def test_step_makes_no_host_sync(tmp_path, guarded_step):
    result = fit(smoke(tmp_path, "strategies=[{name: dac, stage1_epochs: 2, learn_epochs: 0}]", "trainer.epochs=3",
                       "noise.rate=0.4", "data.n_train=400"), quiet=True, callbacks=[_WatchStrategies()])
    assert result["status"] == "completed", result["error"]


# ---- configuration ------------------------------------------------------------------------------------------------


def test_method_file_sets_every_parameter_at_its_default():
    defaults = {"stage1_share": 0.5, "stage1_epochs": None, "warmup_share": 0.1, "learn_epochs": None,
                "alpha_final": 1.0, "alpha_init_factor": 64.0}
    data = yaml.safe_load((CONFIGS / "methods" / "dac.yaml").read_text())
    assert data["method"] == "dac"
    assert data["strategies"] == [{"name": "dac", **defaults}]
    assert vars(DAC.Params()) == defaults
    assert DAC.provides_loss and DAC.extra_logits == 1


def test_dac_method_file_loads_for_the_benchmark_runs():
    # the noisy-label sweeps train 8 epochs: 4 of DAC (1 of warm-up) and 4 of retraining
    cfg = load_config(SMOKE, ["trainer.epochs=8"], includes=[CONFIGS / "methods" / "dac.yaml"])
    assert stage_split(DAC.Params(**{k: v for k, v in cfg.strategies[0].items() if k != "name"}), 8) == (4, 1)


@pytest.mark.parametrize(
    "strategy,key",
    [
        ("{name: dac, stage1_share: 0}", "stage1_share"),
        ("{name: dac, stage1_share: 1.5}", "stage1_share"),
        ("{name: dac, stage1_share: .nan}", "stage1_share"),
        ("{name: dac, stage1_share: half}", "stage1_share"),
        ("{name: dac}", "stage1_share"),  # the smoke config trains 2 epochs: stage 1 is 1 epoch, all warm-up
        ("{name: dac, stage1_epochs: 0}", "stage1_epochs"),
        ("{name: dac, stage1_epochs: 1.5}", "stage1_epochs"),
        ("{name: dac, stage1_epochs: true}", "stage1_epochs"),
        ("{name: dac, stage1_epochs: 3}", "stage1_epochs"),  # more than trainer.epochs
        ("{name: dac, stage1_epochs: 1}", "stage1_epochs"),  # 1 epoch: the warm-up takes it all
        ("{name: dac, warmup_share: 0}", "warmup_share"),
        ("{name: dac, warmup_share: 1}", "warmup_share"),
        ("{name: dac, warmup_share: -0.1}", "warmup_share"),
        ("{name: dac, learn_epochs: -1}", "learn_epochs"),
        ("{name: dac, learn_epochs: 1.5}", "learn_epochs"),
        ("{name: dac, learn_epochs: 1}", "learn_epochs"),  # stage 1 is 1 epoch of 2: none would abstain
        ("{name: dac, learn_epochs: 2, stage1_share: 1}", "learn_epochs"),
        ("{name: dac, alpha_final: 0}", "alpha_final"),
        ("{name: dac, alpha_final: -1}", "alpha_final"),
        ("{name: dac, alpha_final: .nan}", "alpha_final"),
        ("{name: dac, alpha_init_factor: 0}", "alpha_init_factor"),
        ("{name: dac, alpha_init_factor: .inf}", "alpha_init_factor"),
        ("{name: dac, alpha: 1}", "alpha"),
    ],
)
def test_bad_parameters_name_the_key(strategy, key):
    assert_bad_strategy_parameter(strategy, key)


def test_edge_values_are_accepted():
    for entry in ("{name: dac, learn_epochs: 0}", "{name: dac, stage1_share: 1, learn_epochs: 1, alpha_final: 0.01}",
                  "{name: dac, stage1_epochs: 2, warmup_share: 0.99}",
                  "{name: dac, stage1_share: 0.01, learn_epochs: 0}"):
        assert len(load_config(SMOKE, [f"strategies=[{entry}]"]).strategies) == 1


def test_dac_warmup_must_leave_epochs():
    with pytest.raises(ConfigError, match="is not below the 2 stage-1 epoch") as err:
        load_config(SMOKE, ["strategies=[{name: dac, learn_epochs: 2}]", "trainer.epochs=4"])
    assert err.value.key == "strategies[0].learn_epochs"
    with pytest.raises(ConfigError, match="is not below the 1 stage-1 epoch") as err:  # the defaults need 4 epochs
        load_config(SMOKE, ["strategies=[{name: dac}]", "trainer.epochs=3"])
    assert err.value.key == "strategies[0].stage1_share"
    assert load_config(SMOKE, ["strategies=[{name: dac}]", "trainer.epochs=4"]).strategies[0].name == "dac"
    from robustlearn.data.datamodule import RobustDataModule

    hand_built = SimpleNamespace(max_epochs=3, datamodule=RobustDataModule(load_config(SMOKE)))  # what DAC needs
    with pytest.raises(ConfigError) as err:  # a trainer built by hand is checked at set-up
        DAC(DAC.Params(learn_epochs=3), position=1).setup(hand_built, None, "fit")
    assert err.value.key == "strategies[1].learn_epochs"
    with pytest.raises(ConfigError, match="needs what this run does not give it: `datamodule`"):
        DAC(DAC.Params(learn_epochs=3), position=1).setup(SimpleNamespace(max_epochs=3), None, "fit")


def test_dac_does_not_compose_with_another_loss_or_subset():
    with pytest.raises(ConfigError, match="both provide the training loss"):
        load_config(SMOKE, ["strategies=[{name: jocor}, {name: dac, learn_epochs: 0}]", "trainer.epochs=3"])
    with pytest.raises(ConfigError, match="both choose the training subset"):
        load_config(SMOKE, ["strategies=[{name: dac, learn_epochs: 0}, {name: random_pruning}]"])


def test_best_validation_is_chosen_within_the_final_stage(tmp_path):
    # Stage 1's network validates better here, but the method delivers stage 2's: the result must come from stage 2.
    from robustlearn.tracking.recorder import RunRecorder

    rec = RunRecorder(tmp_path, save_checkpoint=False)
    rec.rows = [{"epoch": e, "time_s": 1.0, "val/acc": v, "test/acc": t, "dac/stage": s}
                for e, (v, t, s) in enumerate([(0.9, 0.8, 1), (0.95, 0.85, 1), (0.5, 0.6, 2), (0.6, 0.7, 2)])]
    out = rec.summary()
    assert out["best_epoch"] == 3 and out["test_acc_at_best_val"] == 0.7 and out["val_acc_best"] == 0.6
    rec.rows = [{k: v for k, v in r.items() if k != "dac/stage"} for r in rec.rows]  # no stages: over every epoch
    assert rec.summary()["best_epoch"] == 1
