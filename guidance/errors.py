"""Errors a user can cause, and how the CLI turns them into one line and exit code 2.

A practitioner who mistypes a path or ships a broken plan must get a sentence
that names the file and the field, not a traceback; everything else (a bug)
still raises normally so it is noticed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator


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
        super().__init__(one_line(f"{prefix}: {message}" if prefix else message))


def one_line(text: str, limit: int = 400) -> str:
    """One line of at most `limit` characters: a value echoed from a bad file cannot flood the terminal."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Native libraries that print straight to file descriptor 2 (libjpeg's "Corrupt JPEG data: ...") are
    silenced for the duration: a damaged image is reported by us, once, in words. Python's own writes to
    sys.stderr are unaffected outside the block; with no real stderr (captured), nothing is changed."""
    stream = sys.__stderr__
    try:
        fd = stream.fileno() if stream is not None else -1
    except (AttributeError, ValueError, OSError):
        fd = -1
    if stream is None or fd < 0:
        yield
        return
    stream.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
