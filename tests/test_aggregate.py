"""Leaderboard aggregation on a hand-built results table; every number below is worked out by hand."""

from __future__ import annotations

import csv
import io

import pytest

from robustlearn.leaderboard.aggregate import aggregate, competition_ranks, stat
from robustlearn.leaderboard.render import markdown, to_csv

SYM = ("synthetic", "symmetric")


def run(method, rate, seed, best, last, time_s, epochs, tags=(), status="completed", chash=None, at=1.0):
    return {
        "run_id": f"{method}-{rate}-{seed}-{len(tags)}-{status}", "method": method, "dataset": SYM[0],
        "noise_kind": SYM[1], "noise_rate": rate, "seed": seed, "status": status,
        "config_hash": chash or f"{method}{rate}{seed}{tags}", "test_acc_at_best_val": best,
        "test_acc_last": last, "train_time_s": time_s, "epochs_done": epochs, "tags": list(tags),
        "finished_at": at,
    }  # fmt: skip


ROWS = [
    # noise 0.2 -------------------------------------------------------------------------------------------
    run("ce", 0.2, 0, 0.80, 0.70, 10.0, 10),
    run("ce", 0.2, 1, 0.82, 0.75, 12.0, 10),
    run("ce", 0.2, 2, 0.84, 0.71, 14.0, 10),
    run("ce", 0.2, 3, 0.10, 0.10, 1.0, 1, status="failed"),  # not completed: left out
    run("gce", 0.2, 0, 0.10, 0.10, 99.0, 20, chash="g0", at=1.0),  # same config, older: replaced by the next
    run("gce", 0.2, 0, 0.85, 0.86, 30.0, 20, chash="g0", at=2.0),
    run("gce", 0.2, 1, 0.87, 0.84, 30.0, 20),
    run("elr", 0.2, 0, 0.86, 0.80, 24.0, 20),
    # noise 0.4 -------------------------------------------------------------------------------------------
    run("ce", 0.4, 0, 0.60, 0.50, 10.0, 10),
    run("ce", 0.4, 1, 0.64, 0.50, 10.0, 10),
    run("gce", 0.4, 0, 0.70, 0.69, 15.0, 10),
    run("gce", 0.4, 1, 0.71, 0.70, 15.0, 10),
    run("gce", 0.4, 2, 0.75, 0.71, 15.0, 10),
    run("gce", 0.4, 0, 0.73, 0.72, 20.0, 10, tags=("noise.rate=0.4", "optim.lr=0.01", "baseline")),
]


def test_stat_mean_and_sample_std():
    s = stat([0.80, 0.82, 0.84])
    assert s.n == 3
    assert s.mean == pytest.approx(0.82, abs=1e-15)
    assert s.std == pytest.approx(0.02, abs=1e-15)  # sqrt((0.02² + 0 + 0.02²) / (3 - 1))
    one = stat([0.5, None, float("nan")])
    assert one.n == 1 and one.mean == 0.5 and one.std is None
    assert stat([None]) is None
    assert stat([0.5, 0.5]).std == 0.0


def test_competition_ranks_share_the_best_rank():
    assert competition_ranks({"a": 0.9, "b": 0.8, "c": 0.8, "d": 0.7, "e": None}) == {
        "a": 1, "b": 2, "c": 2, "d": 4, "e": None,
    }  # fmt: skip


