"""Critical-period strategies (Achille et al. 2019): the deficit's window edges and transforms (blur against an explicit
resize computation), its composition with a robust loss and a batch replacement, the Fisher-trace estimate against a
per-sample autograd loop in float64 and against its expectation, runs, resume exactness and parameter checks."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

import robustlearn.strategies.periods.deficit  # noqa: F401  (registers deficit)
import robustlearn.strategies.periods.fisher_trace  # noqa: F401  (registers fisher_trace)
from robustlearn.config import load_config
from robustlearn.module import RobustClassifier
from robustlearn.runner import fit
from robustlearn.strategies.periods.deficit import KINDS, Deficit, blur
from robustlearn.strategies.periods.fisher_trace import FisherTrace, estimate_fisher_trace, with_clean_bn_stats
from robustlearn.strategies.step import StepPlan
from tests.conftest import CONFIGS
from tests.protocol_helpers import assert_bad_strategy_parameter, assert_resumes_exactly, fit_method, rows, smoke
from tests.sync_guard import no_host_sync

# ---- blur against an explicit computation ----------------------------------------------------------------------------


def antialiased_down(n: int, factor: int) -> torch.Tensor:
    """(n // factor, n) matrix of the antialiased bilinear (triangle) downsampling: output i reads the inputs j with
    |j - c_i| < factor, c_i = factor (i + 1/2) - 1/2, with weights 1 - |j - c_i| / factor, normalised to sum 1."""
    m = n // factor
    out = torch.zeros(m, n, dtype=torch.float64)
    for i in range(m):
        c = factor * (i + 0.5) - 0.5
        for j in range(n):
            w = 1.0 - abs(j - c) / factor
            if w > 0:
                out[i, j] = w
        out[i] /= out[i].sum()
    return out


def bilinear_up(m: int, n: int) -> torch.Tensor:
    """(n, m) matrix of bilinear upsampling with half-pixel centres: output i reads src = (i + 1/2) m / n - 1/2,
    clamped at 0, between floor(src) and the next input (the last one repeats at the border)."""
    out = torch.zeros(n, m, dtype=torch.float64)
    for i in range(n):
        src = max((i + 0.5) * m / n - 0.5, 0.0)
        lo = min(int(math.floor(src)), m - 1)
        hi = min(lo + 1, m - 1)
        frac = src - lo
        out[i, lo] += 1.0 - frac
        out[i, hi] += frac
    return out


def test_blur_equals_the_explicit_down_and_up_on_28x28():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 28, 28, generator=g, dtype=torch.float64)
    down, up = antialiased_down(28, 4), bilinear_up(7, 28)  # 28 -> 7 -> 28
    assert down[1, 2:10].mul(4).tolist() == pytest.approx([0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125])
    expected = up @ down @ x @ down.T @ up.T
    torch.testing.assert_close(blur(x, 4), expected, rtol=0, atol=1e-12)
    d = Deficit(Deficit.Params(kind="blur", factor=4))
    batch = {"x": x, "y": torch.zeros(3, dtype=torch.long)}
    torch.testing.assert_close(d.transform(batch)["x"], expected, rtol=0, atol=1e-12)
    assert d.transform(batch)["x"].shape == x.shape
    # a constant image is kept (the weights sum to one, so the blur commutes with per-channel normalisation)
    torch.testing.assert_close(blur(torch.full((1, 1, 28, 28), 3.0, dtype=torch.float64), 4),
                               torch.full((1, 1, 28, 28), 3.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="larger than the image"):
        blur(torch.zeros(1, 1, 3, 3), 4)
    with pytest.raises(ValueError, match="image batches"):
        blur(torch.zeros(4, 10), 4)


# ---- the window ------------------------------------------------------------------------------------------------------


class FakeModule(SimpleNamespace):
    def log(self, *args, **kwargs):
        self.logged.append((args, kwargs))


def make_deficit(kind: str, unit: str = "epochs", start: int = 2, end: int = 4, seed: int = 0) -> Deficit:
    d = Deficit(Deficit.Params(kind=kind, start=start, end=end, unit=unit, factor=2))
    train_x = torch.randn(200, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 3.0 + 1.0
    d.prepare(seed, num_classes=5, train_x=train_x)
    return d


def image_batch() -> dict:
    g = torch.Generator().manual_seed(2)
    return {"x": torch.randn(6, 2, 8, 8, generator=g), "y": torch.tensor([0, 1, 2, 3, 4, 0]),
            "y_clean": torch.tensor([0, 1, 2, 3, 4, 1]), "index": torch.arange(6)}


@pytest.mark.parametrize("unit", ["epochs", "steps"])
@pytest.mark.parametrize("kind", KINDS)
def test_deficit_transforms_exactly_its_window(kind, unit):
    d = make_deficit(kind, unit, start=2, end=4)
    batch = image_batch()
    saved = {k: v.clone() for k, v in batch.items()}
    seen = {}
    for t in (0, 1, 2, 3, 4, 5):
        epoch, step = (t, 100 * t + 7) if unit == "epochs" else (0, t)
        module = FakeModule(trainer=SimpleNamespace(current_epoch=epoch, global_step=step, global_rank=0), logged=[])
        out = d.on_batch(batch, module)
        changed = not (torch.equal(out["x"], batch["x"]) and torch.equal(out["y"], batch["y"]))
        seen[t] = changed
        assert module.logged[0][0] == ("deficit/active", 1.0 if changed else 0.0)
        if changed:
            assert out is not batch
            torch.testing.assert_close(out["x"], d.transform(batch, step)["x"])
            torch.testing.assert_close(out["y_clean"], batch["y_clean"])  # never touched
        else:
            assert out is batch
    # start - 1 clean, start transformed, end - 1 transformed, end clean
    assert seen == {0: False, 1: False, 2: True, 3: True, 4: False, 5: False}
    for k, v in saved.items():  # nothing written into the loader's tensors
        assert torch.equal(batch[k], v)


def test_window_predicate_edges():
    d = Deficit(Deficit.Params(start=3, end=5, unit="steps"))
    assert [d.active(epoch=0, step=s) for s in range(7)] == [False, False, False, True, True, False, False]
    d = Deficit(Deficit.Params(start=0, end=1))
    assert [d.active(epoch=e, step=0) for e in range(3)] == [True, False, False]
    d = Deficit(Deficit.Params(start=0, end=0))  # the empty window of a sweep's control run
    assert not any(d.active(epoch=e, step=e) for e in range(3))
    d = Deficit(Deficit.Params(start=5, end=5))  # empty, and allowed past the end of training
    Deficit.check_config(d.params, {"trainer": {"epochs": 2, "max_steps": None}})
    assert not any(d.active(epoch=e, step=e) for e in range(8))


def test_vflip_noise_and_label_permutation_transforms():
    batch = image_batch()
    x, y = batch["x"], batch["y"]
    flipped = make_deficit("vflip").transform(batch)
    assert torch.equal(flipped["x"][:, :, 0], x[:, :, 7]) and torch.equal(flipped["x"][:, :, 7], x[:, :, 0])
    assert torch.equal(flipped["y"], y)

    noise = make_deficit("noise")
    big = {"x": torch.zeros(4000, 2, 8, 8), "y": torch.zeros(4000, dtype=torch.long)}
    z = noise.transform(big, step=3)["x"]
    # the training data's per-channel moments: means 1, std 3 (train_x above)
    train_x = torch.randn(200, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 3.0 + 1.0
    for c in range(2):
        assert z[:, c].mean().item() == pytest.approx(train_x[:, c].mean().item(), abs=0.02)
        assert z[:, c].std().item() == pytest.approx(train_x[:, c].std().item(), rel=0.01)
    assert torch.equal(noise.transform(batch, step=3)["x"], noise.transform(batch, step=3)["x"])  # seeded by the step
    assert not torch.equal(noise.transform(batch, step=3)["x"], noise.transform(batch, step=4)["x"])
    assert not torch.equal(noise.transform(batch, step=3, rank=1)["x"], noise.transform(batch, step=3)["x"])

    perm_d = make_deficit("label_permutation")
    perm = perm_d.permutation
    assert sorted(perm.tolist()) == list(range(5)) and all(perm[k] != k for k in range(5))  # a derangement
    out = perm_d.transform(batch)
    assert torch.equal(out["y"], perm[y]) and torch.equal(out["x"], x)
    assert torch.equal(make_deficit("label_permutation").permutation, perm)  # fixed by the seed
    assert any(not torch.equal(make_deficit("label_permutation", seed=s).permutation, perm) for s in range(1, 4))


# ---- runs ------------------------------------------------------------------------------------------------------------


def digits(root, *overrides: str):
    """Images (1, 8, 8) for the image deficits: scikit-learn's digits with a small MLP, a few seconds per run."""
    return load_config(CONFIGS / "base.yaml",
                       [f"output.root={root}", "model.hidden=[32]", "data.batch_size=128", "data.subset=384",
                        "optim.lr=0.1", "scheduler.name=none", "data.eval_batch_size=512", *overrides],
                       includes=[CONFIGS / "datasets" / "digits.yaml", CONFIGS / "models" / "mlp.yaml"])


class TrainedBatches(pl.Callback):
    """Per epoch: whether each trained batch is the blurred loader batch, and what the deficit's transform saw."""

    def __init__(self):
        self.blurred: dict[int, set[bool]] = {}
        self.clean: dict[int, set[bool]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trained = outputs["batch"]["x"]
        e = trainer.current_epoch
        self.clean.setdefault(e, set()).add(torch.equal(trained, batch["x"]))
        if "weight" not in outputs["batch"]:
            self.blurred.setdefault(e, set()).add(torch.allclose(trained, blur(batch["x"], 2), atol=1e-6))


def test_blur_window_in_a_run_with_a_robust_loss(tmp_path):
    seen = TrainedBatches()
    cfg = digits(tmp_path, "trainer.epochs=3",
                 "strategies=[{name: gce}, {name: deficit, kind: blur, factor: 2, start: 1, end: 2}]")
    result = fit(cfg, quiet=True, callbacks=[seen])
    assert result["status"] == "completed", result["error"]
    # epoch 0 (start - 1) and 2 (end) train on the loader's batches, 1 (start = end - 1) on blurred ones
    assert seen.clean == {0: {True}, 1: {False}, 2: {True}}
    assert seen.blurred == {0: {False}, 1: {True}, 2: {False}}
    got = rows(result["run_dir"])
    assert [float(r["deficit/active"]) for r in got] == [0.0, 1.0, 0.0]
    assert all(math.isfinite(float(r["val/acc"])) for r in got)


def test_deficit_after_a_batch_replacement_whatever_the_order(tmp_path, monkeypatch):
    inputs = []
    transform = Deficit.transform

    def recording(self, batch, step=0, rank=0):
        inputs.append(sorted(batch))
        return transform(self, batch, step, rank)

    monkeypatch.setattr(Deficit, "transform", recording)
    plans = []

    class Plan(pl.Callback):
        def on_train_end(self, trainer, pl_module):
            plans.append(StepPlan.of(pl_module))

    cfg = digits(tmp_path, "trainer.epochs=1",
                 "strategies=[{name: deficit, kind: vflip, start: 0, end: 1}, {name: example_presample, factor: 2}]")
    result = fit(cfg, quiet=True, callbacks=[Plan()])
    assert result["status"] == "completed", result["error"]
    assert [s.name for s in plans[0].on_batch] == ["example_presample", "deficit"]
    assert not Deficit.replaces_batch
    assert inputs and all("weight" in keys for keys in inputs)  # it transformed the replaced batch


def test_method_yamls_load_with_every_parameter():
    for name, strategy in (("deficit_blur", Deficit), ("fisher_trace", FisherTrace)):
        cfg = load_config(CONFIGS / "experiments" / "synthetic_smoke.yaml",
                          includes=[CONFIGS / "methods" / f"{name}.yaml"])
        entry = dict(cfg.strategies[0])
        assert cfg.method == name and entry.pop("name") == strategy.registry_name
        assert entry == dataclasses.asdict(strategy.Params())  # every key, at its default


# ---- the Fisher trace ------------------------------------------------------------------------------------------------


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 4)).double()
    net[1].running_mean.copy_(torch.randn(5, dtype=torch.float64))
    net[1].running_var.copy_(torch.rand(5, dtype=torch.float64) + 0.5)
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(5, dtype=torch.float64))
        net[1].bias.copy_(torch.randn(5, dtype=torch.float64))
    return net.train()


