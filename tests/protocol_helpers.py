"""Shared pieces of the protocol tests: configs with the example strategies, metrics rows, recording callbacks."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytorch_lightning as pl

import tests.strategy_examples  # noqa: F401  (registers the example strategies)
from robustlearn.config import load_config
from robustlearn.strategies.base import Strategy
from tests.conftest import ROOT, SMOKE


def smoke(root, *overrides):
    return load_config(SMOKE, [f"output.root={root}", *overrides])


def fake_module(epoch=0, epochs=10, num_classes=None):
    """What the strategies read from the module in a step: the epoch, the epoch count, K, and a `log`."""
    module = SimpleNamespace(trainer=SimpleNamespace(current_epoch=epoch, max_epochs=epochs),
                             log=lambda *args, **kwargs: None)
    if num_classes is not None:
        module.num_classes = num_classes
    return module


def rows(run_dir) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


class Recorder(pl.Callback):
    """Steps and learning rates per epoch, the epochs that were validated, and the run's strategies and module."""

    def __init__(self):
        self.steps: list[int] = []
        self.lrs: list[float] = []
        self.validated: list[int] = []
        self.strategies: list[Strategy] = []
        self.module = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.steps.append(0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps[-1] += 1

    def on_validation_epoch_end(self, trainer, pl_module):
        self.validated.append(trainer.current_epoch)

    def on_train_end(self, trainer, pl_module):
        self.strategies = [cb for cb in trainer.callbacks if isinstance(cb, Strategy)]
        self.module = pl_module
        self.final_lr = trainer.optimizers[0].param_groups[0]["lr"]


def assert_bad_strategy_parameter(entry: str, key: str) -> None:
    """`strategies=[entry]` is refused when the config loads, with an error naming `strategies[0].<key>`."""
    import pytest

    from robustlearn.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [f"strategies=[{entry}]"])
    assert err.value.key == f"strategies[0].{key}" and f"strategies[0].{key}" in str(err.value)


def assert_resumes_exactly(root, overrides: list[str], stop_epoch: int = 2, callbacks=()) -> tuple[dict, dict]:
    """A run interrupted when `stop_epoch` starts and resumed ends with the results and metrics.csv of an uninterrupted
    one; returns (uninterrupted, resumed) results. `callbacks` join the resumed run only."""
    import pytest

    from robustlearn.runner import fit
    from tests.test_resume import KEYS, StopAtEpoch, comparable_rows

    straight = fit(smoke(Path(root) / "a", *overrides), quiet=True)
    with pytest.raises(KeyboardInterrupt):
        fit(smoke(Path(root) / "b", *overrides), quiet=True, callbacks=[StopAtEpoch(stop_epoch)])
    resumed = fit(smoke(Path(root) / "b", *overrides, "resume=true"), quiet=True, callbacks=list(callbacks))
    assert {k: resumed[k] for k in KEYS} == {k: straight[k] for k in KEYS}
    assert comparable_rows(resumed["run_dir"]) == comparable_rows(straight["run_dir"])
    return straight, resumed


def fit_method(name: str, root, *overrides: str, callbacks=()) -> tuple[object, dict]:
    """A smoke run with configs/methods/<name>.yaml included: (its config, its result)."""
    from robustlearn.runner import fit
    from tests.conftest import CONFIGS

    cfg = load_config(SMOKE, [f"output.root={root}", *overrides], includes=[CONFIGS / "methods" / f"{name}.yaml"])
    return cfg, fit(cfg, quiet=True, callbacks=list(callbacks))


def fit_on_two_cpu_ranks(script: str, root: Path, *overrides: str) -> Path:
    """Run `tests/<script> DUMP SMOKE ...` as a DDP fit over two CPU processes (gloo) with output under `root`; assert
    it succeeded and return DUMP, where the script's callback saved what each rank saw."""
    dump = Path(root) / "dump"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / script), str(dump), str(SMOKE), "trainer.accelerator=cpu",
         "trainer.devices=2", "trainer.strategy=ddp", *overrides, f"output.root={root}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dump


def assert_kept_set_cleaner(rec: Recorder, low: float = 0.3, high: float = 0.95) -> None:
    """The run's one strategy kept a share of the training split in (low, high) whose flipped-label share is below half
    the data's (rec: a Recorder of the finished run)."""
    (strategy,) = rec.strategies
    tensors = rec.module.trainer.datamodule.train_tensors()
    flipped = tensors["y"] != tensors["y_clean"]
    kept = strategy.kept_mask()
    assert low < kept.float().mean() < high
    assert flipped[kept].float().mean() < 0.5 * flipped.float().mean()
