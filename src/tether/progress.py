"""Progress for long work on stderr: a Rich bar on a terminal; where stderr is a file or a pipe (a
log, CI, ``nohup``), where a bar draws nothing until it ends, a plain line every
``TETHER_PROGRESS_EVERY`` seconds (default 30) and one at the end. Quiet when disabled (tests) or
nested."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
_active = 0


class _Bar:
    def __init__(self, progress: Progress | None, task_id):
        self._progress = progress
        self._task = task_id

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _LineBar(_Bar):
    """Progress as a plain line now and then: ``description: done/total (pct) elapsed, ~left``."""

    def __init__(self, description: str, total: int | None, every: float, stream=None):
        super().__init__(None, None)
        self.description, self.total, self.every = description, total, every
        self.stream = stream or sys.stderr
        self.done = 0.0
        self.began = self.last = time.monotonic()
        self.said: float | None = None  # the count last printed

    def advance(self, amount: float = 1) -> None:
        self.done += amount
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.say(now)

    def describe(self, text: str) -> None:
        self.description = text

    def say(self, now: float | None = None) -> None:
        if self.said == self.done and now is None:  # the end, already printed as the last advance
            return
        self.said = self.done
        elapsed = (now or time.monotonic()) - self.began
        line = f"{self.description}: {self.done:g}"
        if self.total:
            line += f"/{self.total} ({100 * self.done / self.total:.0f}%)"
        line += f", {_clock(elapsed)} elapsed"
        if self.total and 0 < self.done < self.total:
            line += f", ~{_clock(elapsed * (self.total - self.done) / self.done)} left"
        print(line, file=self.stream, flush=True)


@contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True) -> Iterator[_Bar]:
    """A progress bar on stderr; nested bars (a stage inside the audit) show only the outer one."""
    global _active
    if not enabled or _active or os.environ.get("TETHER_NO_PROGRESS"):
        yield _Bar(None, None)
        return
    if not console.is_terminal:
        bar = _LineBar(description, total, float(os.environ.get("TETHER_PROGRESS_EVERY", "30")))
        _active += 1
        try:
            yield bar
        finally:
            _active -= 1
            bar.say()
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    _active += 1
    try:
        with progress:
            yield _Bar(progress, progress.add_task(description, total=total))
    finally:
        _active -= 1
