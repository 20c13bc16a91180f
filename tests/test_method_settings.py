"""Per-dataset / per-noise settings of method YAMLs (`settings:` blocks): applied when they match, never over an
override, recorded as `settings_applied` outside the config hash, picked up by sweeps."""

from __future__ import annotations

import pytest

from robustlearn.config import config_hash, load_config, to_yaml
from robustlearn.errors import ConfigError
from robustlearn.sweep.spec import expand_sweep, load_sweep
from tests.conftest import CONFIGS, SMOKE

FMNIST = CONFIGS / "experiments" / "fmnist_noise40.yaml"


def method(name: str) -> str:
    return str(CONFIGS / "methods" / f"{name}.yaml")


@pytest.mark.parametrize("name, kind, expected, applied", [
    ("sce", "symmetric", {"alpha": 0.01, "beta": 1.0}, ["mnist-like"]),
    ("nce_rce", "asymmetric", {"alpha": 1.0, "beta": 10.0}, ["mnist-like"]),
    ("elr", "asymmetric", {"lam": 1.0, "beta": 0.9}, ["asymmetric"]),
    ("elr", "symmetric", {"lam": 3.0, "beta": 0.7}, []),
    ("dividemix", "asymmetric", {"lambda_u": 0.0, "warmup_penalty": True}, ["asymmetric"]),
    ("dividemix", "symmetric", {"lambda_u": 25.0, "warmup_penalty": False}, []),
])
def test_the_papers_setting_for_the_data_is_applied(name, kind, expected, applied):
    cfg = load_config(FMNIST, [f"noise.kind={kind}"], [method(name)])
    assert {k: cfg.strategies[0][k] for k in expected} == expected
    assert list(cfg.settings_applied) == applied


def test_other_data_keeps_the_main_defaults():
    cfg = load_config(SMOKE, [], [method("sce")])  # synthetic blobs
    assert cfg.strategies[0].alpha == 0.1 and list(cfg.settings_applied) == []


@pytest.mark.parametrize("override", ["strategies[0].alpha=0.5", "strategies.0.alpha=0.5"])
def test_an_override_wins_over_the_setting(override):
    cfg = load_config(FMNIST, [override], [method("sce")])
    assert cfg.strategies[0].alpha == 0.5
    assert cfg.strategies[0].beta == 1.0 and list(cfg.settings_applied) == ["mnist-like"]


def test_replacing_the_strategies_list_leaves_its_keys_alone():
    cfg = load_config(FMNIST, ["strategies=[{name: gce, q: 0.5}]"], [method("sce")])
    assert dict(cfg.strategies[0]) == {"name": "gce", "q": 0.5}


def test_the_record_stays_out_of_the_hash_and_a_resolved_config_reloads_unchanged(tmp_path):
    cfg = load_config(FMNIST, [], [method("sce")])
    same_values = load_config(FMNIST, ["strategies[0].alpha=0.01"], [method("sce")])
    assert config_hash(cfg) == config_hash(same_values)
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    again = load_config(path)
    assert again.strategies[0].alpha == 0.01 and list(again.settings_applied) == ["mnist-like"]
    assert config_hash(again) == config_hash(cfg)


def test_sweeps_pick_up_the_settings(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: s\nbase: {FMNIST}\nmethods: [sce, elr]\ngrid: {{noise.kind: [symmetric, asymmetric]}}\n"
                     f"seeds: [0]\n")
    specs = expand_sweep(load_sweep(sweep))
    sce = [s for s in specs if s.method == "sce"]
    elr_asym = [s for s in specs if s.method == "elr" and s.labels["noise.kind"] == "asymmetric"]
    assert sce and all("alpha: 0.01" in s.config_yaml and "- mnist-like" in s.config_yaml for s in sce)
    assert elr_asym and all("lam: 1.0" in s.config_yaml for s in elr_asym)


@pytest.mark.parametrize("block, key", [
    ("[{when: {data.name: x}, set: {seed: 1}}]", "settings[0].name"),
    ("[{name: a, when: {}, set: {seed: 1}}]", "settings[0].when"),
    ("[{name: a, when: {data.name: synthetic}, set: 3}]", "settings[0].set"),
    ("[{name: a, when: {data.name: synthetic}, set: {seed: 1}, why: x}]", "settings[0].why"),
    ("{name: a}", "settings"),
    ("[{name: a, when: {data.name: synthetic}, set: {strategies.3.q: 1}}]", "settings[0].set"),
])
def test_a_bad_block_is_refused_naming_the_key(tmp_path, block, key):
    path = tmp_path / "m.yaml"
    path.write_text(f"defaults: [{SMOKE}]\nsettings: {block}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key, str(err.value)


@pytest.mark.parametrize("overrides, label", [
    (["strategies=[{name: gce}]"], "gce"),
    (["strategies=[{name: gce}, {name: elr}]"], "gce+elr"),
    ([], "ce"),
    (["method=mine", "strategies=[{name: gce}]"], "mine"),
])
def test_the_method_label_follows_the_strategies_unless_set(overrides, label):
    assert load_config(FMNIST, overrides).method == label


def test_the_ce_label_keeps_its_config_hash():
    # `method: null` resolving to ce gives the resolved config that `method: ce` gave: finished runs keep their hash
    cfg = load_config(FMNIST)
    assert cfg.method == "ce" and config_hash(cfg) == config_hash(load_config(FMNIST, ["method=ce"]))
