"""The one small progress helper: rich bars on stderr when enabled, silent otherwise.

The library stays quiet when called from Python; the CLI turns progress on with ``enable()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_enabled = False


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def console():
    from rich.console import Console

    return Console(stderr=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar when progress is enabled."""
    if not _enabled:
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total, console=console(), transient=False)


@contextlib.contextmanager
def bar(description: str, total: int | None):
    """A manual progress bar: ``with bar("windows", n) as advance: advance(1)``."""
    if not _enabled:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console(), transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def info(message: str) -> None:
    """A status line (stderr) when progress is enabled."""
    if _enabled:
        console().print(message)


@contextlib.contextmanager
def bars(*tasks: tuple[str, int | None]):
    """Several bars in one display (e.g. epochs and iterations).

    ``with bars(("epochs", 10), ("iterations", 250)) as update: update(1, advance=1, description="...")``;
    ``update(i, reset=True)`` restarts bar ``i``. Silent when progress is disabled.
    """
    if not _enabled:
        yield lambda index, advance=0, description=None, reset=False, completed=None, total=None: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console(), transient=False,
    ) as progress:
        ids = [progress.add_task(description, total=total) for description, total in tasks]

        def update(index: int, advance: float = 0, description: str | None = None, reset: bool = False,
                   completed: float | None = None, total: float | None = None) -> None:
            if reset:
                progress.reset(ids[index])
            progress.update(ids[index], advance=advance or None, description=description, completed=completed,
                            total=total)

        yield update
