"""Progress for long work: a rich bar per table on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

log = logging.getLogger("syncd.progress")


class Task:
    """One unit of work being counted (a table being copied or compared)."""

    def __init__(self, owner: Progress, name: str, total: int | None) -> None:
        self.owner, self.name, self.total = owner, name, total
        self.done = 0
        self.started = time.monotonic()
        self._last_log = self.started
        self._id: Any = None

    def advance(self, n: int) -> None:
        self.done += n
        self.owner._update(self)

    def finish(self) -> None:
        self.owner._finish(self)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0


class Progress:
    """Shows tasks as bars (interactive) or as a log line every `interval` seconds."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True,
                 interval: float = 5.0, verb: str = "rows") -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interval = interval
        self.verb = verb
        self.interactive = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._rich: Any = None

    def __enter__(self) -> Progress:
        if self.interactive:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("[bold]{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>10}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False,
            )
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def task(self, name: str, total: int | None) -> Task:
        task = Task(self, name, total)
        if self._rich is not None:
            task._id = self._rich.add_task(name, total=total, rate="")
        elif self.enabled:
            log.info("%s: starting (%s %s)", name, "?" if total is None else total, self.verb)
        return task

    def _update(self, task: Task) -> None:
        if self._rich is not None:
            self._rich.update(task._id, completed=task.done, rate=f"{task.rate:,.0f}/s")
            return
        now = time.monotonic()
        if self.enabled and now - task._last_log >= self.interval:
            task._last_log = now
            pct = f" ({100 * task.done / task.total:.0f}%)" if task.total else ""
            log.info("%s: %d/%s %s%s, %.0f/s", task.name, task.done,
                     "?" if task.total is None else task.total, self.verb, pct, task.rate)

    def _finish(self, task: Task) -> None:
        if self._rich is not None:
            total = max(task.total or 0, task.done)
            self._rich.update(task._id, total=total, completed=task.done,
                              rate=f"{task.rate:,.0f}/s")
        elif self.enabled:
            log.info("%s: done, %d %s in %.1f s", task.name, task.done, self.verb,
                     time.monotonic() - task.started)
