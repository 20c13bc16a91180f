"""Strategies from outside the package reach `robustlearn fit` and every worker of a sweep: a `.py` file named by the
config's `plugins:` key, and an installed package's entry point (a package laid out on PYTHONPATH with its
dist-info, as pip would install it). Each runs in its own process, so the test's registries stay clean."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from robustlearn.config import load_config
from robustlearn.errors import ConfigError
from robustlearn.tracking.store import ResultsStore
from tests.conftest import ROOT, SMOKE

STRATEGY = '''
from dataclasses import dataclass

from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy


class HalfWeights(Strategy):
    """Every sample at weight 0.5 (a plug-in for the tests)."""

    @dataclass
    class Params:
        factor: float = 0.5

    def weights(self, per_sample, logits, batch, weights, module):
        return weights * self.params.factor
'''


def run(args, cwd, env_extra=None):
    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "robustlearn", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def sweep_file(tmp_path, extra: str) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: plug
        base: {SMOKE}
        seeds: [0, 1]
        overrides: [trainer.epochs=1, output.root={tmp_path / 'runs'}, output.save_checkpoint=false, {extra}]
        """))
    return str(path)


def test_a_plugin_file_named_in_the_config_runs_through_fit_and_a_two_worker_sweep(tmp_path):
    plugin = tmp_path / "my_half.py"
    plugin.write_text(STRATEGY + '\nSTRATEGIES.register("half_weights")(HalfWeights)\n')
    over = [f"plugins=[{plugin}]", "strategies=[{name: half_weights, factor: 0.25}]"]
    fit = run(["fit", str(SMOKE), *over, "trainer.epochs=1", f"output.root={tmp_path / 'fit'}", "--quiet"], tmp_path)
    assert fit.returncode == 0, fit.stderr[-2000:]
    out = run(["sweep", sweep_file(tmp_path, f"'plugins=[{plugin}]', 'strategies=[{{name: half_weights}}]'"),
               "--workers", "2", "--quiet"], tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = ResultsStore(tmp_path / "runs" / "results.sqlite").rows()
    assert sorted((r["method"], r["status"], r["seed"]) for r in rows) == [
        ("half_weights", "completed", 0), ("half_weights", "completed", 1)]


def test_an_installed_packages_entry_point_runs_without_naming_it(tmp_path):
    site = tmp_path / "site"
    (site / "halfpkg").mkdir(parents=True)
    (site / "halfpkg" / "__init__.py").write_text(STRATEGY)
    info = site / "halfpkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: halfpkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[robustlearn.strategies]\nhalf_ep = halfpkg:HalfWeights\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    methods = run(["methods"], tmp_path, env)
    assert methods.returncode == 0 and "half_ep" in methods.stdout
    out = run(["sweep", sweep_file(tmp_path, "'strategies=[{name: half_ep}]'"), "--workers", "2", "--quiet"],
              tmp_path, env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = ResultsStore(tmp_path / "runs" / "results.sqlite").rows()
    assert [r["status"] for r in rows] == ["completed", "completed"]


@pytest.mark.parametrize("item, words", [("no_such_module_xyz", "failed to import"), ("missing.py", "does not exist")])
def test_a_plugin_that_cannot_be_loaded_is_a_clear_error(tmp_path, monkeypatch, item, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [f"plugins=[{item}]"])
    assert err.value.key == "plugins" and words in str(err.value) and item in str(err.value)
