"""Progress reporting with rich; ``quiet=True`` makes every call a no-op."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")


class Reporter:
    """A small facade over rich: messages and progress bars, silenced by ``quiet``."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        """Iterate over ``items`` with a progress bar."""
        if self.quiet:
            yield from items
            return
        with self.progress() as bar:
            task = bar.add_task(description, total=total if total is not None else _len(items))
            for item in items:
                yield item
                bar.advance(task)

    @contextlib.contextmanager
    def progress(self) -> Iterator[Progress]:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True, disable=self.quiet) as bar:
            yield bar


def _len(items: Iterable) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


SILENT = Reporter(quiet=True)
