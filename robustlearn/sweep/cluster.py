"""The cluster backend: each run a submitit job (a SLURM array task on a cluster, a local process elsewhere).

The job runs the same `python -m robustlearn fit <resolved.yaml> --quiet` as the local runner, in the sweep's
working directory, so outcomes are read the same way (exit code + the results store). Parameters come from the
sweep file's `cluster:` section and go to `submitit.AutoExecutor.update_parameters` (`timeout_min`, `mem_gb`,
`cpus_per_task`, `gpus_per_node`, `tasks_per_node`, `slurm_partition`, ...); `executor: auto | slurm | local`
picks the executor (auto: SLURM when `sbatch` is available). Defaults: `timeout_min: 1440`,
`slurm_array_parallelism: <workers>` and, for runs that may use a GPU, `gpus_per_node` = `tasks_per_node` =
`trainer.devices` (one task per GPU, as Lightning's DDP expects under SLURM).
Ctrl-C cancels the jobs not yet finished (the running fit gets SIGINT) and leaves the finished rows intact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustlearn.errors import ConfigError
from robustlearn.sweep.local import FIT_COMMAND, Outcomes, _Stop, classify, visible_gpus
from robustlearn.sweep.progress import SweepProgress
from robustlearn.sweep.spec import RunSpec, SweepFile
from robustlearn.tracking.store import ResultsStore

EXECUTORS = ("auto", "slurm", "local")


def fit_job(command: Sequence[str], cwd: str, log: str) -> int:
    """The body of one job: run `fit`, forward SIGINT/SIGTERM to it as SIGINT, return its exit code."""
    try:
        import submitit

        rank = submitit.JobEnvironment().global_rank
    except Exception:  # outside a submitit job: a single task
        rank = 0
    path = Path(log) if rank == 0 else Path(log).with_suffix(f".rank{rank}.log")
    with open(path, "ab") as out:
        proc = subprocess.Popen(list(command), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    forward = lambda signum, frame: proc.send_signal(signal.SIGINT)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    return proc.wait()


def make_executor(sweep: SweepFile, runs: Sequence[RunSpec], workers: int, folder: Path) -> Any:
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError(
            "backend: the submitit backend needs the `submitit` package (pip install submitit).", "backend"
        ) from exc
    cluster = dict(sweep.cluster)
    kind = cluster.pop("executor", "auto")
    if kind not in EXECUTORS:
        raise ConfigError(
            f"cluster.executor (in {sweep.path}): unknown executor {kind!r}. Allowed: {', '.join(EXECUTORS)}.",
            "cluster.executor",
        )
    kind = submitit.AutoExecutor.which() if kind == "auto" else kind
    params: dict[str, Any] = {
        "timeout_min": 1440,
        "name": f"robustlearn-{sweep.name}",
        "slurm_array_parallelism": workers,
    }
    # GPUs for runs that ask for them, and for `accelerator: auto` runs where GPUs are to be had.
    wants = [
        r.devices
        for r in runs
        if r.accelerator in ("gpu", "cuda") or (r.accelerator == "auto" and (kind == "slurm" or visible_gpus()))
    ]
    if wants:
        params["gpus_per_node"] = params["tasks_per_node"] = max(wants)
    params.update(cluster)
    try:
        executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=kind)
        executor.update_parameters(**params)
    except (AssertionError, NameError, ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(
            f"cluster (in {sweep.path}): submitit rejected the parameters: {' '.join(str(exc).split())}",
            "cluster",
        ) from exc
    return executor


class SubmititRunner:
    """Submits `runs` as one batch (a job array on SLURM) and follows them to the end."""

    def __init__(
        self,
        sweep: SweepFile,
        runs: Sequence[RunSpec],
        paths: dict[str, Path],
        workers: int,
        progress: SweepProgress,
        command: Sequence[str] = FIT_COMMAND,
        grace_s: float = 60.0,
        poll_s: float = 0.5,
    ):
        self.sweep, self.runs, self.paths, self.progress = sweep, list(runs), paths, progress
        self.command, self.grace_s, self.poll_s = tuple(command), grace_s, poll_s
        folder = Path(self.runs[0].output_root) / ".sweep" / sweep.name / "submitit"
        self.executor = make_executor(sweep, self.runs, workers, folder)

    def run(self) -> Outcomes:
        out = Outcomes()
        cwd = os.getcwd()
        jobs = []
        try:
            with self.executor.batch():
                for spec in self.runs:
                    config = self.paths[spec.run_id]
                    log = config.with_suffix(".log")
                    log.write_bytes(b"")
                    job = self.executor.submit(fit_job, [*self.command, str(config), "--quiet"], cwd, str(log))
                    jobs.append((spec, job, log))
        except Exception as exc:  # e.g. sbatch refusing a partition or account
            text = " ".join(str(exc).split())[-500:]
            raise ConfigError(
                f"cluster (in {self.sweep.path}): the jobs could not be submitted: {text}", "cluster"
            ) from exc
        started: set[str] = set()
        pending = list(jobs)
        stop_at: float | None = None
        with _Stop() as stop:
            while pending:
                if stop.signal is not None and stop_at is None:
                    out.signal, stop_at = stop.signal, time.monotonic()
                    for _, job, _ in pending:
                        job.cancel(check=False)
                for item in list(pending):
                    spec, job, log = item
                    done = job.done()
                    if spec.run_id not in started and (done or job.state == "RUNNING"):
                        started.add(spec.run_id)
                        self.progress.started(spec.label)
                    if not done and not (stop_at is not None and time.monotonic() - stop_at > self.grace_s):
                        continue
                    pending.remove(item)
                    self._finish(spec, job, log, out, stop_at is not None, spec.run_id in started)
                time.sleep(self.poll_s)
        return out

    def _finish(self, spec: RunSpec, job: Any, log: Path, out: Outcomes, stopping: bool, started: bool) -> None:
        rc: int | None = None
        why = ""
        if job.done():
            try:
                rc = job.result()
            except Exception as exc:  # the job itself failed (time limit, node failure, ...)
                why = " ".join(str(exc).split())[-300:]
        ok, reason = classify(spec, rc, ResultsStore(Path(spec.output_root) / "results.sqlite"), log)
        if not started:
            self.progress.started(spec.label)
        if ok:
            out.completed.append(spec.run_id)
            self.progress.finished(spec.label, True)
        elif stopping:
            (out.stopped if started else out.not_started).append(spec.run_id)
            self.progress.stopped(spec.label)
        else:
            out.failed[spec.run_id] = f"job failed: {why}" if why and rc is None else reason
            self.progress.finished(spec.label, False, out.failed[spec.run_id])
