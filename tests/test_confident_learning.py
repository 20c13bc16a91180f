"""Confident learning: cleanlab's flags and the corrected labels on a hand-made case, flagged samples against the
true flip mask on the synthetic data with 30 % noise (the mask read here only), drop and relabel in real fits, the
main run untouched by the search, bad parameters, and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from cleanlab.filter import find_label_issues

import robustlearn.strategies.noisy.confident_learning as cl_module
from robustlearn.runner import fit
from robustlearn.strategies.noisy.confident_learning import FILTERS, ConfidentLearning
from tests.conftest import CONFIGS
from tests.protocol_helpers import assert_bad_strategy_parameter, assert_resumes_exactly, rows, smoke
from tests.sync_guard import _WatchStrategies

NOISY = ["noise.rate=0.3", "output.save_checkpoint=false"]


def hand_case(seed: int = 0):
    """300 samples, 3 classes, confident out-of-sample probabilities; the labels of 30 samples flipped."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(3), 100)
    probs = np.full((300, 3), 0.05)
    probs[np.arange(300), true] = 0.9
    probs += rng.uniform(0, 0.02, probs.shape)
    probs /= probs.sum(1, keepdims=True)
    labels = true.copy()
    flipped = rng.choice(300, 30, replace=False)
    labels[flipped] = (true[flipped] + 1) % 3
    return labels, probs, true, flipped


def test_flags_are_cleanlabs_and_relabels_are_the_argmax():
    labels, probs, true, flipped = hand_case()
    s = ConfidentLearning(ConfidentLearning.Params(action="relabel"))
    s.apply(probs, labels)
    flags = s.issues.values.numpy()
    np.testing.assert_array_equal(flags, find_label_issues(labels, probs, filter_by="prune_by_noise_rate"))
    assert set(np.flatnonzero(flags)) == set(flipped)  # every flip and nothing else on this clear case
    np.testing.assert_array_equal(s.labels.values.numpy(), true)  # flagged: argmax p̂; the others: unchanged
    assert s.kept_mask() is None  # relabel keeps every sample
    batch = {"x": torch.zeros(3, 2), "y": torch.tensor(labels[flipped[:3]]), "index": torch.tensor(flipped[:3])}
    out = s.on_batch(batch, None)
    assert out["y"].tolist() == true[flipped[:3]].tolist() and batch["y"].tolist() == labels[flipped[:3]].tolist()
    drop = ConfidentLearning()
    drop.apply(probs, labels)
    assert drop.on_batch(batch, None) is batch  # drop leaves the labels alone
    assert drop.kept_mask().tolist() == (~flags).tolist()


@pytest.mark.parametrize("filter_by", ["prune_by_class", "both", "confident_learning", "predicted_neq_given"])
def test_every_cleanlab_filter_passes_through(filter_by):
    labels, probs, _, _ = hand_case(1)
    s = ConfidentLearning(ConfidentLearning.Params(filter_by=filter_by))
    s.apply(probs, labels)
    np.testing.assert_array_equal(s.issues.values.numpy(), find_label_issues(labels, probs, filter_by=filter_by))


class Capture(pl.Callback):
    """The run's strategy and datamodule; with relabel, whether each step's labels were the corrected ones."""

    batches = mismatches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        s = next(c for c in trainer.callbacks if isinstance(c, ConfidentLearning))
        if s.params.action == "relabel":
            trained = outputs["batch"]
            self.batches += 1
            self.mismatches += int((trained["y"] != s.labels.values[trained["index"]]).sum())

    def on_train_end(self, trainer, pl_module):
        self.strategy = next(c for c in trainer.callbacks if isinstance(c, ConfidentLearning))
        self.dm = trainer.datamodule


def test_flags_the_flipped_samples_and_drops_them(tmp_path, guarded_step):
    cap = Capture()
    cfg = smoke(tmp_path, *NOISY, "trainer.epochs=1",
                "strategies=[{name: confident_learning, folds: 3, cv_epochs: 1}]")
    result = fit(cfg, quiet=True, callbacks=[cap, _WatchStrategies()])
    assert result["status"] == "completed", result["error"]
    s, dm = cap.strategy, cap.dm
    flags = s.issues.values.cpu().numpy()
    flipped = dm.noise_info.flip_mask[dm.train_ids]  # the truth, read by this test only
    assert flipped.mean() == pytest.approx(0.3, abs=0.03)
    precision = (flags & flipped).sum() / flags.sum()
    recall = (flags & flipped).sum() / flipped.sum()
    # measured (3 folds of 1 epoch; seeds 0, 1, 2): precision 0.973, 0.993, 0.976; recall 0.862, 0.824, 0.857
    # (5 folds of 2 epochs, seed 0: 0.998 and 0.963)
    assert precision > 0.9 and recall > 0.75
    assert dm.train_subset.tolist() == np.flatnonzero(~flags).tolist()  # the run trained without them
    row = rows(result["run_dir"])[0]
    assert float(row["confident_learning/flagged"]) == pytest.approx(flags.mean(), abs=1e-6)
    assert float(row["confident_learning/cv_seconds"]) > 0
    # the out-of-sample p̂ really is out of sample: its argmax disagrees with most flipped labels
    assert (s.pred_probs.argmax(1)[flipped] != dm.train_tensors()["y"].cpu().numpy()[flipped]).mean() > 0.8
    assert result["oracle"] is None


