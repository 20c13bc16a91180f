"""Sweeps: a grid of runs from one YAML file, run locally (N workers over the GPUs) or with submitit."""

from robustlearn.sweep.run import SweepSummary, run_sweep, sweep_main
from robustlearn.sweep.spec import RunSpec, expand, load_sweep

__all__ = ["RunSpec", "SweepSummary", "expand", "load_sweep", "run_sweep", "sweep_main"]
