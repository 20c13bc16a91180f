"""Every registered strategy in a user's own LightningModule (its own network and optimiser, a plain Trainer and
DataLoader, no robustlearn datamodule): the fit completes, or it stops at setup, before any training step, with one
ConfigError naming what the strategy needs. With a module that has `num_classes`, `build_network` and
`build_optimizer`, the strategies that need only those fit."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.needs import NEEDS, check_needs
from robustlearn.strategies.step import strategy_step
from tests.conftest import CONFIGS

BUILT_IN = [n for n in STRATEGIES.names() if STRATEGIES.get(n).__module__.startswith("robustlearn.")]
# Parameters for strategies whose defaults are not a complete method (one method YAML, or none).
EPOCHS = 6  # past every default warm-up, so that each strategy's schedule reaches its method
PARAMS = {"class_weights": {"ratio": 2.0, "label": 0}, "sample_weights": {"flipped": 0.0}}


def _strategy(name: str):
    cls = STRATEGIES.get(name)
    entry = dict(PARAMS.get(name, {}))
    path = CONFIGS / "methods" / f"{name}.yaml"
    if not entry and path.exists():
        cfg = OmegaConf.to_container(OmegaConf.load(path))
        entry = next((dict(s) for s in cfg.get("strategies", []) if s.get("name") == name), {})
        entry.pop("name", None)
    return cls.from_config(entry)


class Bare(pl.LightningModule):
    """A user's module: its own network and optimiser, nothing robustlearn asks for."""

    def __init__(self):
        super().__init__()
        self.net = _network()
        self.steps = 0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return strategy_step(self, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Equipped(Bare):
    """The same with what peers and class counts need."""

    num_classes = 3

    def build_network(self):
        return _network()

    def build_optimizer(self, params):
        return torch.optim.SGD(params, lr=0.1)


# Every strategy in the bare module; in the equipped one, those that need what it adds.
CASES = [(n, Bare) for n in BUILT_IN] + [
    (n, Equipped) for n in BUILT_IN if {"build_network", "num_classes"} & set(_strategy(n).needs)]


def _network():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def _loader():
    """120 one-channel 4 x 4 images of three classes (a mean pattern per class plus noise), batches of 40."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = 2.0 * torch.randn(3, 1, 4, 4, generator=g)[y] + torch.randn(120, 1, 4, 4, generator=g)
    return DataLoader(TensorDataset(x, y, torch.arange(120)), batch_size=40, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


def _fit(module, strategy):
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", callbacks=[strategy], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, _loader())
    return trainer


@pytest.mark.parametrize(("name", "module_cls"), CASES)
def test_fits_or_stops_at_setup_naming_the_need(name, module_cls):
    strategy, module = _strategy(name), module_cls()
    try:
        trainer = _fit(module, strategy)
    except ConfigError as err:
        assert module.steps == 0, f"{name}: the error came after {module.steps} training steps: {err}"
        named = [n for n in NEEDS if f"`{n}`" in str(err)]
        assert named and set(named) <= set(strategy.needs), str(err)
        assert f"strategy {name}" in str(err)
        if module_cls is Equipped:  # it has what it adds: a strategy needing only that fits
            assert not set(named) & {"build_network", "num_classes"}, str(err)
        return
    assert trainer.state.finished and module.steps == 3 * EPOCHS, name


def test_the_check_lists_every_missing_need_in_one_message():
    class Two(STRATEGIES.get("gce")):
        needs = ("build_network", "datamodule")

    trainer = pl.Trainer(accelerator="cpu", logger=False)
    with pytest.raises(ConfigError) as err:
        check_needs(Two(), trainer, Bare())
    assert "`build_network`" in str(err.value) and "`datamodule`" in str(err.value)
    assert err.value.key == "strategies[0]"


def needs_table() -> str:
    """README's table: each need, what meets it, and the built-in strategies that have it at their method YAML's
    parameters."""
    lines = ["| need | what the run must give | strategies |", "|---|---|---|"]
    by_need = {n: [s for s in BUILT_IN if n in _strategy(s).needs] for n in NEEDS}
    for need, spec in NEEDS.items():
        lines.append(f"| `{need}` | {spec.what} | {', '.join(f'`{s}`' for s in by_need[need]) or '—'} |")
    return "\n".join(lines)


def test_readme_lists_what_each_strategy_needs():
    text = (CONFIGS.parent / "README.md").read_text()
    start, end = "<!-- needs table: tests/test_strategy_needs.py -->\n", "\n<!-- end of needs table -->"
    assert start in text and end in text, "README.md has no needs table"
    table = text.split(start, 1)[1].split(end, 1)[0]
    assert table == needs_table(), "README.md's needs table is stale; expected:\n" + needs_table()
