"""Leaderboard statistics: t intervals, paired differences, Holm, bootstrap ranks; worked out by hand.

Quantiles used (tables of Student's t): t(0.975, 1) = 12.706205, t(0.975, 2) = 4.302653, t(0.975, 3) = 3.182446.
Closed forms of the two-sided p of the t distribution used below: 1 df, p = 1 − (2/π) arctan(t); 2 df,
p = 1 − t / √(t² + 2); 3 df, p = 1 − (2/π) (arctan(u) + u / (1 + u²)), u = t / √3.
"""

from __future__ import annotations

import csv
import io
import math

import pytest
from scipy import stats as sps

from robustlearn.cli import main as cli_main
from robustlearn.leaderboard import leaderboard_main
from robustlearn.leaderboard.aggregate import aggregate
from robustlearn.leaderboard.html import page
from robustlearn.leaderboard.plots import gain_over_reference, style, styles
from robustlearn.leaderboard.render import markdown, to_csv
from robustlearn.leaderboard.stats import bootstrap_ranks, holm, paired, t_interval
from robustlearn.tracking.store import ResultsStore

T_2 = 4.302653  # t(0.975, 2)
T_3 = 3.182446  # t(0.975, 3)


# --- t interval ---------------------------------------------------------------------------------------------------


def test_t_interval_by_hand():
    # 0.80, 0.82, 0.84: mean 0.82, s = 0.02, s/√3 = 0.0115470; half-width 4.302653 · 0.0115470 = 0.0496828
    c = t_interval([0.80, 0.82, 0.84])
    assert c.n == 3 and c.mean == pytest.approx(0.82, abs=1e-15)
    assert c.low == pytest.approx(0.82 - 0.0496828, abs=1e-6) and c.high == pytest.approx(0.82 + 0.0496828, abs=1e-6)
    assert c.high - c.low == pytest.approx(2 * T_2 * 0.02 / math.sqrt(3), abs=1e-6)
    one = t_interval([0.5, None, float("nan")])  # n = 1: no interval
    assert (one.mean, one.low, one.high, one.n) == (0.5, None, None, 1)
    assert t_interval([None]) is None
    flat = t_interval([0.7, 0.7])
    assert flat.low == flat.high == 0.7


# --- paired differences -------------------------------------------------------------------------------------------


def test_paired_difference_over_shared_seeds():
    method = {0: 0.85, 1: 0.87, 2: 0.86, 7: 0.99}  # seed 7: the baseline has none, ignored
    base = {0: 0.80, 1: 0.84, 2: 0.82, 3: 0.10}  # seed 3: the method has none, ignored
    d = paired(method, base)
    # differences 0.05, 0.03, 0.04: mean 0.04, s_d = 0.01, se = 0.01/√3 = 0.0057735, t = 0.04 / se = √48
    assert d.n == 3 and d.delta == pytest.approx(0.04, abs=1e-15)
    half = T_2 * 0.01 / math.sqrt(3)  # 0.0248414
    assert d.low == pytest.approx(0.04 - half, abs=1e-6) and d.high == pytest.approx(0.04 + half, abs=1e-6)
    assert d.p == pytest.approx(1 - math.sqrt(48 / 50), rel=1e-9)  # 2 df: 1 − t/√(t² + 2) = 0.0202041
    assert d.p == pytest.approx(sps.ttest_rel([0.85, 0.87, 0.86], [0.80, 0.84, 0.82]).pvalue, rel=1e-9)
    worse = paired(base, method)  # the other way round: the same p, the interval mirrored
    assert worse.delta == pytest.approx(-0.04, abs=1e-15) and worse.p == pytest.approx(d.p, rel=1e-12)
    assert worse.high == pytest.approx(-d.low, abs=1e-12)


def test_paired_needs_two_shared_seeds_and_handles_equal_differences():
    assert paired({0: 0.9, 1: 0.8}, {0: 0.7, 2: 0.6}) is None  # one shared seed
    assert paired({0: 0.9}, {1: 0.9}) is None
    same = paired({0: 0.5, 1: 0.75}, {0: 0.25, 1: 0.5})  # differences 0.25, 0.25 exactly: s_d = 0, |t| = ∞
    assert (same.delta, same.low, same.high, same.p, same.n) == (0.25, 0.25, 0.25, 0.0, 2)
    none = paired({0: 0.5, 1: 0.75}, {0: 0.5, 1: 0.75})  # no difference at all
    assert (none.delta, none.p) == (0.0, 1.0)


# --- Holm ---------------------------------------------------------------------------------------------------------


