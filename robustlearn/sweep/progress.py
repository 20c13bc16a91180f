"""The live sweep display: one progress bar with done / running / failed counts and an ETA.

The ETA is throughput based: (elapsed time / runs finished) x runs left, so it accounts for the runs that go
on at the same time; it appears after the first run ends.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class SweepProgress:
    """Counts runs and draws them; silent (but still counting) when `quiet`."""

    def __init__(self, name: str, total: int, skipped: int = 0, quiet: bool = False):
        self.total, self.skipped, self.quiet = total, skipped, quiet
        self.done = self.failed = self.running = 0
        self.started_at = time.monotonic()
        self.console = Console(stderr=True)
        self._progress = None
        if not quiet:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task(f"sweep {name}", total=total, counts=self._counts())

    def _counts(self) -> str:
        finished = self.done + self.failed
        left = self.total - finished
        eta = "ETA --:--:--"
        if finished and left:
            eta = "ETA " + _clock((time.monotonic() - self.started_at) / finished * left)
        elif not left:
            eta = "ETA 0:00:00"
        skipped = f" · {self.skipped} skipped" if self.skipped else ""
        failed = f"[red]{self.failed} failed[/red]" if self.failed else "0 failed"
        return f"{self.done} done · {self.running} running · {failed}{skipped} · {eta}"

    def _refresh(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done + self.failed, counts=self._counts())

    def __enter__(self) -> SweepProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._refresh()
            self._progress.stop()

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False)

    def started(self, label: str) -> None:
        self.running += 1
        self._refresh()

    def finished(self, label: str, ok: bool, message: str = "") -> None:
        self.running -= 1
        if ok:
            self.done += 1
            self.say(f"[green]done[/green]    {escape(label)}")
        else:
            self.failed += 1
            self.say(f"[red]failed[/red]  {escape(label)}: {escape(message)}")
        self._refresh()

    def stopped(self, label: str) -> None:
        """A run ended by the sweep's own interruption: neither done nor failed."""
        self.running -= 1
        self._refresh()
