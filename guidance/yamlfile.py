"""Reading the YAML files a user hands us (plans, profiles, calibrations, paths) with one-line errors.

One reader and one schema check for every user file, so every loader says the same thing the same way:
the file, the field (as a dotted path), what is wrong; and a file from the bundled data folder is checked
against the manifest before it is believed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from guidance.errors import UserError
from guidance.resources import check_if_bundled, exists, is_file


# A settings file is small and shallow; these bound what a damaged or hostile one can cost to read.
MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 40  # nested lists and mappings
MAX_VALUES = 200_000  # values once aliases are expanded (a "billion laughs" file stops here)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (YAML would keep the last silently:
    two `margin_mm:` lines in a plan must not mean "whichever came second")."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: the constructor below says so
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _check_shape(doc: Any, path: Path) -> None:
    """Refuse a document nested deeper than MAX_DEPTH or expanding (through aliases) to more than MAX_VALUES."""
    stack = [(doc, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"too large: more than {MAX_VALUES} values (aliases expanding?)", path=path)
        if isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                raise UserError(f"nested more than {MAX_DEPTH} levels deep", path=path)
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """The parsed document; a missing file or bad YAML is a UserError naming the file (and the line)."""
    path = Path(path)
    if exists(path) and not is_file(path):
        raise UserError(f"is a folder, not a {what}" if path.is_dir() else f"not a regular file (a {what} is expected)",
                        path=path)
    if not is_file(path):
        raise UserError(f"{what} not found", path=path)
    check_if_bundled(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"too large for a {what} ({path.stat().st_size} bytes)", path=path)
        text = path.read_bytes().decode("utf-8")
        if text.startswith("\ufeff"):
            text = text[1:]  # a UTF-8 byte-order mark (Windows editors) is not part of the document
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError(_why(exc), path=path) from None
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror})", path=path) from None
    _check_shape(doc, path)
    return doc


def _why(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, RecursionError):
        return f"nested more than {MAX_DEPTH} levels deep"
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None)
    problem = " ".join(str(problem).split()) if problem else ""
    if len(problem) > 80:
        problem = problem[:77] + "..."
    return f"not valid YAML{where}" + (f": {problem}" if problem else "")


def _non_finite(doc: Any, at: tuple = ()) -> tuple | None:
    """Where the first NaN or infinity sits in a parsed document (YAML writes them `.nan`, `.inf`)."""
    if isinstance(doc, float) and not math.isfinite(doc):
        return at
    items: Iterable[tuple[Any, Any]]
    if isinstance(doc, dict):
        items = doc.items()
    elif isinstance(doc, list):
        items = enumerate(doc)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, at + (k,))
        if found is not None:
            return found
    return None


def error_field(error: Any, prefix: str = "") -> str:
    """The dotted field a jsonschema error is about, naming a missing or unknown key itself."""
    parts = [prefix] if prefix else []
    parts += [str(p) for p in error.absolute_path]
    if error.validator in ("required", "additionalProperties") and "'" in error.message:
        parts.append(error.message.split("'")[1])
    return ".".join(p for p in parts if p) or "(top level)"


def error_message(error: Any) -> str:
    """A short sentence for one jsonschema error, without dumping long values."""
    if error.validator == "required":
        return "missing field"
    if error.validator == "additionalProperties":
        return "unknown field"
    if error.validator == "type":
        shown = repr(error.instance)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return f"wrong type: expected {error.validator_value}, got {type(error.instance).__name__} {shown}"
    msg = error.message
    return msg if len(msg) <= 120 else msg[:117] + "..."


def validate(doc: Any, schema: dict, path: str | Path, prefix: str = "") -> None:
    """Check `doc` against a JSON schema and reject NaN or infinity anywhere in it.

    The deepest error is reported (a wrong type inside a zone beats "zones is invalid"); a NaN would pass
    every "minimum" check in the schema (comparisons with NaN are false both ways), so it is refused first.
    """
    import jsonschema

    if not isinstance(doc, dict):
        raise UserError("expected a mapping at the top level", path=path)
    bad = _non_finite(doc)
    if bad is not None:
        raise UserError("must be a finite number (not NaN or infinity)", path=path,
                        field=".".join(str(p) for p in ((prefix,) if prefix else ()) + bad))
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    if errors:
        err = max(errors, key=lambda e: len(e.absolute_path))
        raise UserError(error_message(err), path=path, field=error_field(err, prefix))
