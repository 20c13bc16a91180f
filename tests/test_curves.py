"""Per-epoch curves of sweep runs: tags read back, metrics.csv columns, means, spreads (hand-computed cases)."""

from __future__ import annotations

import math

import pytest

from robustlearn.leaderboard.curves import (
    group,
    mean_series,
    one_class_epochs,
    peak_and_end,
    read_columns,
    spread,
    tag_value,
    trailing_mean,
)


def test_tag_value_reads_the_sweep_tag_back_as_yaml():
    tags = ["base", "strategies[0].ratio=0.25", "trainer.epochs=40", "kind=blur"]
    assert tag_value(tags, "strategies[0].ratio") == 0.25
    assert tag_value(tags, "trainer.epochs") == 40
    assert tag_value(tags, "kind") == "blur"
    assert tag_value(tags, "noise.rate") is None


def test_read_columns_skips_empty_cells_and_missing_files(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,a,b\n0,0.5,\n1,0.25,3\n2,,4\n")
    got = read_columns(tmp_path, ["a", "b", "c"])
    assert got == {"a": [(0, 0.5), (1, 0.25)], "b": [(1, 3.0), (2, 4.0)], "c": []}
    assert read_columns(tmp_path / "nope", ["a"]) == {"a": []}


def test_group_keeps_completed_runs_by_method_and_tag():
    rows = [
        {"status": "completed", "method": "plain", "tags": ["r=4.0"], "run_dir": "a"},
        {"status": "completed", "method": "plain", "tags": ["r=4.0"], "run_dir": "b"},
        {"status": "failed", "method": "plain", "tags": ["r=4.0"], "run_dir": "c"},
        {"status": "completed", "method": "l2", "tags": ["r=0.25"], "run_dir": "d"},
    ]
    assert group(rows, "r") == {("plain", 4.0): ["a", "b"], ("l2", 0.25): ["d"]}


def test_mean_series_on_common_epochs():
    assert mean_series([[(0, 1.0), (1, 3.0), (2, 5.0)], [(1, 1.0), (2, 2.0)]]) == [(1, 2.0), (2, 3.5)]
    assert mean_series([]) == []


def close(got, want) -> bool:
    return [e for e, _ in got] == [e for e, _ in want] and all(
        math.isclose(g, w, abs_tol=1e-12) for (_, g), (_, w) in zip(got, want))


def test_trailing_mean_and_spread_by_hand():
    assert trailing_mean([(0, 1.0), (1, 3.0), (2, 8.0)], 2) == [(0, 1.0), (1, 2.0), (2, 5.5)]
    with pytest.raises(ValueError):
        trailing_mean([(0, 1.0)], 0)
    a = [(0, 0.9), (1, 0.7), (2, 0.5)]
    b = [(0, 0.1), (1, 0.3), (2, 0.5)]
    c = [(0, 0.5), (1, 0.5), (2, 0.5)]
    assert close(spread([a, b, c]), [(0, 0.8), (1, 0.4), (2, 0.0)])
    # smoothed over 2 epochs: a -> 0.9, 0.8, 0.6; b -> 0.1, 0.2, 0.4
    assert close(spread([a, b], smooth=2), [(0, 0.8), (1, 0.6), (2, 0.2)])


def test_peak_and_end():
    got = peak_and_end([(0, 0.2), (1, 0.8), (2, 0.3)])
    assert got == {"peak": 0.8, "peak_epoch": 1, "end": 0.3, "end_epoch": 2}
    assert math.isnan(peak_and_end([])["peak"])


def test_one_class_epochs_are_skipped_before_the_spread():
    # Epoch 0: the untrained networks predict one class each (shares 1.0 and 0.0): a spread of 1 that says nothing
    # about the weights. Skipped, the peak is the real one, at epoch 2 (0.8 - 0.2), and the end 0.55 - 0.45.
    down = [(0, 0.0), (1, 0.30), (2, 0.20), (3, 0.45)]
    up = [(0, 1.0), (1, 0.60), (2, 0.80), (3, 0.55)]
    assert one_class_epochs([down, up]) == {0}
    assert one_class_epochs([[(0, 0.995), (1, 0.5)]], limit=0.99) == {0}
    s = spread([down, up], skip=one_class_epochs([down, up]))
    assert [e for e, _ in s] == [1, 2, 3] and [v for _, v in s] == pytest.approx([0.30, 0.60, 0.10])
    assert peak_and_end(s)["peak_epoch"] == 2 and peak_and_end(spread([down, up]))["peak_epoch"] == 0
    # smoothing runs over the kept epochs only: a trailing mean of 2 at epoch 2 averages epochs 1 and 2
    epoch, value = spread([down, up], smooth=2, skip={0})[1]
    assert epoch == 2 and value == pytest.approx(0.7 - 0.25)
