"""Leaderboard from a results store: filters, errors, the three formats and the plots."""

from __future__ import annotations

import argparse
import csv
import io
import re
from pathlib import Path

import pytest

from robustlearn.errors import ConfigError, DataError
from robustlearn.leaderboard import leaderboard_cli, leaderboard_main
from robustlearn.leaderboard.plots import mean_curve, read_metrics
from robustlearn.tracking.store import ResultsStore

PNG = b"\x89PNG\r\n\x1a\n"


def write_metrics(run_dir: Path, test_acc: list[float], memorized: list[float | None]) -> None:
    run_dir.mkdir(parents=True)
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "test/acc", "train/loss", "train/memorized"])
        for e, (a, m) in enumerate(zip(test_acc, memorized)):
            w.writerow([e, a, 1.0, "" if m is None else m])


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "runs" / "results.sqlite"
    s = ResultsStore(path)
    spec = [  # method, rate, seed, best, last, train_time_s
        ("ce", 0.2, 0, 0.80, 0.70, 10.0), ("ce", 0.2, 1, 0.84, 0.74, 10.0),
        ("gce", 0.2, 0, 0.86, 0.85, 15.0), ("gce", 0.2, 1, 0.88, 0.85, 15.0),
        ("ce", 0.4, 0, 0.60, 0.50, 10.0), ("gce", 0.4, 0, 0.75, 0.74, 15.0),
        ("ce", 0.0, 0, 0.95, 0.95, 10.0),
    ]  # fmt: skip
    for i, (method, rate, seed, best, last, t) in enumerate(spec):
        run_dir = tmp_path / "runs" / f"r{i}"
        write_metrics(run_dir, [best - 0.1, best], [0.1 * (seed + 1), 0.3 * (seed + 1)])
        s.record({
            "run_id": f"r{i}", "config_hash": f"h{i}", "status": "completed", "method": method,
            "dataset": "synthetic", "model": "mlp", "noise_kind": "none" if rate == 0 else "symmetric",
            "noise_rate": rate, "seed": seed, "test_acc_at_best_val": best, "test_acc_last": last,
            "train_time_s": t, "epochs_done": 2, "run_dir": str(run_dir), "tags": ["demo"] if seed else [],
        })  # fmt: skip
    s.record({"run_id": "bad", "config_hash": "hb", "status": "failed", "method": "elr", "dataset": "synthetic",
              "noise_kind": "symmetric", "noise_rate": 0.2})  # fmt: skip
    return path


def test_markdown_with_plots(store, tmp_path):
    out = tmp_path / "report" / "leaderboard.md"
    plots = tmp_path / "report" / "plots"
    text = leaderboard_main(store, "md", out, [], plots)
    assert out.read_text() == text
    # gce − ce over seeds 0, 1: 0.06, 0.04, mean 0.05, s_d / √2 = 0.01, ± t(0.975, 1) · 0.01 = ± 0.127062
    assert ("| 1 [1–1] | gce | 2 | **87.00 ± 1.41** | 87.00 [74.29, 99.71] | +5.00 [-7.71, +17.71] | "
            "**85.00 ± 0.00** | 85.00 [85.00, 85.00] | 1.50 |") in text  # fmt: skip
    assert ("| 2 [2–2] | ce | 2 | 82.00 ± 2.83 | 82.00 [56.59, 107.41] | baseline | 72.00 ± 2.83 | "
            "72.00 [46.59, 97.41] | **1.00** |") in text  # fmt: skip
    assert "elr" not in text  # failed runs are not ranked
    assert "## synthetic · no noise" in text
    names = sorted(p.name for p in plots.iterdir())
    assert names == [
        "accuracy_vs_noise_synthetic_symmetric.png", "curves_synthetic_none_0.png",
        "curves_synthetic_symmetric_0.2.png", "curves_synthetic_symmetric_0.4.png",
        "gain_synthetic_symmetric_0.2.png", "gain_synthetic_symmetric_0.4.png",
    ]  # fmt: skip  (no gain plot for the noise-free cell: it has no second method)
    assert all((plots / n).read_bytes().startswith(PNG) for n in names)
    assert "![synthetic: accuracy against symmetric noise](plots/accuracy_vs_noise_synthetic_symmetric.png)" in text


