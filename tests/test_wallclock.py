"""Accuracy against wall-clock: the time-grid means, the time to uniform's accuracy and the accuracy at its budget."""

from __future__ import annotations

import pytest

from robustlearn.leaderboard.wallclock import Curve, compare, markdown, plot


def _found() -> dict[str, Curve]:
    ce = Curve("ce", [[(10.0, 0.50), (20.0, 0.70), (30.0, 0.80)], [(12.0, 0.52), (22.0, 0.72), (32.0, 0.82)]])
    fast = Curve("fast", [[(5.0, 0.60), (10.0, 0.79), (15.0, 0.82), (20.0, 0.85)]])
    slow = Curve("slow", [[(40.0, 0.60), (80.0, 0.70)]])
    return {"ce": ce, "fast": fast, "slow": slow}


def test_the_mean_curve_takes_each_seeds_last_finished_epoch():
    ce = _found()["ce"]
    assert ce.at(21.0) == pytest.approx((0.70 + 0.52) / 2)
    assert ce.final() == pytest.approx(0.81) and ce.end_time == pytest.approx(31.0)
    assert ce.first_reaching(0.81) == 32.0  # 30 s: seeds at 0.80 and 0.72


def test_compare_against_uniform():
    rows = {r["method"]: r for r in compare(_found())}
    assert rows["ce"]["saved"] == pytest.approx(1 - 32.0 / 31.0)
    assert rows["fast"]["time_to_baseline_s"] == 15.0 and rows["fast"]["saved"] == pytest.approx(1 - 15 / 31)
    assert rows["fast"]["acc_at_budget"] == pytest.approx(0.85)
    assert rows["slow"]["time_to_baseline_s"] is None and rows["slow"]["saved"] is None
    assert rows["slow"]["acc_at_budget"] != rows["slow"]["acc_at_budget"]  # nan: no epoch finished by 31 s
    text = markdown(compare(_found()))
    assert "| fast | 1 | 85.00 | 85.00 | 15.0 | +52 % |" in text and "never" in text


def test_a_missing_baseline_is_an_error_and_the_plot_is_a_png():
    with pytest.raises(ValueError, match="baseline 'uniform'"):
        compare(_found(), baseline="uniform")
    assert plot(_found(), "t")[:8] == b"\x89PNG\r\n\x1a\n"