def test_holm_by_hand():
    # sorted: d 0.005, a 0.01, c 0.03, b 0.04; m = 4, factors 4, 3, 2, 1:
    # scaled 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    # Step-down at α = 0.05: 0.005 < 0.0125 yes, 0.01 < 0.05/3 yes, 0.03 < 0.025 no -> stop: b is not rejected
    # although 0.04 < 0.05/1.
    out = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    adjusted = {k: v[0] for k, v in out.items()}
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02}, abs=1e-15)
    assert {k for k, (_, marked) in out.items() if marked} == {"a", "d"}
    # capped at 1: scaled 0.9, 1.2, 0.9 -> 0.9, 1, 1
    capped = holm({"x": 0.3, "y": 0.6, "z": 0.9})
    assert {k: v[0] for k, v in capped.items()} == pytest.approx({"x": 0.9, "y": 1.0, "z": 1.0}, abs=1e-15)
    assert not any(marked for _, marked in capped.values())
    assert holm({"only": 0.04}) == {"only": (0.04, True)} and holm({}) == {}


# --- bootstrap ranks ----------------------------------------------------------------------------------------------

SAMPLES = {
    "winner": [0.95, 0.96, 0.97],  # every value above every other method's
    "b": [0.80, 0.82, 0.84],  # b and c interleave: near-tied
    "c": [0.79, 0.81, 0.83, 0.85],
    "loser": [0.50, 0.52],
}


def test_bootstrap_ranks_winner_and_near_ties():
    out = bootstrap_ranks(SAMPLES)
    assert (out["winner"].rank, out["winner"].low, out["winner"].high) == (1, 1, 1)
    assert (out["loser"].rank, out["loser"].low, out["loser"].high) == (4, 4, 4)
    b, c = out["b"], out["c"]
    assert (b.rank, c.rank) == (2, 2)  # equal means, 0.82: they share rank 2
    assert max(b.low, c.low) <= min(b.high, c.high)  # the intervals overlap
    assert (b.low, b.high, c.low, c.high) == (2, 3, 2, 3)  # each is behind the other in a good share of the draws


def test_bootstrap_ranks_are_deterministic():
    first = bootstrap_ranks(SAMPLES, draws=500)
    assert bootstrap_ranks(SAMPLES, draws=500) == first
    assert bootstrap_ranks(dict(reversed(SAMPLES.items())), draws=500) == first  # input order does not matter
    assert bootstrap_ranks({"x": [0.5], "y": [0.5, 0.5]}) == bootstrap_ranks({"y": [0.5, 0.5], "x": [0.5]})
    tied = bootstrap_ranks({"x": [0.5], "y": [0.5, 0.5]})
    assert (tied["x"].rank, tied["x"].low, tied["x"].high) == (1, 1, 1) == (tied["y"].rank, tied["y"].low,
                                                                          tied["y"].high)  # fmt: skip
    assert bootstrap_ranks({"none": [None]}) == {}
    with pytest.raises(ValueError):
        bootstrap_ranks(SAMPLES, draws=0)


# --- in the leaderboard -------------------------------------------------------------------------------------------

CE = [0.80, 0.82, 0.84, 0.81]
GOOD = [0.05, 0.04, 0.06, 0.05]  # differences to ce per seed 0..3
SAME = [0.01, -0.01, 0.02, -0.02]
ORACLE = [0.15, 0.13, 0.14, 0.16]


def run(method, seed, acc, oracle=None, rate=0.4):
    return {"run_id": f"{method}{seed}{oracle}", "config_hash": f"{method}{seed}{oracle}{rate}", "method": method,
            "dataset": "d", "noise_kind": "symmetric", "noise_rate": rate, "seed": seed, "status": "completed",
            "test_acc_at_best_val": acc, "test_acc_last": acc - 0.01, "train_time_s": 1.0, "epochs_done": 1,
            "tags": [], "oracle": oracle}  # fmt: skip


def rows() -> list[dict]:
    out = [run("ce", s, a) for s, a in enumerate(CE)]
    out += [run("good", s, a + d) for s, (a, d) in enumerate(zip(CE, GOOD))]
    out += [run("same", s, a + d) for s, (a, d) in enumerate(zip(CE, SAME))]
    out += [run("forward_correction", s, a + d, oracle="true T") for s, (a, d) in enumerate(zip(CE, ORACLE))]
    out += [run("alone", 9, 0.70)]  # shares no seed with ce
    return out


