"""What a strategy needs of the LightningModule and the data, declared and checked once, at `setup`.

A strategy lists its needs in `needs` (a tuple of the keys below; a property where they depend on its parameters).
`Strategy.setup` checks them before the strategy's own setup runs, in `RobustClassifier` and in a user's own module
alike, and raises one `ConfigError` naming the strategy and every need the run does not meet, with how to meet it,
so that a missing piece stops the run at setup rather than an epoch into training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl

from robustlearn.errors import ConfigError


@dataclass(frozen=True)
class Need:
    what: str  # what the run must provide, for the message and the README table
    met: Callable[[pl.Trainer, pl.LightningModule], bool]


def _datamodule(trainer: pl.Trainer):
    from robustlearn.data.datamodule import RobustDataModule

    dm = getattr(trainer, "datamodule", None)
    return dm if isinstance(dm, RobustDataModule) else None


def _noise_info(trainer: pl.Trainer):
    dm = _datamodule(trainer)
    return None if dm is None else getattr(dm, "noise_info", None)


def _num_classes(trainer: pl.Trainer, module: pl.LightningModule) -> bool:
    k = getattr(module, "num_classes", None)
    if isinstance(k, int) and not isinstance(k, bool) and k >= 2:
        return True
    return _datamodule(trainer) is not None


NEEDS: dict[str, Need] = {
    "datamodule": Need(
        "robustlearn's datamodule (`RobustDataModule`, passed as `trainer.fit(module, datamodule=dm)`), for the "
        "training split, its subsets, draws or augmented views",
        lambda t, m: _datamodule(t) is not None),
    "build_network": Need(
        "`build_network()` and `build_optimizer(params)` on the module, to build a peer network and its optimiser "
        "(RobustClassifier has both)",
        lambda t, m: callable(getattr(m, "build_network", None)) and callable(getattr(m, "build_optimizer", None))),
    "num_classes": Need(
        "the number of classes: an integer `num_classes` attribute on the module (or robustlearn's datamodule)",
        _num_classes),
    "noise_rate": Need(
        "the run's actual noise rate, which robustlearn's datamodule records (`noise_info.rate_actual`); or set "
        "`forget_rate` to a number",
        lambda t, m: getattr(_noise_info(t), "rate_actual", None) is not None),
    "noise_transition": Need(
        "the noise generator's transition matrix, which robustlearn's datamodule records (`noise_info.transition`)",
        lambda t, m: getattr(_noise_info(t), "transition", None) is not None),
    "validation_split": Need(
        "a validation split: robustlearn's datamodule with `data.val_fraction` > 0",
        lambda t, m: _datamodule(t) is not None and _datamodule(t).holdout_tensors() is not None),
}


def check_needs(strategy, trainer: pl.Trainer, module: pl.LightningModule) -> None:
    """Raise one ConfigError listing every need of `strategy` this trainer and module do not meet."""
    unknown = [n for n in strategy.needs if n not in NEEDS]
    if unknown:
        raise TypeError(f"strategy {strategy.name}: unknown needs {unknown}; known: {sorted(NEEDS)}")
    missing = [n for n in strategy.needs if not NEEDS[n].met(trainer, module)]
    if not missing:
        return
    listed = "; ".join(f"`{n}`: {NEEDS[n].what}" for n in missing)
    raise ConfigError(
        f"strategy {strategy.name} (strategies[{strategy.position}]) needs what this run does not give it: {listed}. "
        f"The module is {type(module).__name__} and the trainer's datamodule "
        f"{type(getattr(trainer, 'datamodule', None)).__name__}; README.md ('Strategies in your own "
        "LightningModule') lists what each strategy needs.",
        f"strategies[{strategy.position}]",
    )
