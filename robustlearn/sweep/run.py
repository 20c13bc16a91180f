"""`run_sweep`: expand a sweep, skip what the results store holds as completed, run the rest.

A run is skipped when a row with its config hash has status `completed` in `<output.root>/results.sqlite`, so
running a sweep again finishes only what is missing (failed, interrupted or never started runs). A run that
left a checkpoint (`<output.root>/<run_id>/checkpoints/last.ckpt`) and did not fail continues from it
(`resume: true`); a failed run starts again from scratch. The resolved config of each run to start is written
to `<output.root>/.sweep/<name>/<run_id>.yaml` and given to `fit`.
"""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from robustlearn.errors import ConfigError
from robustlearn.sweep.local import FIT_COMMAND, LocalRunner, Outcomes
from robustlearn.sweep.progress import SweepProgress
from robustlearn.sweep.spec import RunSpec, expand_sweep, load_sweep
from robustlearn.tracking.store import ResultsStore

BACKENDS = ("local", "submitit")


@dataclass
class SweepSummary:
    """The runs of a sweep and what this invocation did with them."""

    name: str
    runs: list[RunSpec]
    skipped: list[str] = field(default_factory=list)  # already completed before this invocation
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run_id -> reason
    stopped: list[str] = field(default_factory=list)  # ended by an interruption of the sweep
    resumed: list[str] = field(default_factory=list)  # started from their last checkpoint
    not_started: list[str] = field(default_factory=list)
    signal: int | None = None
    dry_run: bool = False
    elapsed_s: float = 0.0

    @property
    def to_run(self) -> list[RunSpec]:
        return [r for r in self.runs if r.run_id not in self.skipped]

    @property
    def exit_code(self) -> int:
        """0: all runs completed (or a dry run); 1: some failed; 128 + signal number when interrupted."""
        if self.signal is not None:
            return 128 + int(self.signal)
        return 1 if self.failed else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs": [r.run_id for r in self.runs],
            "skipped": self.skipped,
            "completed": self.completed,
            "failed": self.failed,
            "stopped": self.stopped,
            "not_started": self.not_started,
            "resumed": self.resumed,
            "exit_code": self.exit_code,
        }


def store_state(runs: Sequence[RunSpec]) -> tuple[set[str], dict[str, str]]:
    """(config hashes completed, run_id -> status) over the stores of the runs' output roots."""
    done: set[str] = set()
    status: dict[str, str] = {}
    for root in {r.output_root for r in runs}:
        path = Path(root) / "results.sqlite"
        if path.is_file():
            store = ResultsStore(path)
            done |= store.completed_hashes()
            status.update({row["run_id"]: row["status"] for row in store.rows()})
    return done, status


def can_resume(run: RunSpec, status: str | None) -> bool:
    """A run left with a checkpoint by a kill or an interruption (not one that failed) goes on from it."""
    ckpt = Path(run.output_root) / run.run_id / "checkpoints" / "last.ckpt"
    return status != "failed" and ckpt.is_file()


def with_resume(run: RunSpec) -> RunSpec:
    data = yaml.safe_load(run.config_yaml)
    data["resume"] = True
    return replace(run, config_yaml=OmegaConf.to_yaml(OmegaConf.create(data)))


def plan_table(summary: SweepSummary) -> Table:
    table = Table(
        title=f"sweep {summary.name}: {len(summary.runs)} runs, {len(summary.skipped)} already completed"
    )
    table.add_column("#", justify="right")
    table.add_column("run_id", no_wrap=True, min_width=max((len(r.run_id) for r in summary.runs), default=6))
    keys = list(summary.runs[0].labels) if summary.runs else []
    for key in keys:
        table.add_column(key)
    table.add_column("action")
    for i, run in enumerate(summary.runs, 1):
        action = "resume" if run.run_id in summary.resumed else "run"
        action = "skip (completed)" if run.run_id in summary.skipped else action
        table.add_row(str(i), run.run_id, *(escape(str(run.labels.get(k))) for k in keys), action)
    return table


def config_paths(name: str, runs: Sequence[RunSpec]) -> dict[str, Path]:
    """Where each run's resolved config goes: `<output.root>/.sweep/<name>/<run_id>.yaml`."""
    return {r.run_id: Path(r.output_root) / ".sweep" / name / f"{r.run_id}.yaml" for r in runs}


def write_configs(runs: Sequence[RunSpec], paths: dict[str, Path]) -> None:
    for run in runs:
        path = paths[run.run_id]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run.config_yaml)


