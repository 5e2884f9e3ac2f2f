"""Errors a user can cause, and how the CLI turns them into one line and exit code 2.

A practitioner who mistypes a path or ships a broken plan must get a sentence
that names the file and the field, not a traceback; everything else (a bug)
still raises normally so it is noticed.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input: bad file, missing field, busy port, etc."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.field = field
        parts = []
        if self.path:
            parts.append(self.path)
        if field:
            parts.append(field)
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class UserNotice(UserWarning):
    """Something a user should know that does not stop the command (a video that ended early).

    Issued with `warnings.warn(UserNotice(...))` by library code; the CLI prints it as one line,
    `guidance COMMAND: warning: ...`, never with Python's file-and-line decoration.
    """


def notice(message: str) -> None:
    """Issue a `UserNotice` (one line on stderr when running under the CLI)."""
    import warnings

    warnings.warn(UserNotice(message), stacklevel=2)


class ModelIntegrityError(UserError):
    """A model file is missing or does not match its recorded sha256."""


class SourceError(UserError):
    """A frame source could not be opened or failed while reading."""
