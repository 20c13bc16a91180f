"""`robustlearn tune`: the search spaces beside the methods, the objective (noisy validation only), the equal budget,
resume, pruning, the best-parameter YAML and bad input."""

from __future__ import annotations

import json
import sqlite3

import optuna
import pytest

from robustlearn.cli import main
from robustlearn.config import load_config
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.tuning.space import SHARED, Float, check_space
from robustlearn.tuning.study import TuneSpec, _study, objective, shares, study_space, tune
from tests.conftest import SMOKE


def test_every_declared_space_is_a_range_over_params_holding_the_papers_value():
    declared = [n for n in STRATEGIES.names() if getattr(STRATEGIES.get(n), "search_space", None)]
    assert {"gce", "sce", "elr", "nce_rce", "sop", "mixup", "volminnet", "cores2"} <= set(declared)
    for name in declared:
        cls = STRATEGIES.get(name)
        check_space(name, cls.search_space, cls.Params)
    base = load_config(SMOKE)
    for key, space in SHARED.items():
        section, field = key.split(".")
        assert space.contains(base[section][field]), key


def test_bad_spaces_are_refused_naming_the_key():
    cls = STRATEGIES.get("gce")
    with pytest.raises(ConfigError, match="below high"):
        check_space("gce", {"q": Float(1.0, 0.5)}, cls.Params)
    with pytest.raises(ConfigError, match="not a parameter"):
        check_space("gce", {"tau": Float(0.1, 0.9)}, cls.Params)
    with pytest.raises(ConfigError, match="outside its search space"):
        check_space("gce", {"q": Float(0.8, 0.9)}, cls.Params)  # the paper's 0.7 must be inside


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main(["tune", str(SMOKE), "--methods", "ce", "--trials", "0", "--out", str(tmp_path)]) == 2
    assert "--trials = 0" in capsys.readouterr().err
    assert main(["tune", str(SMOKE), "--methods", "nope", "--trials", "1", "--out", str(tmp_path)]) == 2
    assert "method 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "optuna.journal").exists()


def _spec(tmp_path, methods, trials, **kw):
    return TuneSpec(SMOKE, methods, trials, tmp_path / "tune", overrides=["trainer.epochs=1"], quiet=True, **kw)


def test_a_small_tune_of_two_methods_at_one_budget_then_resumed(tmp_path):
    summaries = tune(_spec(tmp_path, ["ce", "gce"], 3))
    assert [s["budget_trials"] for s in summaries] == [3, 3]
    assert [s["trials"] for s in summaries] == [{"complete": 3}, {"complete": 3}]
    out = tmp_path / "tune"
    with sqlite3.connect(out / "results.sqlite") as db:
        rows = db.execute("SELECT sweep, seed, val_acc_best, test_acc_at_best_val, run_id FROM runs").fetchall()
    assert len(rows) == 6 and {r[1] for r in rows} == {100}  # the tuning seed, never a reporting one
    # the objective is the run's best noisy validation accuracy, not its test accuracy
    for summary in summaries:
        study = _study(_spec(tmp_path, [], 1), summary["study"])
        by_run = {r[4]: r for r in rows if r[0] == summary["study"]}
        for trial in study.trials:
            assert trial.value == pytest.approx(by_run[trial.user_attrs["run_id"]][2])
        assert (out / summary["study"] / "history.png").is_file()
        saved = json.loads((out / summary["study"] / "summary.json").read_text())
        assert saved["best_value"] == max(t.value for t in study.trials)
    # the best parameters as a method YAML a run (or a sweep) includes, on the protocol they were tuned on
    cfg = load_config(SMOKE, ["trainer.epochs=1"], includes=[out / "best" / "gce.yaml"])
    best = summaries[1]["best_params"]
    assert cfg.settings_applied == ["tuned: data.name=synthetic noise.kind=symmetric noise.rate=0.2 trainer.epochs=1"]
    assert cfg.method == "gce-tuned" and cfg.strategies[0].q == pytest.approx(best["strategies.0.q"])
    assert cfg.tuned == "3 trials, noisy val"  # the budget, shown in the leaderboard label
    from robustlearn.leaderboard.aggregate import label_of

    assert label_of({"method": cfg.method, "tuned": cfg.tuned}) == "gce-tuned [3 trials, noisy val]"
    assert cfg.optim.lr == pytest.approx(best["optim.lr"])
    # resumed with a larger budget: only the missing trial runs
    (again,) = tune(_spec(tmp_path, ["gce"], 4))
    assert again["trials"] == {"complete": 4}
    # a study of another protocol into the same folder adds its own entry; each run picks the one of its protocol
    spec = _spec(tmp_path, ["gce"], 1)
    spec.overrides = ["trainer.epochs=1", "noise.rate=0.3"]
    (other,) = tune(spec)
    at_03 = load_config(SMOKE, ["trainer.epochs=1", "noise.rate=0.3"], includes=[out / "best" / "gce.yaml"])
    assert at_03.strategies[0].q == pytest.approx(other["best_params"]["strategies.0.q"])
    at_02 = load_config(SMOKE, ["trainer.epochs=1"], includes=[out / "best" / "gce.yaml"])
    assert at_02.strategies[0].q == pytest.approx(again["best_params"]["strategies.0.q"])
    # another protocol is refused: its row would be labelled tuned while running the defaults
    with pytest.raises(ConfigError, match="tuned by `robustlearn tune` for other protocols") as err:
        load_config(SMOKE, ["trainer.epochs=3"], includes=[out / "best" / "gce.yaml"])
    assert err.value.key == "tuned"


def test_a_trial_the_pruner_stops_ends_pruned_after_one_epoch(tmp_path):
    spec = _spec(tmp_path, ["ce"], 1)
    spec.overrides = ["trainer.epochs=3"]
    _, space = study_space(spec, "ce")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study.optimize(objective(spec, "ce", space, "pruned"), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED and list(trial.intermediate_values) == [0]
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "tune").glob("*/result.json")]
    assert result["epochs_done"] == 1


def test_parallel_workers_split_the_remaining_budget_exactly():
    assert shares(5, 2) == [3, 2] and shares(4, 2) == [2, 2] and shares(1, 3) == [1, 0, 0] and shares(-2, 2) == [0, 0]
    assert sum(shares(17, 4)) == 17


def test_parallel_workers_sample_from_their_own_seeds(tmp_path):
    """One seed for every worker would draw the same start-up trials in each and train the same configs twice."""
    spec = _spec(tmp_path, ["ce"], 2)
    first, second = _study(spec, "s", 0).ask(), _study(spec, "s", 1).ask()
    assert first.suggest_float("x", 0.0, 1.0) != second.suggest_float("x", 0.0, 1.0)