def run_sweep(
    sweep_path: str | Path,
    workers: int = 1,
    overrides: Sequence[str] = (),
    dry_run: bool = False,
    backend: str = "local",
    quiet: bool = False,
    command: Sequence[str] = FIT_COMMAND,
    grace_s: float = 30.0,
    resume: bool = True,
) -> SweepSummary:
    """Run (or with `dry_run`, list) the runs of a sweep file; every config is validated before any starts.

    workers: runs at once (local), or at most this many array tasks at once on SLURM (submitit).
    overrides: `key=value` applied to every run, after the sweep's own `overrides`.
    command: the fit command that the config path and `--quiet` are appended to.
    resume: runs that were killed or interrupted after writing a checkpoint continue from it (`resume=true`).
    """
    if backend not in BACKENDS:
        raise ConfigError(
            f"backend: unknown sweep backend '{backend}'. Allowed: {', '.join(BACKENDS)}.", "backend"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected a positive integer, got {workers!r}.", "workers")
    sweep = load_sweep(sweep_path)
    runs = expand_sweep(sweep, overrides)
    done, status = store_state(runs)
    summary = SweepSummary(
        sweep.name, runs, skipped=[r.run_id for r in runs if r.config_hash in done], dry_run=dry_run
    )
    if resume:
        summary.resumed = [r.run_id for r in summary.to_run if can_resume(r, status.get(r.run_id))]
    console = Console()
    if dry_run:
        if not quiet:
            console.print(plan_table(summary))
        return summary
    todo = [with_resume(r) if r.run_id in summary.resumed else r for r in summary.to_run]
    started = time.monotonic()
    if not todo:
        if not quiet:
            console.print(f"sweep {sweep.name}: all {len(runs)} runs already completed.")
        return summary
    paths = config_paths(sweep.name, todo)
    progress = SweepProgress(sweep.name, len(todo), skipped=len(summary.skipped), quiet=quiet)
    if backend == "local":
        runner: Any = LocalRunner(todo, paths, workers, progress, command=command, grace_s=grace_s)
    else:
        from robustlearn.sweep.cluster import SubmititRunner

        runner = SubmititRunner(sweep, todo, paths, workers, progress, command=command, grace_s=grace_s)
    write_configs(todo, paths)
    with progress:
        outcomes = runner.run()
    _fill(summary, outcomes)
    summary.elapsed_s = time.monotonic() - started
    _report(summary, quiet)
    return summary


def _fill(summary: SweepSummary, outcomes: Outcomes) -> None:
    summary.completed = outcomes.completed
    summary.failed = outcomes.failed
    summary.stopped = outcomes.stopped
    summary.not_started = outcomes.not_started
    summary.signal = outcomes.signal


def _report(summary: SweepSummary, quiet: bool) -> None:
    console = Console(stderr=True)
    if summary.failed:
        console.print(f"[red]{len(summary.failed)} run(s) failed:[/red]", highlight=False)
        for rid, why in summary.failed.items():
            console.print(f"  {rid}: {why}", highlight=False, soft_wrap=True, markup=False)
    if summary.signal is not None:
        left = len(summary.stopped) + len(summary.not_started)
        console.print(
            f"sweep {summary.name} interrupted ({signal.Signals(summary.signal).name}); "
            f"{left} run(s) left — run the sweep again to finish them.",
            highlight=False,
        )
    elif not quiet:
        console.print(
            f"sweep {summary.name}: {len(summary.completed)} completed, {len(summary.failed)} failed, "
            f"{len(summary.skipped)} skipped in {summary.elapsed_s:.1f} s.",
            highlight=False,
        )


def sweep_main(
    sweep_path: str | Path | argparse.Namespace,
    workers: int = 1,
    overrides: Sequence[str] = (),
    dry_run: bool = False,
    backend: str = "local",
    quiet: bool = False,
) -> int:
    """What `robustlearn sweep` does: run the sweep and return its exit code (a ConfigError propagates).

    Takes the arguments one by one, or the parsed command line (`file`, `overrides`, `workers`, `backend`,
    `dry_run`, `quiet`)."""
    if isinstance(sweep_path, argparse.Namespace):
        args = sweep_path
        sweep_path, workers, overrides = args.file, args.workers, args.overrides
        dry_run, backend, quiet = args.dry_run, args.backend, args.quiet
    summary = run_sweep(
        sweep_path, workers=workers, overrides=overrides, dry_run=dry_run, backend=backend, quiet=quiet
    )
    return summary.exit_code
