"""The reproduction scripts' tables and plots from hand-made runs (benchmarks/byrd_lipton.py, critical_periods.py)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from tests.conftest import ROOT


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(path, columns: dict[str, list[float]]):
    path.mkdir(parents=True)
    names = list(columns)
    n = len(columns[names[0]])
    rows = [",".join(["epoch", *names])] + [",".join([str(e), *(str(columns[c][e]) for c in names)]) for e in range(n)]
    (path / "metrics.csv").write_text("\n".join(rows) + "\n")
    return str(path)


def test_byrd_lipton_spread_peaks_then_shrinks(tmp_path):
    bl = load("byrd_lipton")
    shares = {0.25: [0.5, 0.1, 0.2, 0.4], 1.0: [0.5, 0.5, 0.5, 0.5], 4.0: [0.5, 0.9, 0.8, 0.6]}
    rows = [{"status": "completed", "method": "plain", "tags": [f"strategies[0].ratio={r}"],
             "run_dir": write_run(tmp_path / str(r), {
                 "predicted_share/in_class_test": s, "predicted_share/other_classes": s,
                 "predicted_share/noise": s, "train/acc": [0.6, 0.9, 1.0, 1.0], "test/acc": [0.5, 0.7, 0.8, 0.8]})}
            for r, s in shares.items()]
    rows.append({"status": "failed", "method": "plain", "tags": ["strategies[0].ratio=16.0"], "run_dir": "nowhere"})
    found = bl.curves(rows, "strategies[0].ratio")
    assert sorted(found["plain"]) == [0.25, 1.0, 4.0]
    (row,) = bl.summary(found, smooth=1)
    assert row["peak"] == pytest.approx(0.8) and row["peak_epoch"] == 1
    assert row["end"] == pytest.approx(0.2) and row["end_epoch"] == 3
    assert row["min_train_acc"] == 1.0 and row["mean_test_acc"] == pytest.approx(0.8)
    assert row["fitted_epoch"] == 2 and row["at"][10] != row["at"][10]  # nan: the runs stop at epoch 3
    assert row["other_end"] == pytest.approx(0.2)
    assert "| plain | 3 | 0.800 (1) | nan | nan | nan | nan | 0.200 (3) | 0.25 | 0.200 | 2 | 100.0 % | 80.0 % |" \
        in bl.markdown([row], 1)
    assert bl.plot(found, "t")[:8] == b"\x89PNG\r\n\x1a\n"


def test_critical_periods_table_against_the_control(tmp_path):
    cp = load("critical_periods")

    def row(kind, start, end, seed, acc, epochs=28):
        tags = [f"strategies[0].kind={kind}", f"strategies[0].start={start}", f"strategies[0].end={end}",
                f"trainer.epochs={epochs}"]
        fisher = [1.0, 3.0, 2.0] if end == 0 else [1.0, 2.0, 5.0]
        path = write_run(tmp_path / f"{kind}{start}-{end}-{epochs}-{seed}", {"test/acc": [0.5, 0.7, acc],
                                                                     "fisher_trace/total": fisher})
        return {"status": "completed", "method": "deficit", "tags": tags, "run_dir": path}

    rows = [row("blur", 0, 0, 0, 0.90), row("blur", 0, 0, 1, 0.92), row("blur", 0, 8, 0, 0.85),
            row("blur", 0, 8, 1, 0.87), row("vflip", 0, 8, 0, 0.91), row("blur", 0, 0, 0, 0.80, epochs=20),
            row("blur", 0, 4, 0, 0.70, epochs=24)]
    found = cp.windows(rows)
    table = {r["window"]: r for r in cp.summary(found)}
    assert list(table) == ["no deficit, 20 epochs", "no deficit, 28 epochs", "blur [0, 4), 24 epochs",
                           "blur [0, 8), 28 epochs", "vflip [0, 8), 28 epochs"]
    control = table["no deficit, 28 epochs"]
    assert control["final_acc"] == pytest.approx(0.91) and control["delta"] == 0
    assert table["blur [0, 8), 28 epochs"]["delta"] == pytest.approx(-0.05)  # against the run of equal length
    assert math.isnan(table["blur [0, 4), 24 epochs"]["delta"])  # no run without deficit of 24 epochs
    assert table["blur [0, 8), 28 epochs"]["std"] == pytest.approx(math.sqrt(2e-4))
    assert control["fisher_peak_epoch"] == 1 and table["blur [0, 8), 28 epochs"]["fisher_peak_epoch"] == 2
    assert math.isnan(table["vflip [0, 8), 28 epochs"]["std"])
    text = cp.markdown(list(table.values()))
    assert "| blur [0, 8), 28 epochs | 2 | 86.00 ± 1.41 | -5.00 | 2 |" in text
    assert "| blur [0, 4), 24 epochs | 1 | 70.00 | – | 2 |" in text
    assert cp.plot(found, list(table.values()), "t")[:4] == b"\x89PNG"
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "fisher_trace.csv").write_text("epoch,step,total,seconds\n0,4,10.0,0.1\n0,8,30.0,0.1\n")
    assert cp.read_steps(tmp_path / "steps") == [(4, 10.0), (8, 30.0)]
    assert cp.plot(found, list(table.values()), "t", cp.read_steps(tmp_path / "steps"))[:4] == b"\x89PNG"
