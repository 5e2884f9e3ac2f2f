"""Mutated input files for the loader fuzz tests (tests/test_fuzz_loaders.py): deterministic, seeded.

A case is (name, bytes | DIRECTORY). Families:
- truncations at many offsets (every 1/40 of the file and seeded random ones);
- byte flips and inserted garbage at seeded places;
- binary garbage of several sizes; empty, whitespace-only and NUL files;
- encodings: UTF-16 (with and without BOM), UTF-32, Latin-1 with a non-ASCII character, a UTF-8 BOM;
- field-level (for structured files): every field of the document in turn given NaN, ±inf, huge and
  negative numbers, wrong types, deep nesting, very long text; each field removed; an unknown field added;
- DIRECTORY: a folder where the file is expected.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any, Callable, Iterator

import yaml

DIRECTORY = object()  # "make a folder here instead of a file"


def deep(n: int) -> Any:
    x: Any = 1
    for _ in range(n):
        x = [x]
    return x


BAD_VALUES: list[tuple[str, Any]] = [
    ("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("null", None), ("true", True), ("false", False),
    ("text", "abc"), ("empty text", ""), ("1e308", 1e308), ("-1e308", -1e308), ("10**40", 10**40), ("-1", -1),
    ("0", 0), ("2**63", 2**63), ("-0.5", -0.5), ("empty list", []), ("empty map", {}), ("list", [1, 2, 3]),
    ("map", {"a": 1}), ("deep", deep(60)), ("long text", "x" * 20000), ("list of text", ["a", "b"]),
    ("nested nan", [math.nan, 1.0, 2.0]), ("bytes-like", "\x00\x01\x02"),
]


def text_cases(base: bytes, rng: random.Random, *, cuts: int = 40, flips: int = 24) -> list[tuple[str, Any]]:
    """Byte-level mutations of a file's content."""
    n = len(base)
    out: list[tuple[str, Any]] = []
    offsets = sorted({0, 1, 2, n - 1} | {n * k // cuts for k in range(1, cuts)} | {rng.randrange(n) for _ in range(12)})
    out += [(f"truncated at byte {o}", base[:o]) for o in offsets if 0 <= o < n]
    for k in range(flips):
        b = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(n)] = rng.randrange(256)
        out.append((f"bytes flipped #{k}", bytes(b)))
    for k in range(6):
        i = rng.randrange(n)
        out.append((f"garbage inserted #{k}", base[:i] + rng.randbytes(rng.randint(1, 64)) + base[i:]))
    for size in (1, 7, 64, 4096, 300_000):
        out.append((f"binary garbage {size} B", rng.randbytes(size)))
    text = base.decode("utf-8", errors="replace")
    out += [
        ("empty", b""), ("whitespace", b" \n\t\n  \n"), ("NUL bytes", b"\x00" * 32),
        ("UTF-16 with BOM", text.encode("utf-16")), ("UTF-16-LE no BOM", text.encode("utf-16-le")),
        ("UTF-16-BE no BOM", text.encode("utf-16-be")), ("UTF-32", text.encode("utf-32")),
        ("Latin-1 with é", (text + "\n").replace("a", "\xe9", 1).encode("latin-1", errors="replace")),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + base), ("CRLF line ends", base.replace(b"\n", b"\r\n")),
        ("doubled", base + base), ("folder in its place", DIRECTORY),
    ]
    return out


def paths_of(doc: Any, at: tuple = ()) -> Iterator[tuple]:
    """Every path into a parsed document (mapping keys and list indices), the document's own first."""
    yield at
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths_of(v, at + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths_of(v, at + (i,))


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    doc = json.loads(json.dumps(doc))  # a copy (the documents here are JSON-like)
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return doc


def _delete(doc: Any, path: tuple) -> Any:
    doc = json.loads(json.dumps(doc))
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    del cur[path[-1]]
    return doc


def field_cases(doc: Any, rng: random.Random, *, per_field: int = 4, max_fields: int | None = None) -> list[tuple[str, Any]]:
    """Document-level mutations: (name, mutated document)."""
    out: list[tuple[str, Any]] = []
    paths = list(paths_of(doc))
    if max_fields is not None and len(paths) > max_fields:
        paths = [paths[0]] + rng.sample(paths[1:], max_fields - 1)
    for path in paths:
        where = ".".join(map(str, path)) or "(top)"
        for name, value in rng.sample(BAD_VALUES, per_field):
            out.append((f"{where} = {name}", _set(doc, path, value)))
        if path:
            out.append((f"{where} removed", _delete(doc, path)))
    for path in paths:
        target = doc
        for p in path:
            target = target[p]
        if isinstance(target, dict):
            out.append((f"{'.'.join(map(str, path)) or '(top)'} + unknown field", _set(doc, path, {**target, "zz_unknown": 1})))
    return out


def yaml_bytes(doc: Any) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8")


def json_bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode("utf-8")  # NaN and Infinity written as JSON's non-standard literals


def all_cases(base: bytes, doc: Any, dump: Callable[[Any], bytes], seed: int, **kw: Any) -> list[tuple[str, Any]]:
    rng = random.Random(seed)
    return text_cases(base, rng) + [(name, dump(d)) for name, d in field_cases(doc, rng, **kw)]