def test_cell_fields_oracle_rows_and_holm():
    lb = aggregate(rows())
    (cell,) = lb.cells
    ce, good, same, alone = (cell.row(k) for k in ("ce", "good", "same", "alone"))
    oracle = cell.row("forward_correction (true T) †")
    # ranks: good 0.8675; ce and same 0.8175 (same's differences sum to 0); alone 0.70; the oracle's 0.9625 is
    # listed but not ranked and does not push good to 2
    assert [(r.label, r.rank) for r in cell.rows] == [
        ("good", 1), ("ce", 2), ("same", 2), ("alone", 4), ("forward_correction (true T) †", None),
    ]  # fmt: skip
    assert oracle.oracle and (oracle.rank_low, oracle.rank_high) == (None, None)
    assert cell.best["test_acc_at_best_val"] == {"good"} and lb.summary.best == {0: {"good"}}  # never the oracle
    assert (good.rank_low, good.rank_high) == (1, 1)  # good's lowest value, 0.85, beats ce's highest, 0.84
    assert (alone.rank_low, alone.rank_high) == (4, 4)
    # intervals: ce over 4 seeds, mean 0.8175, s = √(0.00068 / 3) (deviations -0.0175, 0.0025, 0.0225, -0.0075)
    s = math.sqrt((0.0175**2 + 0.0025**2 + 0.0225**2 + 0.0075**2) / 3)
    assert ce.ci["test_acc_at_best_val"].low == pytest.approx(0.8175 - T_3 * s / 2, abs=1e-6)
    assert ce.ci["test_acc_last"].mean == pytest.approx(0.8075, abs=1e-12)
    assert oracle.ci["test_acc_at_best_val"].n == 4
    # paired: good − ce = 0.05, 0.04, 0.06, 0.05: mean 0.05, s_d = √(0.0002 / 3), t = 0.05 / (s_d / 2) = √150
    assert good.delta.n == 4 and good.delta.delta == pytest.approx(0.05, abs=1e-12)
    assert good.delta.high - good.delta.delta == pytest.approx(T_3 * math.sqrt(0.0002 / 3) / 2, abs=1e-6)
    u = math.sqrt(150) / math.sqrt(3)
    assert good.delta.p == pytest.approx(1 - 2 / math.pi * (math.atan(u) + u / (1 + u * u)), rel=1e-6)
    assert same.delta.delta == pytest.approx(0.0, abs=1e-12) and same.delta.p == pytest.approx(1.0, abs=1e-9)
    assert oracle.delta is not None and oracle.delta.delta == pytest.approx(0.145, abs=1e-12)
    assert ce.delta is None and alone.delta is None  # the baseline itself; no shared seed
    # Holm over the m = 3 compared methods (good, same, the oracle); alone is not compared
    assert cell.compared == 3
    expected = holm({r.label: r.delta.p for r in (good, same, oracle)})
    for r in (good, same, oracle):
        assert (r.p_holm, r.marked) == expected[r.label]
        assert r.marked == (r.p_holm < 0.05)
    assert good.marked and oracle.marked and not same.marked
    assert (ce.p_holm, ce.marked, alone.p_holm, alone.marked) == (None, False, None, False)
    assert lb.summary.mean_rank["forward_correction (true T) †"] is None
    assert lb.summary.labels[-1] == "forward_correction (true T) †"


def test_rows_sorted_as_the_headers_say():
    more = rows() + [run("ce", s, a - 0.3, rate=0.2) for s, a in enumerate(CE)]
    more += [run("good", s, a - 0.2, rate=0.2) for s, a in enumerate(CE)]
    lb = aggregate(more)
    for cell in lb.cells:
        ranks = [r.rank for r in cell.rows]
        ranked = [k for k in ranks if k is not None]
        assert ranked == sorted(ranked) and ranks == ranked + [None] * (len(ranks) - len(ranked))
    means = [lb.summary.mean_rank[k] for k in lb.summary.labels]
    known = [m for m in means if m is not None]
    assert known == sorted(known) and means == known + [None] * (len(means) - len(known))
    text = markdown(lb)
    assert "| Rank (by mean test acc @ best val) | Method |" in text
    assert "rows sorted by mean rank" in text and "Mean rank (rows sorted by it, lowest first)" in text


def test_baseline_argument():
    lb = aggregate(rows(), baseline="good")
    (cell,) = lb.cells
    assert cell.baseline == "good" and cell.row("good").delta is None
    assert cell.row("ce").delta.delta == pytest.approx(-0.05, abs=1e-12)
    assert cell.row("ce").time_rel == 1.0  # time per epoch stays relative to ce
    assert "| Δ vs good @ best val [95 % CI] (points) |" in markdown(lb)
    (nobase,) = aggregate(rows(), baseline="nope").cells
    assert nobase.compared == 0 and all(r.p_holm is None for r in nobase.rows)
    assert "`nope` (the baseline) is not in this table" in markdown(aggregate(rows(), baseline="nope"))


