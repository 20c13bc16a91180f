"""Strategies: every method is a Lightning Callback. Importing this package registers the built-in ones.

The protocol and its shared pieces: `Strategy` (base.py), `strategy_step` (step.py, one training step for any
LightningModule), `PerSampleBuffer` (buffers.py), `OwnedNetwork` (owned.py), `scoring` (scoring.py). Every registered
strategy class is importable from here by its class name (`from robustlearn.strategies import CoTeaching, ELR`),
plug-ins' included, looked up in the registry when asked for.
"""

from robustlearn.strategies import noisy, periods, sampling, weighting
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.diagnostics import Diagnostics
from robustlearn.strategies.noisy.gce import GCE
from robustlearn.strategies.noisy.sce import SCE
from robustlearn.strategies.owned import OwnedNetwork
from robustlearn.strategies.scoring import scoring
from robustlearn.strategies.step import StepPlan, strategy_step

__all__ = ["Diagnostics", "GCE", "SCE", "OwnedNetwork", "PerSampleBuffer", "StepPlan", "Strategy", "noisy", "periods",
           "sampling", "scoring", "strategy_step", "weighting"]


def __getattr__(name: str):
    """A registered strategy class by its class name (e.g. `CoTeaching`), built-in or a plug-in's."""
    from robustlearn.registry import STRATEGIES

    for key in STRATEGIES.names():
        cls = STRATEGIES.get(key)
        if getattr(cls, "__name__", None) == name:
            return cls
    raise AttributeError(f"module 'robustlearn.strategies' has no attribute '{name}'")


def __dir__() -> list[str]:
    from robustlearn.registry import STRATEGIES

    return sorted({*globals(), *(STRATEGIES.get(k).__name__ for k in STRATEGIES.names())})
