"""The local runner: up to N `robustlearn fit` subprocesses at once on this machine, spread over its GPUs.

Each run is `python -m robustlearn fit <resolved.yaml> --quiet` in its own process group, its output going to
`<run_id>.log` beside the resolved config. GPUs: each run that may use one gets `trainer.devices` GPUs, the
least busy first (ties in round-robin order), through CUDA_VISIBLE_DEVICES; several runs may share a GPU.

Outcomes: exit 0 with a `completed` row -> done; exit 1 (the run recorded itself as failed) or 2 -> failed; a
process killed by a signal without a completed row (SIGKILL, out of memory) -> failed for this invocation, and
run again by the next one since nothing marks it completed. SIGINT or SIGTERM to the sweep: no new runs start,
the children get SIGINT (Lightning stops cleanly), then SIGTERM after `grace_s`, then SIGKILL; rows already
written stay.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from robustlearn.errors import ConfigError
from robustlearn.sweep.progress import SweepProgress
from robustlearn.sweep.spec import RunSpec
from robustlearn.tracking.store import ResultsStore

FIT_COMMAND = (sys.executable, "-m", "robustlearn", "fit")


@dataclass
class Outcomes:
    """What happened to the runs one invocation started."""

    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)  # ended by the sweep's interruption
    not_started: list[str] = field(default_factory=list)
    signal: int | None = None  # SIGINT / SIGTERM received by the sweep


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else every device torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and not g.strip().startswith("-")]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no usable CUDA means no GPUs to spread over
        return []


def log_tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(t.strip() for t in text[-lines:])


def classify(spec: RunSpec, rc: int | None, store: ResultsStore, log: Path) -> tuple[bool, str]:
    """(completed?, reason) for a run that ended with exit code `rc` (negative: killed by that signal)."""
    row = next(iter(store.rows(where={"run_id": spec.run_id})), None)
    if row is not None and row["status"] == "completed" and row["config_hash"] == spec.config_hash:
        return True, ""
    where = f" (log: {log})"
    if rc is not None and rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        return False, f"killed by {name} before recording a result{where}"
    if row is not None and row.get("error"):
        return False, f"{row['status']}: {row['error']}{where}"
    if rc == 0:
        return False, f"exited 0 without recording a completed result{where}"
    return False, f"exit code {rc}: {log_tail(log) or 'no output'}{where}"


class _Stop:
    """Turns SIGINT/SIGTERM into a flag while the runner works (main thread only)."""

    def __init__(self):
        self.signal: int | None = None
        self.count = 0
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = self.signal or signum
        self.count += 1

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class LocalRunner:
    """Runs `specs` (their resolved configs at `paths[run_id]`) with at most `workers` at once."""

    def __init__(
        self,
        specs: Sequence[RunSpec],
        paths: dict[str, Path],
        workers: int,
        progress: SweepProgress,
        command: Sequence[str] = FIT_COMMAND,
        gpus: list[str] | None = None,
        grace_s: float = 30.0,
        poll_s: float = 0.1,
        store_for: Callable[[str], ResultsStore] | None = None,
    ):
        if workers < 1:
            raise ConfigError(f"workers: expected at least 1 worker, got {workers}.", "workers")
        self.specs, self.paths, self.workers, self.progress = list(specs), paths, workers, progress
        self.command, self.grace_s, self.poll_s = tuple(command), grace_s, poll_s
        needs_gpu = any(s.accelerator != "cpu" for s in self.specs)
        self.gpus = gpus if gpus is not None else (visible_gpus() if needs_gpu else [])
        self.load = {g: 0 for g in self.gpus}
        self._turn = 0
        self.store_for = store_for or (lambda root: ResultsStore(Path(root) / "results.sqlite"))
        for spec in self.specs:
            if self.gpus and spec.accelerator != "cpu" and spec.devices > len(self.gpus):
                raise ConfigError(
                    f"trainer.devices: run {spec.run_id} asks for {spec.devices} GPUs, "
                    f"but {len(self.gpus)} are visible ({','.join(self.gpus)}).",
                    "trainer.devices",
                )

    def _take_gpus(self, spec: RunSpec) -> list[str]:
        if not self.gpus or spec.accelerator == "cpu":
            return []
        n = len(self.gpus)
        order = sorted(range(n), key=lambda i: (self.load[self.gpus[i]], (i - self._turn) % n))
        chosen = [self.gpus[i] for i in order[: min(spec.devices, n)]]
        self._turn = (self.gpus.index(chosen[-1]) + 1) % n
        for g in chosen:
            self.load[g] += 1
        return chosen

    def _start(self, spec: RunSpec) -> tuple[subprocess.Popen, list[str], Path]:
        gpus = self._take_gpus(spec)
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # CPU runs share the cores instead of each taking all of them (oversubscription slows every run).
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // min(self.workers, len(self.specs) or 1))))
        config = self.paths[spec.run_id]
        log = config.with_suffix(".log")
        self.progress.started(spec.label)
        try:
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [*self.command, str(config), "--quiet"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
        except OSError:
            for g in gpus:
                self.load[g] -= 1
            raise
        return proc, gpus, log

    def run(self) -> Outcomes:
        out = Outcomes()
        queue = list(self.specs)
        running: dict[str, tuple[RunSpec, subprocess.Popen, list[str], Path]] = {}
        stop_sent_at: float | None = None
        escalated: set[int] = set()
        with _Stop() as stop:
            while queue or running:
                if stop.signal is None:
                    while queue and len(running) < self.workers:
                        spec = queue.pop(0)
                        try:
                            proc, gpus, log = self._start(spec)
                        except OSError as exc:
                            out.failed[spec.run_id] = f"could not start {self.command[0]}: {exc}"
                            self.progress.finished(spec.label, False, out.failed[spec.run_id])
                            continue
                        running[spec.run_id] = (spec, proc, gpus, log)
                elif stop_sent_at is None:
                    out.signal = stop.signal
                    out.not_started = [s.run_id for s in queue]
                    queue.clear()
                    for _, proc, _, _ in running.values():
                        _signal_group(proc, signal.SIGINT)
                    stop_sent_at = time.monotonic()
                if stop_sent_at is not None:
                    waited = time.monotonic() - stop_sent_at
                    for sig, after in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, self.grace_s + 5.0)):
                        if (waited > after or stop.count > 1) and sig not in escalated:
                            escalated.add(sig)
                            for _, proc, _, _ in running.values():
                                _signal_group(proc, sig)
                for rid in list(running):
                    spec, proc, gpus, log = running[rid]
                    rc = proc.poll()
                    if rc is None:
                        continue
                    del running[rid]
                    for g in gpus:
                        self.load[g] -= 1
                    ok, why = classify(spec, rc, self.store_for(spec.output_root), log)
                    if ok:
                        out.completed.append(rid)
                        self.progress.finished(spec.label, True)
                    elif stop_sent_at is not None:
                        out.stopped.append(rid)
                        self.progress.stopped(spec.label)
                    else:
                        out.failed[rid] = why
                        self.progress.finished(spec.label, False, why)
                time.sleep(self.poll_s)
        return out
