"""Byrd & Lipton 2019, reduced (slow: about five minutes on 2 CPU cores): without regularisation, the effect of class
weights on the predictions fades once the training set is fitted.

Two runs of configs/sweeps/byrd_lipton_cpu.yaml's protocol without regularisation, class 0 weighted 1/16 and 16. The
share of in-pair test images predicted as class 0 splits early (the up-weighted class takes most predictions); the
spread between the two runs (epochs where a network predicts a single class left out) must then shrink to under half
its peak by the end, with the training set fitted. The
full sweep and its plots: docs/reproductions/byrd_lipton.md.
"""

from __future__ import annotations

import pytest

from robustlearn.config import load_config
from robustlearn.leaderboard.curves import one_class_epochs, peak_and_end, read_columns, spread
from robustlearn.runner import fit
from tests.conftest import CONFIGS, needs_fmnist

SHARE = "predicted_share/in_class_test"


@pytest.mark.slow
@needs_fmnist
def test_without_regularisation_the_spread_between_ratios_shrinks_from_its_early_peak(tmp_path):
    curves, train_acc = [], []
    for name, ratio in (("down", 1 / 16), ("up", 16.0)):
        cfg = load_config(CONFIGS / "experiments" / "byrd_lipton_fmnist.yaml", [
            "model.name=cnn", "model.width=16", "data.subset=600", "trainer.epochs=150",
            f"strategies[0].ratio={ratio}", f"output.root={tmp_path}", f"output.run_id={name}"])
        result = fit(cfg, quiet=True)
        assert result["status"] == "completed"
        cols = read_columns(tmp_path / name, [SHARE, "train/acc"])
        curves.append(cols[SHARE])
        train_acc.append(cols["train/acc"][-1][1])
    # Epochs where a network predicts one class (the untrained start) are left out: their spread of ~1 would make
    # "the end is under half the peak" nearly automatic.
    skipped = one_class_epochs(curves)
    assert all(e < 50 for e in skipped), f"a network predicts one class late in training: {sorted(skipped)}"
    s = peak_and_end(spread(curves, smooth=5, skip=skipped))
    assert s["peak"] > 0.3, f"the ratios never split: {s}"  # weighting matters early
    assert s["peak_epoch"] < 75, f"the spread peaks late: {s}"
    assert min(train_acc) == 1.0, f"training set not fitted: {train_acc}"
    assert s["end"] < 0.5 * s["peak"], f"the spread did not shrink: {s}"
