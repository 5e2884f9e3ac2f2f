"""Where a command will write: checked before it writes anything, with one line naming the path.

A command that would fail on its output (a folder that does not exist, a
recording folder that is not empty, a file name that is a folder) says so at
start-up, before it has opened a camera or made a single file: nothing is ever
half-written because of a mistake in a path. Missing folders are never created
on the user's behalf (a typo would silently put a session somewhere else).
"""

from __future__ import annotations

import os
from pathlib import Path

from guidance.errors import UserError


def output_file(path: str | Path, field: str, *, suffixes: tuple[str, ...] | None = None,
                what: str = "file") -> Path:
    """A file to be (over)written: its folder must exist and be writable, the name must not be a folder."""
    p = Path(path)
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise UserError(f"give a {what} name ending in {' or '.join(suffixes)}", path=p, field=field)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError("folder does not exist (create it first)", path=parent, field=field)
    if p.is_dir():
        raise UserError(f"is a folder; give a {what} name", path=p, field=field)
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError("not writable", path=p if p.exists() else parent, field=field)
    return p


def new_folder(path: str | Path, field: str) -> Path:
    """A folder to be made (or an empty one to fill): its parent must exist and be writable."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.exists() and not p.is_dir():
        raise UserError("exists and is not a folder", path=p, field=field)
    if p.is_dir() and any(p.iterdir()):
        raise UserError("folder exists and is not empty (choose a new one)", path=p, field=field)
    if not parent.is_dir():
        raise UserError("the folder to write into does not exist (create it first)", path=parent, field=field)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError("not writable", path=parent, field=field)
    return p
