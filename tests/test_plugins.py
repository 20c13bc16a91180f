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


def test_a_plugin_file_and_an_installed_entry_point_run_through_fit_and_a_two_worker_sweep(tmp_path):
    # One strategy in a .py file named by `plugins:`, one in a package laid out on PYTHONPATH with its dist-info (what
    # pip installs), composed in every run of a sweep whose two workers (each `python -m robustlearn fit`) load both.
    plugin = tmp_path / "my_half.py"
    plugin.write_text(STRATEGY + '\nSTRATEGIES.register("half_weights")(HalfWeights)\n')
    site = tmp_path / "site"
    (site / "halfpkg").mkdir(parents=True)
    (site / "halfpkg" / "__init__.py").write_text(STRATEGY)
    info = site / "halfpkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: halfpkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[robustlearn.strategies]\nhalf_ep = halfpkg:HalfWeights\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    both = "strategies=[{name: half_weights, factor: 0.25}, {name: half_ep}]"  # each sweep worker is `robustlearn fit`
    out = run(["sweep", sweep_file(tmp_path, f"'plugins=[{plugin}]', '{both}'"), "--workers", "2", "--quiet"],
              tmp_path, env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = ResultsStore(tmp_path / "runs" / "results.sqlite").rows()
    assert sorted((r["method"], r["status"], r["seed"]) for r in rows) == [
        ("half_weights+half_ep", "completed", 0), ("half_weights+half_ep", "completed", 1)]


@pytest.mark.parametrize("item, words", [("no_such_module_xyz", "failed to import"), ("missing.py", "does not exist")])
def test_a_plugin_that_cannot_be_loaded_is_a_clear_error(tmp_path, monkeypatch, item, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [f"plugins=[{item}]"])
    assert err.value.key == "plugins" and words in str(err.value) and item in str(err.value)
