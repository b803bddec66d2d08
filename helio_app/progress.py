"""The rich display of the library's progress reports (helio_core.progress): a bar per task, notes as lines."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from helio_core import progress


class _Task(progress.Task):
    def __init__(self, bars: Progress, task: TaskID) -> None:
        self.bars, self.id = bars, task

    def advance(self, amount: float = 1, status: str | None = None) -> None:
        self.bars.update(self.id, advance=amount, **({} if status is None else {"status": status}))

    def update(self, completed: float, status: str | None = None) -> None:
        self.bars.update(self.id, completed=completed, **({} if status is None else {"status": status}))

    def finish(self) -> None:
        self.bars.remove_task(self.id)


class RichProgress(progress.Progress):
    """Bars with a free `status` per task (loss, accuracy, ...); `show=False` for the non-main ranks of a
    torchrun job, whose bars would interleave with rank 0's. Use as a context manager."""

    def __init__(self, show: bool = True) -> None:
        self.bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            disable=not show,
            console=None if show else Console(quiet=True),
        )

    def __enter__(self) -> RichProgress:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(*exc)

    def task(self, description: str, total: float) -> _Task:
        return _Task(self.bars, self.bars.add_task(description, total=total, status=""))

    def note(self, message: str) -> None:
        self.bars.console.print(message, highlight=False)
