"""The one error type that reaches users, and the guard that prints it as one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class HelioError(Exception):
    """Bad input or a damaged artifact. The message names the file or key and what was expected."""


def first_line(error: Exception) -> str:
    """A library error's first line (or its type when it has no text): enough to say why, in one line."""
    return str(error).splitlines()[0] if str(error).strip() else type(error).__name__


def exit_on_error(main: Callable[[], T]) -> T:
    """Run an entry point; turn a HelioError into a one-line message and exit status 2."""
    try:
        return main()
    except HelioError as error:
        print(f"helio: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