def direct_fisher(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, samples: int) -> dict[str, float]:
    """Per sample, one autograd call: ‖∇_w log p_w(ŷ|x_i)‖² by layer, averaged over the P·S pairs (eval mode)."""
    net.eval()
    owners = {name: [p for p in m.parameters(recurse=False)] for name, m in net.named_modules()
              if list(m.parameters(recurse=False))}
    sums = dict.fromkeys(owners, 0.0)
    for i in range(len(x)):
        for s in range(samples):
            y_hat = int(labels[i * samples + s])
            log_p = torch.log_softmax(net(x[i : i + 1]), dim=1)[0, y_hat]
            for name, params in owners.items():
                grads = torch.autograd.grad(log_p, params, retain_graph=True)
                sums[name] += sum(float(g.pow(2).sum()) for g in grads)
    net.train()
    return {k: v / (len(x) * samples) for k, v in sums.items()}


def test_fisher_trace_matches_a_per_sample_loop_in_float64():
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rng = torch.get_rng_state()
    est = estimate_fisher_trace(net, x, samples=3, generator=torch.Generator().manual_seed(4), batch_size=4)
    assert torch.equal(torch.get_rng_state(), rng)  # the global stream is not drawn from: training is unchanged
    assert net.training and net[1].training  # modes restored
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # running statistics unchanged
    assert len(est.labels) == 21 and est.labels.max() < 4
    direct = direct_fisher(net, x, est.labels, samples=3)
    assert set(est.layers) == set(direct) == {"0", "1", "3"}
    for name, value in direct.items():
        assert abs(est.layers[name] - value) / value < 1e-6, name
    assert abs(est.total - sum(direct.values())) / sum(direct.values()) < 1e-6
    # the draws are the generator's, so a repeated estimate is the same number
    again = estimate_fisher_trace(net, x, samples=3, generator=torch.Generator().manual_seed(4), batch_size=4)
    assert again.total == est.total and torch.equal(again.labels, est.labels)