def test_relabel_corrects_labels_and_trains_on_them(tmp_path, guarded_step):
    cap = Capture()
    cfg = smoke(tmp_path, *NOISY, "trainer.epochs=1",
                "strategies=[{name: confident_learning, action: relabel, folds: 3, cv_epochs: 1}]")
    result = fit(cfg, quiet=True, callbacks=[cap, _WatchStrategies()])
    assert result["status"] == "completed", result["error"]
    s, dm = cap.strategy, cap.dm
    tensors = dm.train_tensors()
    noisy_acc = (tensors["y"] == tensors["y_clean"]).float().mean().item()
    corrected_acc = (s.labels.values.cpu() == tensors["y_clean"].cpu()).float().mean().item()
    # measured (seeds 0, 1, 2): 0.70 of the noisy labels are right; 0.948, 0.926, 0.948 of the corrected ones
    assert noisy_acc < 0.75 and corrected_acc > 0.9
    assert dm.train_subset is None  # every sample trains
    assert cap.batches > 0 and cap.mismatches == 0  # every step trained on the corrected labels


class RngAtTrainStart(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.state = torch.get_rng_state()


def test_the_search_leaves_the_main_runs_randomness_alone(tmp_path):
    # the fold models are seeded and drawn inside a forked RNG: the main run's global RNG (dropout, mixup draws)
    # is where a run without the search has it when training starts
    over = ["trainer.epochs=1", "output.save_checkpoint=false", "data.n_train=300"]
    plain, searched = RngAtTrainStart(), RngAtTrainStart()
    fit(smoke(tmp_path / "ce", *over), quiet=True, callbacks=[plain])
    fit(smoke(tmp_path / "cl", *over, "strategies=[{name: confident_learning, folds: 2, cv_epochs: 1}]"),
        quiet=True, callbacks=[searched])
    assert torch.equal(plain.state, searched.state)


@pytest.mark.slow  # six fits with two searches each: about 10 s on an idle 2-core machine
@pytest.mark.parametrize("action", ["drop", "relabel"])
def test_resumes_exactly(tmp_path, monkeypatch, action):
    ticks = iter(range(1000))
    monkeypatch.setattr(cl_module, "_clock", lambda: float(next(ticks)))  # cv_seconds: the only timing logged
    straight, _ = assert_resumes_exactly(
        tmp_path, ["trainer.epochs=3", "noise.rate=0.3",
                   f"strategies=[{{name: confident_learning, action: {action}, folds: 2, cv_epochs: 1}}]"])
    assert straight["status"] == "completed"


@pytest.mark.parametrize(("entry", "key"), [
    ("{name: confident_learning, action: fix}", "action"),
    ("{name: confident_learning, folds: 1}", "folds"),
    ("{name: confident_learning, folds: 2.5}", "folds"),
    ("{name: confident_learning, filter_by: prune}", "filter_by"),
    ("{name: confident_learning, cv_epochs: 0}", "cv_epochs"),
    ("{name: confident_learning, cv_epochs: true}", "cv_epochs"),
    ("{name: confident_learning, n_folds: 3}", "n_folds"),
])
def test_bad_parameters_name_the_key(entry, key):
    assert_bad_strategy_parameter(entry, key)


def test_filters_are_cleanlabs():
    import inspect

    import cleanlab.filter

    source = inspect.getsource(cleanlab.filter.find_label_issues)
    assert all(f"'{f}'" in source or f'"{f}"' in source for f in FILTERS)


def test_method_file_sets_every_parameter_at_its_default():
    data = yaml.safe_load((CONFIGS / "methods" / "confident_learning.yaml").read_text())
    assert data["method"] == "confident_learning"
    defaults = {"action": "drop", "folds": 5, "filter_by": "prune_by_noise_rate", "cv_epochs": None}
    # The YAML shortens the fold models to 4 epochs (cost); every other key is at its default.
    assert data["strategies"] == [{"name": "confident_learning", **defaults, "cv_epochs": 4}]
    params = ConfidentLearning.Params()
    assert {k: getattr(params, k) for k in defaults} == defaults