def test_cells_to_the_digit():
    lb = aggregate(ROWS)
    assert lb.n_runs == 12  # 14 rows - 1 failed - 1 superseded
    a, b = lb.cells
    assert (a.dataset, a.noise_kind, a.noise_rate, b.noise_rate) == (*SYM, 0.2, 0.4)
    assert [(r.label, r.rank, r.n) for r in a.rows] == [("elr", 1, 1), ("gce", 1, 2), ("ce", 3, 3)]
    ce, gce, elr = a.row("ce"), a.row("gce"), a.row("elr")
    assert ce.stats["test_acc_at_best_val"].mean == pytest.approx(0.82, abs=1e-15)
    assert ce.stats["test_acc_at_best_val"].std == pytest.approx(0.02, abs=1e-15)
    assert ce.stats["test_acc_last"].mean == pytest.approx(0.72, abs=1e-15)
    # last: deviations -0.02, 0.03, -0.01 -> sqrt(0.0014 / 2)
    assert ce.stats["test_acc_last"].std == pytest.approx(0.0264575131106459, abs=1e-15)
    assert gce.stats["test_acc_at_best_val"].mean == pytest.approx(0.86, abs=1e-15)
    assert gce.stats["test_acc_at_best_val"].std == pytest.approx(0.0141421356237310, abs=1e-15)
    assert elr.stats["test_acc_at_best_val"].std is None
    assert ce.epoch_time_s == pytest.approx(1.2, abs=1e-15)  # mean of 1.0, 1.2, 1.4 s
    assert ce.time_rel == 1.0 and gce.time_rel == pytest.approx(1.25, abs=1e-15)  # 1.5 s / 1.2 s
    assert elr.time_rel == pytest.approx(1.0, abs=1e-15)  # 1.2 s / 1.2 s
    assert a.best == {
        "test_acc_at_best_val": {"gce", "elr"}, "test_acc_last": {"gce"}, "time_rel": {"ce", "elr"},
    }  # fmt: skip
    # noise 0.4: the grid variant is its own row; free-form tags do not change the label
    assert [(r.label, r.rank) for r in b.rows] == [("gce [optim.lr=0.01]", 1), ("gce", 2), ("ce", 3)]
    gce = b.row("gce")
    assert gce.stats["test_acc_at_best_val"].mean == pytest.approx(0.72, abs=1e-15)
    assert gce.stats["test_acc_at_best_val"].std == pytest.approx(0.0264575131106459, abs=1e-15)
    assert gce.stats["test_acc_last"].std == pytest.approx(0.01, abs=1e-15)
    assert b.row("ce").stats["test_acc_last"].std == 0.0
    assert b.row("ce").stats["test_acc_at_best_val"].std == pytest.approx(0.0282842712474619, abs=1e-15)
    assert gce.time_rel == pytest.approx(1.5, abs=1e-15) and b.row("gce [optim.lr=0.01]").time_rel == 2.0


def test_summary_mean_rank():
    s = aggregate(ROWS).summary
    # elr: rank 1 in one cell; gce [lr]: 1 in one; gce: (1 + 2) / 2; ce: (3 + 3) / 2
    assert s.labels == ["elr", "gce [optim.lr=0.01]", "gce", "ce"]
    assert s.mean_rank == {"elr": 1.0, "gce [optim.lr=0.01]": 1.0, "gce": 1.5, "ce": 3.0}
    assert s.value[("gce", 1)] == pytest.approx(0.72, abs=1e-15) and ("elr", 1) not in s.value
    assert s.best == {0: {"elr", "gce"}, 1: {"gce [optim.lr=0.01]"}}


