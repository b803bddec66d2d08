"""Rich progress bars for every loop that takes more than a second."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(show: bool = True) -> Progress:
    """A progress display with a free `status` field per task (loss, accuracy, ...); `show=False` for the
    non-main ranks of a torchrun job, whose bars would interleave with rank 0's."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not show,
        console=None if show else Console(quiet=True),
    )
