"""The performance page is built from the benchmarks' JSON outputs: every kind becomes its table, the GPU suite's
completed rows join the CPU rows (skipped ones do not), a missing kind says so, and `--export` is refused."""

from __future__ import annotations

import json

import pytest

from robustlearn.errors import ConfigError
from robustlearn.report.pages import performance

THROUGHPUT = {"date": "2026-12-05", "device": "CPU (2 threads)", "model": "cnn", "dataset": "fashion_mnist",
              "train_size": 18000, "batch_size": 128, "precision": "32-true", "compiled": False,
              "ours_s_per_epoch": 5.0, "raw_s_per_epoch": 4.0, "ratio": 1.25}
SWEEP = {"date": "2026-12-05", "device": "CPU (2 cores)", "base": "configs/experiments/synthetic_smoke.yaml",
         "runs": 4, "overrides": ["trainer.epochs=2"],
         "rows": [{"workers": 1, "seconds": 40.0, "runs_per_min": 6.0, "speedup": 1.0},
                  {"workers": 2, "seconds": 20.0, "runs_per_min": 12.0, "speedup": 2.0}]}
GRAD = {"date": "2026-12-05", "device": "CPU", "threads": 2, "torch": "2.13.0", "model": "cnn", "batch": 128,
        "rounds": 3, "seconds": {"step": {"best": 0.04, "median": 0.05}, "layerwise": {"best": 0.08, "median": 0.1},
                                 "vmap": {"best": 0.3, "median": 0.4}},
        "ratios": {"layerwise_per_step": {"median": 2.0, "low": 1.5, "high": 2.5},
                   "vmap_per_layerwise": {"median": 4.0, "low": 3.0, "high": 5.0}}}
SUITE = {"started": "2026-12-06T10:00:00", "budget_s": 420, "device": "NVIDIA H200", "parts": {
    "throughput": [dict(THROUGHPUT, device="NVIDIA H200", precision="bf16-mixed", ours_s_per_epoch=1.5,
                        raw_s_per_epoch=1.0, ratio=1.5, date="2026-12-06"),
                   {"model": "resnet_small", "batch_size": 128, "compiled": False, "skipped": "time budget"}],
    "sweep_throughput": [{"workers": 1, "seconds": 30.0, "runs_per_min": 8.0, "speedup": 1.0},
                         {"workers": 4, "seconds": 10.0, "runs_per_min": 24.0, "speedup": 1.0},
                         {"workers": 8, "skipped": "time budget"}]}}


def write(folder, files: dict) -> None:
    folder.mkdir()
    for name, value in files.items():
        (folder / f"{name}.json").write_text(json.dumps(value))


def test_every_kind_becomes_its_table(tmp_path):
    write(tmp_path / "d", {"throughput_cpu": THROUGHPUT, "sweep_throughput_cpu": SWEEP, "grad_norm_cost_cpu": GRAD,
                           "gpu_suite": SUITE})
    values = performance.context(performance.load(tmp_path / "d"), tmp_path)
    rows = values["throughput"].splitlines()[2:]
    assert len(rows) == 2  # the CPU file and the suite's completed row; its skipped row is left out
    assert rows[0] == "| CPU (2 threads) | cnn | 18000 | 128 | 32-true | no | 5.000 | 4.000 | **1.250** | 2026-12-05 |"
    assert "| NVIDIA H200 |" in rows[1] and "**1.500**" in rows[1]
    assert "| 2 | 20.0 | 12.00 | 2.00× |" in values["sweeps"]
    # the suite's runs are one worker count each: the speed-up is taken against its first row here
    assert "| 4 | 10.0 | 24.00 | 3.00× |" in values["sweeps"] and "| 8 |" not in values["sweeps"]
    assert "| 50.0 | 100.0 | 400.0 | **2.00** [1.50, 2.50] | **4.00** [3.00, 5.00] |" in values["grad_norms"]
    assert values["gpu"] == {"device": "NVIDIA H200", "date": "2026-12-06", "budget_s": 420, "elapsed_s": None}
    assert values["files"] == ["gpu_suite.json", "grad_norm_cost_cpu.json", "sweep_throughput_cpu.json",
                               "throughput_cpu.json"]


def test_a_kind_without_a_file_says_it_was_not_measured(tmp_path):
    write(tmp_path / "d", {"throughput_cpu": THROUGHPUT})
    values = performance.context(performance.load(tmp_path / "d"), tmp_path)
    assert values["sweeps"] == values["grad_norms"] == "(not measured)" and values["gpu"] is None


def test_a_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="performance.data|data folder"):
        performance.load(tmp_path / "performance.data")


def test_export_is_refused_for_a_page_built_from_benchmark_outputs(tmp_path, monkeypatch):
    from robustlearn.report import render as render_mod

    (tmp_path / "docs").mkdir()
    (tmp_path / "robustlearn").mkdir()
    (tmp_path / "docs" / "perf.md.j2").write_text("{{ throughput }}\n")
    write(tmp_path / "docs" / "perf.data", {"throughput_cpu": THROUGHPUT})
    monkeypatch.setitem(render_mod.PAGES, "docs/perf.md", "performance")
    with pytest.raises(ConfigError, match="nothing to export"):
        render_mod.report("docs/perf.md", do_export=True, root=tmp_path)
    assert not (tmp_path / "docs" / "perf.md").exists()  # nothing half-written
    assert "**1.250**" in render_mod.report("docs/perf.md", root=tmp_path).read_text()