def test_markdown_to_the_digit():
    # New columns by hand. t intervals: t(0.975, 1) = 12.706205, t(0.975, 2) = 4.302653; gce at 0.2:
    # 0.86 ± 12.706205 · 0.0141421 / √2 = ± 0.127062; ce: 0.82 ± 4.302653 · 0.02 / √3 = ± 0.049683, last
    # 0.72 ± 4.302653 · 0.0264575 / √3 = ± 0.065724. Δ: gce at 0.2 shares seeds 0, 1 with ce, differences
    # 0.05, 0.05 (s_d = 0, p = 0: marked); gce at 0.4 shares seeds 0, 1: 0.10, 0.07, mean 0.085, s_d / √2 = 0.015,
    # ± 12.706205 · 0.015 = ± 0.190593. Ranks at 0.2: elr is 0.86, gce's resampled means are 0.85 (1/4), 0.86 (1/2),
    # 0.87 (1/4), ce's never above 0.84: elr and gce 1 or 2, ce always 3.
    text = markdown(aggregate(ROWS))
    header = (
        "| Rank (by mean test acc @ best val) | Method | n | Test acc @ best val (%) | "
        "Test acc @ best val, mean [95 % CI] (%) | Δ vs ce @ best val [95 % CI] (points) | Test acc, last epoch (%) | "
        "Test acc, last epoch, mean [95 % CI] (%) | Time / epoch (× ce) |"
    )
    assert header in text
    assert "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" in text
    assert "## synthetic · symmetric 0.2" in text
    assert "| 1 [1–2] | elr | 1 | **86.00** | 86.00 | – | 80.00 | 80.00 | **1.00** |" in text
    assert ("| 1 [1–2] | gce | 2 | **86.00 ± 1.41** | 86.00 [73.29, 98.71] | +5.00 [+5.00, +5.00] * | "
            "**85.00 ± 1.41** | 85.00 [72.29, 97.71] | 1.25 |") in text  # fmt: skip
    assert ("| 3 [3–3] | ce | 3 | 82.00 ± 2.00 | 82.00 [77.03, 86.97] | baseline | 72.00 ± 2.65 | "
            "72.00 [65.43, 78.57] | **1.00** |") in text  # fmt: skip
    assert "| 1 [1–2] | gce [optim.lr=0.01] | 1 | **73.00** | 73.00 | – | **72.00** | 72.00 | 2.00 |" in text
    assert "| 2 [1–2] | gce | 3 | 72.00 ± 2.65 | 72.00 [65.43, 78.57] | +8.50 [-10.56, +27.56] | " in text
    assert ("| 3 [3–3] | ce | 2 | 62.00 ± 2.83 | 62.00 [36.59, 87.41] | baseline | 50.00 ± 0.00 | "
            "50.00 [50.00, 50.00] | **1.00** |") in text  # fmt: skip
    assert "## Summary: test accuracy at best validation (%), rows sorted by mean rank" in text
    assert ("| Method | synthetic · symmetric 0.2 | synthetic · symmetric 0.4 | "
            "Mean rank (rows sorted by it, lowest first) |") in text  # fmt: skip
    assert "| elr | **86.00** | – | 1.00 |" in text
    assert "| gce | **86.00** | 72.00 | 1.50 |" in text
    assert "| ce | 82.00 | 62.00 | 3.00 |" in text


def test_csv_keeps_raw_values():
    rows = list(csv.DictReader(io.StringIO(to_csv(aggregate(ROWS)))))
    assert len(rows) == 6
    gce = next(r for r in rows if r["label"] == "gce" and r["noise_rate"] == "0.2")
    assert float(gce["test_acc_at_best_val_mean"]) == pytest.approx(0.86, abs=1e-15)
    assert float(gce["test_acc_at_best_val_std"]) == pytest.approx(0.0141421356237310, abs=1e-15)
    assert (gce["rank"], gce["n"], gce["epoch_time_s"], gce["epoch_time_rel_ce"]) == ("1", "2", "1.5", "1.25")
    elr = next(r for r in rows if r["label"] == "elr")
    assert elr["test_acc_at_best_val_std"] == ""


def test_oracle_rows_are_marked_and_kept_apart():
    oracle = {**run("forward_correction", 0.2, 0, 0.90, 0.90, 10.0, 10), "oracle": "true T"}
    practical = run("forward_correction", 0.2, 1, 0.70, 0.70, 10.0, 10)
    lb = aggregate([oracle, practical])
    labels = {r.label: r.n for r in lb.cells[0].rows}
    assert labels == {"forward_correction (true T) †": 1, "forward_correction": 1}
    assert "† marks a method that reads oracle information" in markdown(lb)
