"""Rich progress bars for long work, quiet when disabled (tests) or nested."""

from __future__ import annotations

import os
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


@contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True) -> Iterator[_Bar]:
    """A progress bar on stderr; nested bars (a stage inside the audit) show only the outer one."""
    global _active
    if not enabled or _active or os.environ.get("TETHER_NO_PROGRESS"):
        yield _Bar(None, None)
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
