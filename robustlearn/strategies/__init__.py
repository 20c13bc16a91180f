"""Strategies: every method is a Lightning Callback. Importing this package registers the built-in ones.

The protocol and its shared pieces: `Strategy` (base.py), `strategy_step` (step.py, one training step for any
LightningModule), `PerSampleBuffer` (buffers.py), `OwnedNetwork` (owned.py), `scoring` (scoring.py).
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
