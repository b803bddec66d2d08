"""The one error type that reaches users: bad input or a damaged artifact, said in one line."""

from __future__ import annotations


class HelioError(Exception):
    """Bad input or a damaged artifact. The message names the file or key and what was expected."""


def first_line(error: Exception) -> str:
    """A library error's first line (or its type when it has no text): enough to say why, in one line."""
    return str(error).splitlines()[0] if str(error).strip() else type(error).__name__