def test_fisher_trace_samples_the_label_from_the_model():
    # many draws: the estimate approaches E_x sum_y p(y|x) |grad log p(y|x)|^2, the Fisher's own expectation
    net = tiny_net()
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    est = estimate_fisher_trace(net, x, samples=3000, generator=torch.Generator().manual_seed(6), batch_size=3)
    net.eval()
    exact = 0.0
    for i in range(3):
        log_p = torch.log_softmax(net(x[i : i + 1]), dim=1)[0]
        for y in range(4):
            grads = torch.autograd.grad(log_p[y], list(net.parameters()), retain_graph=True)
            exact += float(log_p[y].exp()) * sum(float(g.pow(2).sum()) for g in grads) / 3
    net.train()
    assert est.total == pytest.approx(exact, rel=0.05)
    counts = torch.bincount(est.labels[:3000], minlength=4).double() / 3000  # probe sample 0's draws
    torch.testing.assert_close(counts, torch.softmax(net.eval()(x[:1]), 1)[0], atol=0.03, rtol=0)


def test_clean_bn_statistics_are_the_probes_own_and_leave_the_training_network_alone():
    # The batch-norm confound: running statistics gathered on other inputs (blurred batches) than the probe. With the
    # re-estimation, the statistics are the probe's own mean and (biased-per-batch, unbiased-stored) variance, so the
    # measured trace no longer depends on what the training network's running statistics hold.
    net = tiny_net()
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    twin = with_clean_bn_stats(net, x, batch_size=8)  # one batch: the statistics are exactly the batch's
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items()) and net.training
    h = net[0](x).detach()
    torch.testing.assert_close(twin[1].running_mean, h.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(twin[1].running_var, h.var(0, unbiased=True), rtol=0, atol=1e-12)

    def trace(bn_mean: torch.Tensor, clean: bool) -> float:
        other = tiny_net()
        other[1].running_mean.copy_(bn_mean)
        measured = with_clean_bn_stats(other, x, batch_size=4) if clean else other
        return estimate_fisher_trace(measured, x, samples=2, generator=torch.Generator().manual_seed(1)).total

    shifted = torch.full((5,), 3.0, dtype=torch.float64)
    zero = torch.zeros(5, dtype=torch.float64)
    assert trace(zero, clean=True) == pytest.approx(trace(shifted, clean=True), rel=1e-12)
    assert abs(trace(zero, clean=False) - trace(shifted, clean=False)) > 1e-3 * abs(trace(zero, clean=False))
    plain = nn.Sequential(nn.Linear(3, 4)).double()
    assert with_clean_bn_stats(plain, x) is plain  # nothing to re-estimate


def fisher_columns(run_dir) -> list[str]:
    return [k for k in rows(run_dir)[0] if k.startswith("fisher_trace/")]


def test_fisher_trace_every_n_steps(tmp_path):
    seen = []

    class Keep(pl.Callback):
        def on_train_end(self, trainer, pl_module):
            seen.extend(s for s in trainer.callbacks if isinstance(s, FisherTrace))

    cfg, result = fit_method("fisher_trace", tmp_path, "strategies.0.every_n_steps=2", "strategies.0.probe_size=32",
                             "data.n_train=300", callbacks=[Keep()])
    assert result["status"] == "completed", result["error"]
    steps = [h["step"] for h in seen[0].history]
    assert steps == [2, 4, 6, 8, 10] and len(seen[0].probe) == 32  # 5 steps per epoch (270 samples), 2 epochs
    means = [float(r["fisher_trace/total"]) for r in rows(result["run_dir"])]
    by_epoch = [[h["total"] for h in seen[0].history if h["epoch"] == e] for e in (0, 1)]
    assert means == pytest.approx([sum(v) / len(v) for v in by_epoch], rel=1e-6)


def test_resume_exact_with_a_deficit_and_the_fisher_trace(tmp_path):
    over = ["trainer.epochs=3", "data.n_train=300",
            "strategies=[{name: deficit, kind: noise, start: 1, end: 3}, {name: fisher_trace, probe_size: 48}]"]
    _, resumed = assert_resumes_exactly(tmp_path, over, stop_epoch=2)  # interrupted inside the window
    got = rows(resumed["run_dir"])
    assert [float(r["deficit/active"]) for r in got] == [0.0, 1.0, 1.0]
    # the measurement: per layer and total, every epoch, and its history file rewritten whole after the resume
    assert {k for k in got[0] if k.startswith("fisher_trace/")} == {
        "fisher_trace/total", "fisher_trace/seconds", "fisher_trace/net.1", "fisher_trace/net.5"}
    for r in got:
        layers = float(r["fisher_trace/net.1"]) + float(r["fisher_trace/net.5"])
        assert float(r["fisher_trace/total"]) == pytest.approx(layers, rel=1e-6) and layers > 0
        assert float(r["fisher_trace/seconds"]) > 0
    with open(Path(resumed["run_dir"]) / "fisher_trace.csv") as f:
        history = list(csv.DictReader(f))
    assert [int(h["epoch"]) for h in history] == [0, 1, 2]
    assert [float(h["total"]) for h in history] == pytest.approx([float(r["fisher_trace/total"]) for r in got])


def test_no_host_sync_in_the_steps(tmp_path, monkeypatch):
    step = RobustClassifier.training_step

    def guarded(self, batch, batch_idx):
        with no_host_sync("training_step"):
            return step(self, batch, batch_idx)

    def watch(s):
        hook = s.on_train_batch_end

        def wrapped(*args, **kwargs):
            with no_host_sync(f"{s.name}.on_train_batch_end"):
                return hook(*args, **kwargs)
        s.on_train_batch_end = wrapped

    class Watch(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            for s in trainer.callbacks:
                if isinstance(s, (Deficit, FisherTrace)):
                    watch(s)

    monkeypatch.setattr(RobustClassifier, "training_step", guarded)
    both = ("strategies=[{name: deficit, kind: noise, end: 1}, {name: deficit, kind: label_permutation, end: 1}, "
            "{name: fisher_trace, probe_size: 16}]")
    result = fit(smoke(tmp_path, "trainer.epochs=1", "data.n_train=300", both), quiet=True, callbacks=[Watch()])
    assert result["status"] == "completed", result["error"]
    assert float(rows(result["run_dir"])[0]["deficit/active"]) == 1.0


# ---- parameters ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "key"), [
    ("{name: deficit, kind: sharpen}", "kind"),
    ("{name: deficit, unit: batches}", "unit"),
    ("{name: deficit, start: -1}", "start"),
    ("{name: deficit, start: 1.5}", "start"),
    ("{name: deficit, start: 2, end: 1}", "end"),
    ("{name: deficit, factor: 1}", "factor"),
    ("{name: deficit, factor: true}", "factor"),
    ("{name: deficit, start: 2, end: 5}", "start"),  # smoke: trainer.epochs = 2, the window would never open
    ("{name: fisher_trace, probe_size: 0}", "probe_size"),
    ("{name: fisher_trace, samples: 0}", "samples"),
    ("{name: fisher_trace, every_n_steps: 0}", "every_n_steps"),
    ("{name: fisher_trace, every_n_steps: 2.5}", "every_n_steps"),
    ("{name: fisher_trace, batch_size: 0}", "batch_size"),
    ("{name: fisher_trace, bn: train}", "bn"),
])
def test_bad_parameters_are_refused_naming_the_key(entry, key):
    assert_bad_strategy_parameter(entry, key)


def test_step_windows_may_start_past_the_epochs():
    load_config(CONFIGS / "experiments" / "synthetic_smoke.yaml",
                ["strategies=[{name: deficit, kind: noise, unit: steps, start: 40, end: 60}]"])