def test_where_filters(store):
    text = leaderboard_main(store, "csv", where=["noise_rate=0.2", "method=gce", "method=ce"])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["label"] for r in rows) == ["ce", "gce"] and {r["noise_rate"] for r in rows} == {"0.2"}
    rows = list(csv.DictReader(io.StringIO(leaderboard_main(store, "csv", where=["tags=demo"]))))
    assert {(r["label"], r["noise_rate"], r["n"]) for r in rows} == {("ce", "0.2", "1"), ("gce", "0.2", "1")}
    assert leaderboard_main(store.parent, "csv", where=["seed=1", "method=gce"]).count("\n") == 2


@pytest.mark.parametrize(
    ("where", "key", "words"),
    [
        (["noise=0.2"], "noise", ["noise_rate", "method", "dataset"]),
        (["noise_rate=high"], "noise_rate", ["number"]),
        (["method"], "where", ["KEY=VALUE"]),
    ],
)
def test_bad_where(store, where, key, words):
    with pytest.raises(ConfigError) as err:
        leaderboard_main(store, "md", where=where)
    assert err.value.key == key
    assert all(w in str(err.value) for w in words)


def test_missing_store_empty_store_and_bad_format(tmp_path, store):
    with pytest.raises(DataError) as err:
        leaderboard_main(tmp_path / "nowhere" / "results.sqlite", "md")
    assert "nowhere" in str(err.value)
    ResultsStore(tmp_path / "empty.sqlite")
    text = leaderboard_main(tmp_path / "empty.sqlite", "html", out=tmp_path / "x.html")
    assert text.startswith("No completed runs in") and not (tmp_path / "x.html").exists()
    assert "method=nope" in leaderboard_main(store, "md", where=["method=nope"])
    with pytest.raises(ConfigError) as err:
        leaderboard_main(store, "pdf")
    assert err.value.key == "format"


def test_html_is_self_contained(store, tmp_path):
    text = leaderboard_main(store, "html", out=tmp_path / "lb.html")
    assert text.startswith("<!doctype html>") and "<script>" in text and "<style>" in text
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing loaded from elsewhere
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 6  # accuracy against noise, 2 gain plots, 3 curves
    assert text.count('class="sortable"') == 4  # summary + 3 cells
    assert '<td class="best" data-sort="0.87">87.00 ± 1.41</td>' in text


def test_cli_entry(store, tmp_path, capsys):
    args = argparse.Namespace(results=str(store), format="md", out=None, where=["method=ce"], plots=None)
    assert leaderboard_cli(args) == 0
    assert "| ce |" in capsys.readouterr().out


def test_training_curves_average_over_seeds(tmp_path):
    write_metrics(tmp_path / "a", [0.5, 0.6, 0.7], [0.0, 0.2, None])
    m = read_metrics(tmp_path / "a")
    assert m["test/acc"] == {0: 0.5, 1: 0.6, 2: 0.7} and m["train/memorized"] == {0: 0.0, 1: 0.2}
    assert read_metrics(tmp_path / "missing") == {}
    epochs, values = mean_curve([{0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.7, 1: 0.8}])
    assert epochs == [0, 1, 2] and values == pytest.approx([0.6, 0.7, 0.7], abs=1e-15)


def test_gain_plot_needs_the_reference_and_a_second_method():
    from robustlearn.leaderboard.aggregate import aggregate
    from robustlearn.leaderboard.plots import gain_over_reference

    def row(method, seed, acc):
        return {"run_id": f"{method}{seed}", "method": method, "dataset": "d", "noise_kind": "symmetric",
                "noise_rate": 0.4, "seed": seed, "status": "completed", "config_hash": f"{method}{seed}",
                "test_acc_at_best_val": acc, "test_acc_last": acc, "train_time_s": 1.0, "epochs_done": 1, "tags": []}

    (cell,) = aggregate([row("ce", 0, 0.8), row("ce", 1, 0.82), row("gce", 0, 0.85)]).cells
    plot = gain_over_reference(cell)
    assert plot is not None and plot.name == "gain_d_symmetric_0.4" and plot.png.startswith(PNG)
    (alone,) = aggregate([row("gce", 0, 0.85)]).cells
    assert gain_over_reference(alone) is None