def test_rendering_of_the_new_columns():
    lb = aggregate(rows())
    text = markdown(lb)
    good = next(line for line in text.splitlines() if line.startswith("| 1 [1–1] | good |"))
    d = lb.cells[0].row("good").delta
    assert f"| +5.00 [{100 * d.low:+.2f}, {100 * d.high:+.2f}] * |" in good
    assert "| – | forward_correction (true T) † | 4 |" in text  # unranked
    note = next(line for line in text.splitlines() if line.startswith("Mean [95 % CI]: Student-t interval"))
    for words in ("paired over the seeds both share", "Holm over the m = 3 methods", "α = 0.05",
                  "B = 2000 bootstrap draws", "oracle rows (†) are listed after them, unranked"):  # fmt: skip
        assert words in note
    html = page(lb)
    assert html.count("Student-t interval over the n seeds") == 1 and "+5.00 [" in html
    assert f'data-sort="{d.delta!r}"' in html
    assert '<td data-sort="">–</td><td class="text">forward_correction (true T) †</td>' in html  # sorts last
    table = {r["label"]: r for r in csv.DictReader(io.StringIO(to_csv(lb)))}
    g, o, ce = table["good"], table["forward_correction (true T) †"], table["ce"]
    assert float(g["delta"]) == pytest.approx(d.delta) and float(g["delta_low"]) == pytest.approx(d.low)
    assert float(g["p_holm"]) == pytest.approx(lb.cells[0].row("good").p_holm) and g["marked"] == "1"
    assert (g["rank"], g["rank_low"], g["rank_high"], g["n_paired"], g["baseline"]) == ("1", "1", "1", "4", "ce")
    assert float(g["test_acc_at_best_val_ci_low"]) == pytest.approx(lb.cells[0].row("good").ci[
        "test_acc_at_best_val"].low)  # fmt: skip
    assert (o["rank"], o["rank_low"], o["rank_high"]) == ("", "", "") and o["delta"] != ""
    assert (ce["delta"], ce["p_holm"], ce["marked"]) == ("", "", "")
    assert table["same"]["marked"] == "0"


# --- CLI ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(tmp_path / "results.sqlite")
    for row in rows():
        s.record(row)  # `oracle` goes to the store's `extra` and comes back
    return tmp_path / "results.sqlite"


def test_cli_baseline(store, tmp_path, capsys):
    out, plots = tmp_path / "lb.md", tmp_path / "plots"
    code = cli_main(["leaderboard", "--results", str(store), "--out", str(out), "--plots", str(plots),
                     "--baseline", "nope"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--baseline" in err and "'nope'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not plots.exists()  # nothing written
    assert cli_main(["leaderboard", "--results", str(store), "--baseline", "godo"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'good'?" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["leaderboard", "--results", str(store), "--format", "csv", "--baseline", "good"]) == 0
    table = {r["label"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert table["good"]["baseline"] == "good" and float(table["ce"]["delta"]) == pytest.approx(-0.05)
    # the default `ce` may be filtered out: no comparisons, no error
    text = leaderboard_main(store, "md", where=["method=good", "method=same"])
    assert "`ce` (the baseline) is not in this table" in text


# --- plots --------------------------------------------------------------------------------------------------------


def test_forty_series_get_forty_styles():
    labels = [f"method{i}" for i in range(40)]
    got = styles(labels)
    assert len(set(got.values())) == 40
    assert styles(labels) == got and got["method3"] == style(3)  # deterministic, by position
    assert len({style(i) for i in range(720)}) == 720


def test_gain_plot_draws_the_paired_interval(monkeypatch):
    from matplotlib.axes import Axes

    calls = []
    original = Axes.errorbar

    def spy(self, x, y, *args, **kwargs):
        calls.append((list(x), kwargs.get("xerr")))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", spy)
    (cell,) = aggregate(rows()).cells
    plot = gain_over_reference(cell)
    assert plot is not None and plot.title.endswith("gain over ce")
    ((xs, (left, right)),) = calls
    compared = sorted((r for r in cell.rows if r.delta is not None), key=lambda r: r.delta.delta)
    assert xs == pytest.approx([100 * r.delta.delta for r in compared])
    assert left == pytest.approx([100 * (r.delta.delta - r.delta.low) for r in compared])
    assert right == pytest.approx([100 * (r.delta.high - r.delta.delta) for r in compared])
