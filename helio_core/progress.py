"""How the library reports progress: through a callback object the caller passes in, never by drawing anything.

A `Progress` starts tasks (a loop with a known total) and takes notes (a line worth keeping, e.g. an epoch's
validation accuracy). The library's default, `SILENT`, does nothing; the `helio` command passes a rich display
(helio_app.progress), tests pass nothing.
"""

from __future__ import annotations


class Task:
    """One loop's progress: advance by a count, or set how far it is; `status` is a short free text."""

    def advance(self, amount: float = 1, status: str | None = None) -> None:
        pass

    def update(self, completed: float, status: str | None = None) -> None:
        pass

    def finish(self) -> None:
        """The loop is over and its line may go (a sub-task inside a longer one)."""


class Progress:
    """The receiver of a library call's progress; this base class ignores everything."""

    def task(self, description: str, total: float) -> Task:
        return Task()

    def note(self, message: str) -> None:
        pass


SILENT = Progress()
