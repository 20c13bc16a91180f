"""Sweep files: expansion into runs (methods x grid x seeds), labels, validation before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robustlearn.config import config_hash, load_config
from robustlearn.errors import ConfigError
from robustlearn.sweep import expand, run_sweep
from robustlearn.sweep.spec import format_value
from robustlearn.tracking.store import ResultsStore

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def make_tree(tmp_path: Path) -> Path:
    """A configs tree with an experiment and two method files (`ce`, `ce_b`, which differ in their label)."""
    root = tmp_path / "configs"
    (root / "experiments").mkdir(parents=True)
    (root / "methods").mkdir()
    (root / "sweeps").mkdir()
    exp = root / "experiments" / "exp.yaml"
    exp.write_text(
        f"defaults: [{CONFIGS / 'experiments' / 'synthetic_smoke.yaml'}]\n"
        "tags: [base]\ntrainer: {accelerator: cpu, epochs: 1}\n"
        f"output: {{root: {tmp_path / 'runs'}}}\n"
    )
    (root / "methods" / "ce.yaml").write_text("method: ce\nstrategies: []\n")
    (root / "methods" / "ce_b.yaml").write_text("method: ce_b\nstrategies: []\n")
    return root


def write_sweep(root: Path, **keys) -> Path:
    data = {"name": "demo", "base": "../experiments/exp.yaml", **keys}
    path = root / "sweeps" / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_expansion_order_labels_and_bookkeeping(tmp_path):
    root = make_tree(tmp_path)
    path = write_sweep(
        root,
        methods=["ce", "ce_b"],
        grid={"noise.rate": [0.1, 0.3], "optim.lr": [0.05]},
        seeds=[0, 1],
        overrides=["trainer.epochs=3"],
    )
    runs = expand(path)
    assert len(runs) == 2 * 2 * 1 * 2
    # seeds outermost, then the grid, then methods
    got = [(r.seed, r.labels["noise.rate"], r.method) for r in runs]
    assert got == [(s, q, m) for s in (0, 1) for q in (0.1, 0.3) for m in ("ce", "ce_b")]
    first = runs[0]
    assert first.labels == {"method": "ce", "noise.rate": 0.1, "optim.lr": 0.05, "seed": 0}
    cfg = yaml.safe_load(first.config_yaml)
    assert cfg["sweep"] == "demo" and cfg["experiment"] == "demo"
    assert cfg["tags"] == ["base", "noise.rate=0.1", "optim.lr=0.05"]
    assert cfg["trainer"]["epochs"] == 3 and cfg["noise"]["rate"] == 0.1 and cfg["seed"] == 0
    assert cfg["method"] == "ce"
    # the hash is the one `fit` computes from the written config
    (tmp_path / "r.yaml").write_text(first.config_yaml)
    assert config_hash(load_config(tmp_path / "r.yaml")) == first.config_hash
    assert len({r.run_id for r in runs}) == len(runs)
    assert len({r.config_hash for r in runs}) == len(runs)


def test_nested_grid_and_cli_overrides(tmp_path):
    root = make_tree(tmp_path)
    path = write_sweep(root, methods=["ce"], grid={"noise": {"rate": [0.2, 0.4]}}, seeds=[3])
    runs = expand(path, ["optim.lr=0.01"])
    assert [yaml.safe_load(r.config_yaml)["noise"]["rate"] for r in runs] == [0.2, 0.4]
    assert all(yaml.safe_load(r.config_yaml)["optim"]["lr"] == 0.01 for r in runs)
    with pytest.raises(ConfigError) as err:
        expand(path, ["noise.rate=0.5"])
    assert err.value.key == "noise.rate"
    with pytest.raises(ConfigError) as err:
        expand(path, ["seed=1"])
    assert err.value.key == "seed"


def test_cases_move_keys_together_and_cross_the_grid(tmp_path):
    root = make_tree(tmp_path)
    cases = [{"noise.rate": 0.1, "trainer.epochs": 2}, {"noise": {"rate": 0.3}, "trainer.epochs": 4}]
    path = write_sweep(root, methods=["ce"], grid={"optim.lr": [0.05, 0.01]}, cases=cases, seeds=[0])
    runs = expand(path)
    got = [(r.labels["optim.lr"], r.labels["noise.rate"], r.labels["trainer.epochs"]) for r in runs]
    assert got == [(0.05, 0.1, 2), (0.05, 0.3, 4), (0.01, 0.1, 2), (0.01, 0.3, 4)]
    cfg = yaml.safe_load(runs[1].config_yaml)
    assert cfg["noise"]["rate"] == 0.3 and cfg["trainer"]["epochs"] == 4 and cfg["optim"]["lr"] == 0.05
    assert cfg["tags"] == ["base", "optim.lr=0.05", "noise.rate=0.3", "trainer.epochs=4"]
    assert list(runs[1].labels) == ["method", "optim.lr", "noise.rate", "trainer.epochs", "seed"]
    with pytest.raises(ConfigError) as err:  # a key the cases vary cannot be overridden on the command line
        expand(path, ["trainer.epochs=9"])
    assert err.value.key == "trainer.epochs"


def test_without_methods_or_seeds_the_base_decides(tmp_path):
    root = make_tree(tmp_path)
    runs = expand(write_sweep(root))
    assert len(runs) == 1 and runs[0].method == "ce" and runs[0].seed == 0


def test_missing_method_file_names_methods_and_the_file(tmp_path):
    root = make_tree(tmp_path)
    with pytest.raises(ConfigError) as err:
        expand(write_sweep(root, methods=["ce", "gcee"]))
    assert err.value.key == "methods"
    assert str(root / "methods" / "gcee.yaml") in str(err.value)
    assert "ce_b" in str(err.value)  # the known methods are listed


@pytest.mark.parametrize(
    ("keys", "bad_key"),
    [
        ({"methodz": ["ce"]}, "methodz"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"seeds": "0"}, "seeds"),
        ({"grid": {"noise.rate": 0.2}}, "grid.noise.rate"),
        ({"grid": {"seed": [1, 2]}}, "grid.seed"),
        ({"methods": ["ce", "ce"]}, "methods"),
        ({"name": "bad name"}, "name"),
        ({"base": "../experiments/nope.yaml"}, "base"),
        ({"grid": {"tags": [["a"], ["b"]]}}, "grid.tags"),
        ({"cases": {"noise.rate": 0.2}}, "cases"),
        ({"cases": []}, "cases"),
        ({"cases": [{"noise.rate": 0.2}, {"optim.lr": 0.1}]}, "cases[1]"),
        ({"cases": [{"seed": 1}]}, "cases[0].seed"),
        ({"cases": [{"noise.rate": 0.2}, {"noise.rate": 0.2}]}, "cases"),
        ({"grid": {"noise.rate": [0.1]}, "cases": [{"noise.rate": 0.2}]}, "cases"),
    ],
)
def test_bad_sweep_files(tmp_path, keys, bad_key):
    root = make_tree(tmp_path)
    with pytest.raises(ConfigError) as err:
        expand(write_sweep(root, **keys))
    assert err.value.key == bad_key


def test_bad_run_config_stops_the_sweep_before_any_run(tmp_path):
    root = make_tree(tmp_path)
    path = write_sweep(root, grid={"noise.rate": [0.2, 1.5]})
    with pytest.raises(ConfigError) as err:
        run_sweep(path, quiet=True, command=["false"])
    assert err.value.key == "noise.rate"
    assert not (tmp_path / "runs").exists()


def test_grid_point_that_changes_nothing_or_a_fixed_run_id_is_an_error(tmp_path):
    root = make_tree(tmp_path)
    with pytest.raises(ConfigError) as err:
        expand(write_sweep(root, grid={"logger.wandb.project": ["a", "b"]}))
    assert err.value.key == "grid"
    with pytest.raises(ConfigError) as err:
        expand(write_sweep(root, seeds=[0, 1], overrides=["output.run_id=mine"]))
    assert err.value.key == "output.run_id"


@pytest.mark.parametrize("value", [0.4, 1e-05, 3, True, None, "abc", "0.4", "no", [0.1, 2], {"a": 1}, "x=y"])
def test_format_value_round_trips(value):
    text = format_value(value, "k")
    back = yaml.safe_load(text)
    assert back == value and type(back) is type(value)


def test_dry_run_marks_completed_runs_as_skipped(tmp_path, capsys):
    root = make_tree(tmp_path)
    path = write_sweep(root, seeds=[0, 1])
    runs = expand(path)
    store = ResultsStore(tmp_path / "runs" / "results.sqlite")
    store.record({"run_id": runs[1].run_id, "config_hash": runs[1].config_hash, "status": "completed"})
    store.record({"run_id": runs[0].run_id, "config_hash": runs[0].config_hash, "status": "failed"})
    summary = run_sweep(path, dry_run=True)
    assert summary.skipped == [runs[1].run_id]
    assert [r.run_id for r in summary.to_run] == [runs[0].run_id]
    assert summary.exit_code == 0
    out = capsys.readouterr().out
    assert "skip (completed)" in out and runs[0].run_id in out
    assert not (tmp_path / "runs" / ".sweep").exists()


def test_shipped_sweep_files_expand():
    # Every run of the first seed is loaded and validated (the seed changes no key's validity; the five-seed sweeps
    # would otherwise load hundreds of configs).
    from robustlearn.sweep.spec import expand_sweep, load_sweep

    files = sorted((CONFIGS / "sweeps").glob("*.yaml"))
    assert files, "configs/sweeps holds no sweep file"
    for path in files:
        sweep = load_sweep(path)
        sweep.seeds = sweep.seeds[:1]
        runs = expand_sweep(sweep)
        assert runs, path
        text = path.read_text()
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith(("#", "-")):
                assert "#" in line, f"{path}: key without a comment: {line!r}"


def test_a_fit_command_that_cannot_start_fails_each_run_and_the_sweep_goes_on(tmp_path):
    root = make_tree(tmp_path)
    summary = run_sweep(write_sweep(root, seeds=[0, 1]), quiet=True, command=[str(tmp_path / "no-such-binary")])
    assert summary.exit_code == 1 and len(summary.failed) == 2
    assert all("could not start" in why for why in summary.failed.values())
