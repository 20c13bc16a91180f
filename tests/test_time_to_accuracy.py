"""Time to a target accuracy, by hand: interpolated crossings, never reached, ratios to the baseline with their
bootstrap interval, accuracy at fixed training times with paired differences, the mean curve and the benchmark."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from robustlearn.leaderboard.time_to_target import (
    accuracy_at,
    bootstrap_geomean,
    crossing_time,
    ratio_to_baseline,
    target_accuracy,
    time_to_target,
)
from robustlearn.leaderboard.time_to_target_tables import markdown
from robustlearn.leaderboard.wallclock import Curve, plot

ROOT = Path(__file__).resolve().parents[1]

# uniform training: final accuracy 0.90 on every seed, so the default target is 0.99 · 0.90 = 0.891
CE = {
    0: [(10.0, 0.50), (20.0, 0.80), (30.0, 0.90), (40.0, 0.90)],
    1: [(10.0, 0.60), (20.0, 0.84), (30.0, 0.88), (40.0, 0.90)],
    2: [(12.0, 0.55), (22.0, 0.82), (32.0, 0.86), (42.0, 0.90)],
}
CE_CROSSING = {0: 20 + 0.091 / 0.10 * 10, 1: 30 + 0.011 / 0.02 * 10, 2: 32 + 0.031 / 0.04 * 10}  # 29.1, 35.5, 39.75
FAST = {seed: [(t / 2, a) for t, a in run] for seed, run in CE.items()}  # the same curves in half the time
SAMPLER = {
    0: [(15.0, 0.60), (30.0, 0.85), (45.0, 0.90)],  # crosses 0.891 at 30 + 0.041 / 0.05 · 15 = 42.3
    1: [(15.0, 0.60), (30.0, 0.85), (45.0, 0.88)],  # never
    2: [(15.0, 0.60), (30.0, 0.89), (45.0, 0.91)],  # 30 + 0.001 / 0.02 · 15 = 30.75
}


def _report(**kw):
    return time_to_target({"ce": CE, "fast": FAST, "sampler": SAMPLER}, **kw)


def test_crossing_is_interpolated_between_the_two_evaluations_that_bracket_the_target(tmp_path):
    run = [(10.0, 0.50), (20.0, 0.70), (30.0, 0.80)]
    assert crossing_time(run, 0.75) == pytest.approx(25.0)  # 20 + (0.75 − 0.70) / (0.80 − 0.70) · 10
    assert crossing_time(run, 0.60) == pytest.approx(15.0)
    assert crossing_time(run, 0.70) == 20.0  # reached exactly at an evaluation
    assert crossing_time(run, 0.40) == 10.0  # the first evaluation already reaches it: no interpolation from t = 0
    (tmp_path / "metrics.csv").write_text("epoch,test/acc,train_s_total\n0,0.5,10\n1,0.7,20\n2,0.8,30\n")
    assert crossing_time({"run_dir": str(tmp_path)}, 0.75) == pytest.approx(25.0)
    assert crossing_time({"series": run}, 0.75) == pytest.approx(25.0)
    # a dip after the crossing does not move it: the first bracketing pair counts
    assert crossing_time([(1.0, 0.2), (2.0, 0.6), (3.0, 0.3), (4.0, 0.9)], 0.5) == pytest.approx(1.75)


def test_never_reached_is_none():
    assert crossing_time([(10.0, 0.50), (20.0, 0.70)], 0.71) is None
    assert crossing_time([], 0.1) is None


def test_accuracy_at_a_time_interpolates_holds_the_final_and_is_none_before_the_first_evaluation():
    run = [(10.0, 0.50), (20.0, 0.70), (30.0, 0.80)]
    assert accuracy_at(run, 9.9) is None
    assert accuracy_at(run, 10.0) == 0.50
    assert accuracy_at(run, 15.0) == pytest.approx(0.60)
    assert accuracy_at(run, 20.0) == 0.70
    assert accuracy_at(run, 99.0) == 0.80


def test_the_target_is_below_the_plateau_and_uniform_crosses_it_before_its_end():
    assert target_accuracy(CE) == pytest.approx(0.891)
    assert target_accuracy(CE, share=0.95) == pytest.approx(0.855)
    report = _report()
    assert report.target == pytest.approx(0.891) and report.baseline_final == pytest.approx(0.90)
    ce = report.row("ce")
    assert ce.crossing == pytest.approx(CE_CROSSING)
    assert all(ce.crossing[s] < CE[s][-1][0] for s in CE)
    assert ce.reached == ce.n == 3 and ce.median_crossing == pytest.approx(35.5)


def test_the_baseline_against_its_own_crossing_is_exactly_one():
    ratio = _report().row("ce").ratio
    assert ratio.ratios == {0: 1.0, 1: 1.0, 2: 1.0}
    assert (ratio.geomean, ratio.low, ratio.high) == (1.0, 1.0, 1.0)


def test_twice_as_fast_on_every_seed_is_a_ratio_of_one_half_with_a_degenerate_interval():
    fast = _report().row("fast")
    assert fast.ratio.ratios == {0: 0.5, 1: 0.5, 2: 0.5}
    assert (fast.ratio.geomean, fast.ratio.low, fast.ratio.high) == (0.5, 0.5, 0.5)
    assert fast.reached == 3
    table = markdown(_report())
    assert "| fast | 3 | 3 of 3 |" in table and "| 0.50 [0.50, 0.50] (t [0.50, 0.50]) |" in table


def test_seeds_that_never_reach_are_counted_and_the_ratio_is_over_the_others():
    sampler = _report().row("sampler")
    assert sampler.crossing[1] is None and sampler.n == 3 and sampler.reached == 2
    r0, r2 = 42.3 / CE_CROSSING[0], 30.75 / CE_CROSSING[2]
    assert sampler.ratio.ratios == pytest.approx({0: r0, 2: r2}) and sampler.ratio.n == 2
    assert sampler.ratio.geomean == pytest.approx(math.sqrt(r0 * r2))
    # two ratios: a quarter of the draws take the smaller twice, a quarter the larger: the interval is their range
    assert (sampler.ratio.low, sampler.ratio.high) == pytest.approx((min(r0, r2), max(r0, r2)))
    assert sampler.median_crossing == pytest.approx((42.3 + 30.75) / 2)
    row = next(line for line in markdown(_report()).splitlines() if line.startswith("| sampler |"))
    assert "| 2 of 3 |" in row and "(over 2 of 3 seeds)" in row
    # a seed whose baseline seed never reached is left out of the ratio as well
    assert ratio_to_baseline({0: 10.0, 1: 20.0}, {0: 20.0, 1: None}).ratios == {0: 0.5}
    one = ratio_to_baseline({0: 10.0}, {0: 20.0})
    assert (one.geomean, one.low, one.high) == (0.5, None, None)  # one ratio: no interval
    assert ratio_to_baseline({0: None}, {0: 20.0}).geomean is None


def test_the_t_interval_of_the_log_ratios_by_hand_and_the_faster_rule_needs_both_intervals():
    # ratios 0.5, 1, 2: log ratios -log 2, 0, log 2, mean 0, sd log 2; t_0.975,2 = 4.302653 (docs/leaderboard.md)
    wide = ratio_to_baseline({0: 5.0, 1: 10.0, 2: 20.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    half = 4.302653 * math.log(2) / math.sqrt(3)
    assert (wide.t_low, wide.t_high) == pytest.approx((math.exp(-half), math.exp(half)), rel=1e-6)
    assert (round(wide.t_low, 3), round(wide.t_high, 2)) == (0.179, 5.59)
    assert not wide.below_one and not wide.above_one
    # five seeds, four well below 1: the percentile bootstrap stays inside the observed ratios and excludes 1, the
    # t interval does not, so the method is not called faster
    times = {0: 9.3, 1: 10.5, 2: 7.4, 3: 8.1, 4: 6.2}
    mixed = ratio_to_baseline(times, dict.fromkeys(times, 10.0))
    assert mixed.high < 1.0 < mixed.t_high and not mixed.below_one
    logs = [math.log(t / 10.0) for t in times.values()]
    m = sum(logs) / 5
    sd = math.sqrt(sum((v - m) ** 2 for v in logs) / 4)
    assert mixed.t_high == pytest.approx(math.exp(m + 2.776445 * sd / math.sqrt(5)), rel=1e-6)  # t_0.975,4
    # faster on every seed by about half: both intervals below 1
    fast = ratio_to_baseline({0: 5.0, 1: 5.2, 2: 4.9}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert fast.below_one and not fast.above_one
    assert ratio_to_baseline({0: 20.0, 1: 21.0, 2: 19.0}, {0: 10.0, 1: 10.0, 2: 10.0}).above_one
    one = ratio_to_baseline({0: 5.0}, {0: 10.0})
    assert (one.t_low, one.t_high) == (None, None) and not one.below_one


def test_the_bootstrap_is_deterministic():
    ratios = [0.7, 0.9, 1.1, 1.3, 0.8]
    first = bootstrap_geomean(ratios)
    assert first == bootstrap_geomean(ratios)
    low, high = first
    assert 0.7 <= low < math.exp(sum(map(math.log, ratios)) / 5) < high <= 1.3
    assert bootstrap_geomean(ratios, draws=500, seed=3) == bootstrap_geomean(ratios, draws=500, seed=3)
    assert bootstrap_geomean([2.0]) is None
    a, b = _report(), _report()
    assert [m.ratio for m in a.methods] == [m.ratio for m in b.methods]


def test_accuracy_at_the_baselines_final_time_is_paired_by_seed():
    report = _report()
    assert report.budget == 40.0  # median of the final times 40, 40, 42
    ce_at = report.row("ce").at_share(1.0)
    assert ce_at.time == 40.0 and ce_at.by_seed == pytest.approx({0: 0.90, 1: 0.90, 2: 0.892})  # 0.86 + 0.8 · 0.04
    assert ce_at.delta is None
    at = report.row("sampler").at_share(1.0)
    by_hand = {0: 0.85 + 10 / 15 * 0.05, 1: 0.85 + 10 / 15 * 0.03, 2: 0.89 + 10 / 15 * 0.02}
    assert at.by_seed == pytest.approx(by_hand)
    diffs = [by_hand[s] - ce_at.by_seed[s] for s in (0, 1, 2)]  # −0.016667, −0.03, +0.011333
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = 4.302653 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert at.delta.n == 3 and at.delta.delta == pytest.approx(mean)
    assert (at.delta.low, at.delta.high) == pytest.approx((mean - half, mean + half), rel=1e-6)
    assert at.acc.mean == pytest.approx(sum(by_hand.values()) / 3)
    # at a quarter of the budget (10 s) ce's seed 2 has no evaluation yet: left out, two seeds paired
    quarter = report.row("fast").at_share(0.25)
    assert quarter.time == 10.0 and quarter.delta.n == 2
    assert report.row("ce").at_share(0.25).acc.n == 2
    assert [a.share for a in _report(shares=(0.5,)).row("ce").at] == [0.5, 1.0]  # the budget itself is always in


def test_a_missing_baseline_is_an_error():
    with pytest.raises(ValueError, match="baseline 'uniform'"):
        time_to_target({"ce": CE}, baseline="uniform")


def test_the_mean_curve_starts_at_the_first_evaluation_of_any_seed():
    curve = Curve("ce", [[(10.0, 0.50), (20.0, 0.70)], [(12.0, 0.52), (22.0, 0.72)]])
    grid, means = curve.mean_curve()
    assert grid == [10.0, 12.0, 20.0, 22.0]
    assert means == pytest.approx([0.50, (0.54 + 0.52) / 2, (0.70 + 0.68) / 2, (0.70 + 0.72) / 2])
    assert not any(math.isnan(m) for m in means)
    assert curve.as_runs()[1] == {"seed": 1, "series": [(12.0, 0.52), (22.0, 0.72)]}


def test_the_plot_marks_the_target_and_the_crossings():
    found = {name: Curve(name, list(runs.values()), list(runs)) for name, runs in (("ce", CE), ("fast", FAST))}
    report = time_to_target({name: c.as_runs() for name, c in found.items()})
    assert report.row("fast").ratio.geomean == 0.5
    png = plot(found, "t", report.target, {m.method: m.mean_crossing for m in report.methods})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_benchmark_writes_the_table_and_the_plot(tmp_path, monkeypatch):
    from robustlearn.tracking.store import ResultsStore

    store = ResultsStore(tmp_path / "results.sqlite")
    for method, runs in (("ce", CE), ("sampler", SAMPLER)):
        for seed, run in runs.items():
            run_dir = tmp_path / f"{method}-{seed}"
            run_dir.mkdir()
            lines = ["epoch,test/acc,train_s_total"] + [f"{i},{a},{t}" for i, (t, a) in enumerate(run)]
            (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
            store.record({"run_id": f"{method}-{seed}", "method": method, "seed": seed, "status": "completed",
                          "run_dir": str(run_dir), "sweep": "s"})
    spec = importlib.util.spec_from_file_location("time_to_accuracy", ROOT / "benchmarks" / "time_to_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out" / "tta"
    monkeypatch.setattr(sys, "argv", ["x", "--results", str(tmp_path / "results.sqlite"), "--where", "sweep=s",
                                      "--out", str(out), "--draws", "200"])
    module.main()
    text = (tmp_path / "out" / "tta.md").read_text()
    assert "Target: 99 % of ce's mean final test accuracy (90.00 %) = **89.10 %**" in text
    assert "| ce | 3 | 3 of 3 | 35.5 | 1.00 [1.00, 1.00] (t [1.00, 1.00]) |" in text and "| 2 of 3 |" in text
    assert (tmp_path / "out" / "tta_time.png").read_bytes()[:4] == b"\x89PNG"
