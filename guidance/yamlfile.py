"""Reading the YAML files a user hands us (plans, profiles, calibrations, paths) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from guidance.errors import UserError


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """The parsed document; a missing file or bad YAML is a UserError naming the file (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found", path=path)
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"not valid YAML{where}", path=path) from None
