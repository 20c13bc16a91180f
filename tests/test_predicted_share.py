"""data.classes (a class pair as its own task) and predicted_share (Byrd & Lipton's measurement)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

import robustlearn.strategies.weighting.predicted_share  # noqa: F401
from robustlearn.data.datamodule import RobustDataModule
from robustlearn.errors import ConfigError
from robustlearn.runner import fit
from tests.protocol_helpers import assert_bad_strategy_parameter, rows, smoke
from tests.test_resume import comparable_rows


def test_classes_keeps_and_relabels_in_the_given_order(tmp_path):
    full = RobustDataModule(smoke(tmp_path)).load()
    pair = RobustDataModule(smoke(tmp_path, "data.classes=[3,1]")).load()
    assert pair.num_classes == 2 and pair.class_names == [full.class_names[3], full.class_names[1]]
    test_full, test_pair = full.splits["test"], pair.splits["test"]
    expected = torch.cat([test_full["x"][test_full["y"] == c] for c in (3, 1)])
    got = torch.cat([test_pair["x"][test_pair["y"] == c] for c in (0, 1)])
    assert torch.equal(torch.sort(got, dim=0).values, torch.sort(expected, dim=0).values)
    other = pair.other_classes_test
    assert sorted(other["y"].unique().tolist()) == [0, 2]
    assert len(other["y"]) == int(((test_full["y"] == 0) | (test_full["y"] == 2)).sum())


@pytest.mark.parametrize("value", ["[1]", "[1,1]", "[0,9]", "[0,-1]"])
def test_bad_classes_are_refused_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        RobustDataModule(smoke(tmp_path, f"data.classes={value}")).load()
    assert err.value.key == "data.classes"


def test_classes_refuses_the_datasets_own_asymmetric_map(tmp_path):
    with pytest.raises(ConfigError) as err:
        RobustDataModule(smoke(tmp_path, "data.classes=[0,1]", "noise.kind=asymmetric")).load()
    assert err.value.key == "noise.kind"


def test_the_shares_are_the_predictions_of_each_set(tmp_path):
    from robustlearn.strategies.weighting.predicted_share import PredictedShare

    seen = {}

    class Read(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            share = next(cb for cb in trainer.callbacks if isinstance(cb, PredictedShare))
            dm = trainer.datamodule
            with torch.no_grad():
                pl_module.eval()
                direct = {
                    "in_class_test": (pl_module(dm.splits["test"]["x"]).argmax(1) == 1).float().mean().item(),
                    "other_classes": (pl_module(dm.other_classes_test["x"]).argmax(1) == 1).float().mean().item(),
                }
                pl_module.train()
            seen.update(direct=direct, logged=share.shares(pl_module))

    result = fit(smoke(tmp_path, "data.classes=[0,1]", "trainer.epochs=1",
                       "strategies=[{name: predicted_share, target: 1, noise_images: 300}]"),
                 quiet=True, callbacks=[Read()])
    row = rows(result["run_dir"])[-1]
    for key in ("in_class_test", "other_classes"):
        assert seen["logged"][key] == pytest.approx(seen["direct"][key])
        assert float(row[f"predicted_share/{key}"]) == pytest.approx(seen["direct"][key])
    assert 0.0 <= float(row["predicted_share/noise"]) <= 1.0
    assert 0.3 < seen["direct"]["in_class_test"] < 0.7  # a trained pair model predicts each class about half the time


def test_measuring_does_not_change_training(tmp_path):
    plain = fit(smoke(tmp_path / "a", "data.classes=[0,1]", "trainer.epochs=2"), quiet=True)
    watched = fit(smoke(tmp_path / "b", "data.classes=[0,1]", "trainer.epochs=2",
                        "strategies=[{name: predicted_share}]"), quiet=True)
    strip = [{k: v for k, v in r.items() if not k.startswith("predicted_share/")}
             for r in comparable_rows(watched["run_dir"])]
    assert strip == comparable_rows(plain["run_dir"])


def test_bad_parameters_are_refused():
    assert_bad_strategy_parameter("{name: predicted_share, target: -1}", "target")
    assert_bad_strategy_parameter("{name: predicted_share, noise_images: 0}", "noise_images")


def test_class_weights_count_the_classes_data_classes_keeps(tmp_path):
    cfg = smoke(tmp_path, "data.classes=[0,2]", "strategies=[{name: class_weights, weights: [1.0, 4.0]}]")
    assert list(cfg.strategies[0].weights) == [1.0, 4.0]
    with pytest.raises(ConfigError) as err:  # one weight for each of the data set's four classes: two are kept
        smoke(tmp_path, "data.classes=[0,2]", "strategies=[{name: class_weights, weights: [1.0, 4.0, 2.0, 1.0]}]")
    assert err.value.key == "strategies[0].weights"
