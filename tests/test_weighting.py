"""Importance weighting: class weights and per-sample weights. The weighted loss on hand-computed cases (normalised
and not), composition with a loss provider and with a presampler's incoming weights, the oracle flip-mask rule
(mapping to training positions, exactly zero gradient from flipped samples, `oracle` in result.json), weight files in
each format and the bad ones refused naming the key, bad parameters refused at load, resume and host syncs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

import robustlearn.strategies.weighting.class_weights as cw_module
import robustlearn.strategies.weighting.sample_weights  # noqa: F401  (registers sample_weights)
from robustlearn.config import load_config
from robustlearn.data.datamodule import RobustDataModule
from robustlearn.errors import ConfigError
from robustlearn.module import RobustClassifier
from robustlearn.runner import fit
from robustlearn.strategies.diagnostics import Diagnostics
from robustlearn.strategies.step import StepPlan, strategy_step
from robustlearn.strategies.weighting.class_weights import ClassWeights, class_weight_vector
from robustlearn.strategies.weighting.sample_weights import SampleWeights, read_weights, train_flip_mask
from tests.conftest import SMOKE
from tests.protocol_helpers import assert_bad_strategy_parameter, assert_resumes_exactly, fit_method, rows, smoke
from tests.sync_guard import no_host_sync

QUIET = SimpleNamespace(log=lambda *args, **kwargs: None)  # a module for strategy_step that logs nowhere


def step(strategies, logits, batch, forward=None):
    """strategy_step with these strategies on fixed logits (or a network), the returned output dict."""
    forward = forward or (lambda x: logits)
    return strategy_step(QUIET, batch, forward, StepPlan(strategies))


def with_vector(s, vector):
    s.vector = vector.to(torch.float32)
    return s


# ---- class weights: the formula ------------------------------------------------------------------------------------

# 4 samples, 2 classes, labels [0, 0, 0, 1]; softmax([0, ln 3]) = [1/4, 3/4]: CE = [ln 4, ln 4, ln 4, ln 4/3]
LOGITS4 = torch.tensor([[0.0, math.log(3.0)]] * 4)
Y4 = torch.tensor([0, 0, 0, 1])
CE4 = [math.log(4.0)] * 3 + [math.log(4.0 / 3.0)]


@pytest.mark.parametrize("normalize", [False, True])
def test_ratio_4_to_1_by_hand(normalize):
    params = ClassWeights.Params(ratio=4.0, label=0, normalize=normalize)
    v = class_weight_vector(params, 2, Y4)  # the training split is these four samples
    # v = [4, 1]; normalised: mean of v[y] over the split = (3·4 + 1) / 4 = 13/4, so v = [16/13, 4/13]
    expected_v = [16 / 13, 4 / 13] if normalize else [4.0, 1.0]
    torch.testing.assert_close(v, torch.tensor(expected_v, dtype=torch.float64))
    out = step([with_vector(ClassWeights(params), v)], LOGITS4, {"x": None, "y": Y4, "index": torch.arange(4)})
    # Σ w l / B = (3 · 4 ln 4 + ln 4/3) / 4, times 4/13 when normalised
    by_hand = (3 * 4 * math.log(4.0) + math.log(4.0 / 3.0)) / 4 * (4 / 13 if normalize else 1.0)
    assert out["loss"].item() == pytest.approx(by_hand, rel=1e-6)
    torch.testing.assert_close(out["per_sample"], torch.tensor(CE4))
    torch.testing.assert_close(out["weights"], torch.tensor(expected_v)[Y4])


def test_list_form_and_normalisation_uses_the_training_counts():
    params = ClassWeights.Params(weights=[1.0, 2.0, 3.0])
    labels = torch.tensor([0, 0, 1, 2, 2, 2])  # counts 2, 1, 3: mean of v[y] = (2 + 2 + 9) / 6 = 13/6
    torch.testing.assert_close(class_weight_vector(params, 3, labels),
                               torch.tensor([6 / 13, 12 / 13, 18 / 13], dtype=torch.float64))
    raw = class_weight_vector(ClassWeights.Params(weights=[1.0, 2.0, 3.0], normalize=False), 3)
    torch.testing.assert_close(raw, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert class_weight_vector(params, 3, labels)[labels].mean().item() == pytest.approx(1.0)


def test_class_weights_multiply_the_incoming_weights():
    s = with_vector(ClassWeights(ClassWeights.Params(ratio=4.0, label=0, normalize=False)), torch.tensor([4.0, 1.0]))
    incoming = torch.tensor([0.5, 2.0, 1.0, 3.0])
    out = s.weights(torch.zeros(4), None, {"y": Y4}, incoming, None)
    torch.testing.assert_close(out, torch.tensor([2.0, 8.0, 4.0, 3.0]))


# ---- class weights: composition in real runs -----------------------------------------------------------------------

class FirstStep(pl.Callback):
    """The first training step's outputs and the run's strategies."""

    def __init__(self):
        self.out = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.out is None:
            self.out = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in outputs.items()}
            self.strategies = [cb for cb in trainer.callbacks if isinstance(cb, (ClassWeights, SampleWeights))]


def test_gce_and_class_weights_in_one_run(tmp_path):
    first = FirstStep()
    result = fit(smoke(tmp_path, "strategies=[{name: gce, q: 0.7}, {name: class_weights, ratio: 8, label: 2}]",
                       "trainer.epochs=1", "trainer.max_steps=3"), quiet=True, callbacks=[first])
    assert result["status"] == "completed", result["error"]
    out, b = first.out, first.out["batch"]
    p_y = torch.softmax(out["logits"].double(), 1).gather(1, b["y"][:, None]).squeeze(1)
    torch.testing.assert_close(out["per_sample"].double(), (1 - p_y**0.7) / 0.7)  # GCE's loss
    # class 2 weighs 8, the others 1; normalised over the 1800 training labels (balanced: about (8 + 3) / 4)
    v = first.strategies[0].vector.cpu()
    assert v[2] / v[0] == pytest.approx(8.0) and v[0] == v[1] == v[3]
    assert v[0].item() == pytest.approx(4 / 11, rel=0.02)
    torch.testing.assert_close(out["weights"], v[b["y"]])
    assert out["loss"].item() == pytest.approx((out["weights"] * out["per_sample"]).sum().item() / len(b["y"]),
                                               rel=1e-5)


def test_class_weights_after_a_presampler(tmp_path):
    first = FirstStep()
    result = fit(smoke(tmp_path, "strategies=[{name: class_weights, weights: [1, 2, 3, 4], normalize: false}, "
                                 "{name: example_presample, factor: 3}]", "trainer.max_steps=3"),
                 quiet=True, callbacks=[first])
    assert result["status"] == "completed", result["error"]
    b = first.out["batch"]
    assert "weight" in b and not torch.allclose(b["weight"], torch.ones_like(b["weight"]))
    # the presampler's importance weights 1 / (B p_i), times the class weight of the observed label
    torch.testing.assert_close(first.out["weights"], b["weight"] * (b["y"] + 1).float())


# ---- sample weights: the oracle flip-mask rule ---------------------------------------------------------------------

def fake_dm():
    """6 noisy samples, flipped [F, T, T, F, F, T]; the training split holds samples [0, 2, 3, 5] (sorted)."""
    info = SimpleNamespace(flip_mask=np.array([False, True, True, False, False, True]))
    return SimpleNamespace(noise_info=info, train_ids=np.array([0, 2, 3, 5]), train_size=4)


def test_flip_mask_maps_to_training_positions_by_hand():
    assert train_flip_mask(fake_dm()).tolist() == [False, True, False, True]
    u = SampleWeights(SampleWeights.Params(flipped=0.0)).build(fake_dm())
    torch.testing.assert_close(u, torch.tensor([2.0, 0.0, 2.0, 0.0], dtype=torch.float64))  # mean 1 over the split
    raw = SampleWeights(SampleWeights.Params(flipped=0.25, normalize=False)).build(fake_dm())
    torch.testing.assert_close(raw, torch.tensor([1.0, 0.25, 1.0, 0.25], dtype=torch.float64))


def test_flip_mask_of_the_real_training_split(tmp_path):
    dm = RobustDataModule(smoke(tmp_path, "noise.rate=0.4")).load()
    train = dm.splits["train"]
    mask = train_flip_mask(dm)
    assert torch.equal(mask, train["y"] != train["y_clean"])  # y_clean read here as a check only
    naive = torch.from_numpy(dm.noise_info.flip_mask[: dm.train_size])
    assert not torch.equal(mask, naive)  # the validation hold-out shifts positions: the ids matter


def test_zero_weight_gives_flipped_samples_exactly_zero_gradient():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    batch = {"x": x, "y": torch.tensor([0, 1, 1, 0]), "index": torch.tensor([2, 3, 0, 1])}  # flipped: rows 1, 3

    def grads(strategy, b):
        net.zero_grad()
        strategy_step(QUIET, b, net, StepPlan([strategy])).get("loss").backward()
        return [p.grad.clone() for p in net.parameters()]

    def changed_flipped(b):  # other inputs and labels on the flipped rows
        out = dict(b, x=b["x"].clone(), y=b["y"].clone())
        out["x"][[1, 3]] = 100.0 * torch.randn(2, 3, dtype=torch.float64)
        out["y"][[1, 3]] = 1 - out["y"][[1, 3]]
        return out

    oracle = SampleWeights(SampleWeights.Params(flipped=0.0))
    oracle.vector = oracle.build(fake_dm())  # float64 here: [2, 0, 2, 0] by position
    g = grads(oracle, batch)
    assert all(torch.equal(a, b) for a, b in zip(g, grads(oracle, changed_flipped(batch))))
    net.zero_grad()  # the same as the mean loss over the clean rows 0 and 2
    (F.cross_entropy(net(x[[0, 2]]), batch["y"][[0, 2]], reduction="sum") * 2.0 / 4).backward()
    for a, p in zip(g, net.parameters()):
        torch.testing.assert_close(a, p.grad)
    half = SampleWeights(SampleWeights.Params(flipped=0.5))
    half.vector = half.build(fake_dm())  # a flipped weight > 0: the flipped rows do move the gradient
    assert not all(torch.equal(a, b) for a, b in zip(grads(half, batch), grads(half, changed_flipped(batch))))


def test_oracle_run_records_oracle_and_drops_exactly_the_flipped(tmp_path):
    first = FirstStep()
    diagnostics = Diagnostics(position=1)
    cfg, result = fit_method("sample_weights_oracle", tmp_path, "trainer.epochs=1", "noise.rate=0.4",
                             callbacks=[first, diagnostics])
    assert result["status"] == "completed", result["error"]
    assert json.loads((Path(result["run_dir"]) / "result.json").read_text())["oracle"] == "true flip mask"
    b, w = first.out["batch"], first.out["weights"]
    flipped = b["y"] != b["y_clean"]
    assert flipped.any() and (w[flipped] == 0).all() and (w[~flipped] > 0).all()
    row = rows(result["run_dir"])[-1]
    assert float(row["diagnostics/batch_kept_precision"]) == 1.0  # kept = clean, over the whole epoch
    assert float(row["diagnostics/batch_kept_recall"]) == 1.0
    assert float(row["diagnostics/sample_weights_kept_precision"]) == 1.0


# ---- sample weights: files -----------------------------------------------------------------------------------------

VALUES = np.array([0.0, 1.5, 2.0, 0.25])


def write(path: Path, values) -> Path:
    if path.suffix == ".npy":
        np.save(path, np.asarray(values))
    elif path.suffix == ".pt":
        torch.save(torch.as_tensor(values), path)
    else:
        path.write_text("".join(f"{v}\n" for v in values))
    return path


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".csv"])
def test_each_file_format(tmp_path, suffix):
    np.testing.assert_array_equal(read_weights(write(tmp_path / f"w{suffix}", VALUES)), VALUES)


def test_csv_with_a_header_and_a_column(tmp_path):
    (tmp_path / "h.csv").write_text("weight\n1\n2\n3\n")
    np.testing.assert_array_equal(read_weights(tmp_path / "h.csv"), [1.0, 2.0, 3.0])
    np.save(tmp_path / "col.npy", np.array([[1.0], [2.0]]))
    np.testing.assert_array_equal(read_weights(tmp_path / "col.npy"), [1.0, 2.0])


def assert_bad_file(path: Path, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [f"strategies=[{{name: sample_weights, file: {path}}}]"])
    assert err.value.key == "strategies[0].file"
    message = str(err.value)
    assert "strategies[0].file" in message and str(path) in message and words in message, message


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".csv"])
def test_negative_and_nan_weights_refused_naming_the_key_and_file(tmp_path, suffix):
    assert_bad_file(write(tmp_path / f"neg{suffix}", [1.0, -0.5, 2.0]), "negative")
    assert_bad_file(write(tmp_path / f"nan{suffix}", [1.0, float("nan"), 2.0]), "not finite")


def test_other_bad_files_refused(tmp_path):
    assert_bad_file(write(tmp_path / "inf.npy", [1.0, float("inf")]), "not finite")
    assert_bad_file(write(tmp_path / "zeros.npy", [0.0, 0.0]), "every weight is 0")
    assert_bad_file(tmp_path / "missing.npy", "does not exist")
    assert_bad_file(write(tmp_path / "grid.npy", np.ones((3, 2))), "1-D")
    (tmp_path / "text.csv").write_text("a\nb\n")
    assert_bad_file(tmp_path / "text.csv", "cannot be read")
    torch.save({"w": torch.ones(3)}, tmp_path / "dict.pt")
    assert_bad_file(tmp_path / "dict.pt", "not a tensor")
    assert_bad_strategy_parameter(f"{{name: sample_weights, file: {tmp_path / 'w.txt'}}}", "file")


def test_wrong_length_refused_naming_the_key_and_file(tmp_path):
    path = write(tmp_path / "short.npy", np.ones(100))
    result = fit(smoke(tmp_path, f"strategies=[{{name: sample_weights, file: {path}}}]", "trainer.epochs=1"),
                 quiet=True)
    assert result["status"] == "failed"
    assert "strategies[0].file" in result["error"] and str(path) in result["error"]
    assert "100 weights" in result["error"] and "1800 samples" in result["error"]


def test_file_weights_and_class_weights_in_a_run_without_host_syncs(tmp_path, monkeypatch):
    step_fn = RobustClassifier.training_step

    def guarded(self, batch, batch_idx):
        with no_host_sync():
            return step_fn(self, batch, batch_idx)

    monkeypatch.setattr(RobustClassifier, "training_step", guarded)
    u = np.random.default_rng(0).uniform(0.0, 3.0, 1800)
    path = write(tmp_path / "u.npy", u)
    first = FirstStep()
    result = fit(smoke(tmp_path, f"strategies=[{{name: sample_weights, file: {path}, normalize: false}}, "
                                 "{name: class_weights, weights: [1, 1, 1, 5]}]", "trainer.max_steps=3"),
                 quiet=True, callbacks=[first])
    assert result["status"] == "completed", result["error"]
    b = first.out["batch"]
    v = first.strategies[1].vector.cpu()
    expected = torch.from_numpy(u).float()[b["index"]] * v[b["y"]]
    torch.testing.assert_close(first.out["weights"], expected)


# ---- parameters ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [300, 0.001, 0, -4, ".nan"])
def test_ratio_out_of_range_refused(ratio):
    assert_bad_strategy_parameter(f"{{name: class_weights, ratio: {ratio}, label: 0}}", "ratio")


def test_ratio_limits_accepted():
    for ratio in (256, 0.00390625):
        load_config(SMOKE, [f"strategies=[{{name: class_weights, ratio: {ratio}, label: 3}}]"])


def test_bad_class_weight_parameters_refused():
    assert_bad_strategy_parameter("{name: class_weights, ratio: 2, label: 4}", "label")  # synthetic K = 4
    assert_bad_strategy_parameter("{name: class_weights, ratio: 2}", "label")
    assert_bad_strategy_parameter("{name: class_weights, ratio: 2, label: -1}", "label")
    assert_bad_strategy_parameter("{name: class_weights, weights: [1, 2, 3]}", "weights")  # 3 for 4 classes
    assert_bad_strategy_parameter("{name: class_weights, weights: [1, 0, 1, 1]}", "weights")
    assert_bad_strategy_parameter("{name: class_weights, weights: [1, 1, 1, 1], label: 0}", "label")
    assert_bad_strategy_parameter("{name: class_weights, weights: [1, 1, 1, 1], ratio: 2, label: 0}", "ratio")
    assert_bad_strategy_parameter("{name: class_weights}", "weights")


def test_class_checked_in_setup_where_unknown_at_load(tmp_path, monkeypatch):
    monkeypatch.setattr(cw_module, "configured_num_classes", lambda cfg: None)
    cfg = smoke(tmp_path, "strategies=[{name: class_weights, ratio: 2, label: 7}]", "trainer.epochs=1")
    result = fit(cfg, quiet=True)
    assert result["status"] == "failed" and "strategies[0].label" in result["error"] and "4 classes" in result["error"]


def test_bad_sample_weight_parameters_refused(tmp_path):
    assert_bad_strategy_parameter("{name: sample_weights, flipped: -0.5}", "flipped")
    assert_bad_strategy_parameter("{name: sample_weights, flipped: .inf}", "flipped")
    assert_bad_strategy_parameter("{name: sample_weights}", "file")
    path = write(tmp_path / "w.npy", VALUES)
    assert_bad_strategy_parameter(f"{{name: sample_weights, file: {path}, flipped: 0}}", "flipped")


def test_oracle_flag():
    assert SampleWeights(SampleWeights.Params(flipped=0.0)).oracle == "true flip mask"
    assert SampleWeights(SampleWeights.Params(file="w.npy")).oracle is None
    assert ClassWeights(ClassWeights.Params(ratio=2.0, label=0)).oracle is None


# ---- resume --------------------------------------------------------------------------------------------------------

def test_resume_is_exact_and_a_changed_file_is_refused(tmp_path):
    path = write(tmp_path / "u.npy", np.random.default_rng(1).uniform(0.5, 2.0, 450))
    over = [f"strategies=[{{name: class_weights, ratio: 16, label: 1}}, {{name: sample_weights, file: {path}}}]",
            "data.n_train=500", "model.dropout=0.2"]  # 450 training samples, 2 epochs
    straight, resumed = assert_resumes_exactly(tmp_path, over, stop_epoch=1)
    assert resumed["status"] == "completed" and resumed["epochs_done"] == 2
    write(path, np.ones(450))  # another file under the same name: its checkpoint's weights no longer match
    again = fit(smoke(tmp_path / "b", *over, "resume=true"), quiet=True)
    assert again["status"] == "failed" and "differ" in again["error"]
