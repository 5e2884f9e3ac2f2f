"""The Jinja2 environment of the HTML the project writes: the report's templates, which the console shares.

`environment(*more)` loads from guidance/review/templates/ and, before it, any
further template folders (the console passes its own), so the console's pages can
include the report's `report_body.html` and `report.css` unchanged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).with_name("templates")


@lru_cache(maxsize=4)
def environment(*more: str) -> Environment:
    return Environment(loader=FileSystemLoader([*more, str(TEMPLATES)]), autoescape=select_autoescape(["html"]),
                       undefined=StrictUndefined, trim_blocks=False)
