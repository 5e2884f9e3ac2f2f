"""The `guidance` command line.

Each command lives in its own module under `guidance/commands/` exposing
`register(subparsers)`; this file only assembles them and turns user errors
into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from guidance import __version__
from guidance.errors import UserError

# Modules under guidance.commands, each with register(subparsers).
COMMAND_MODULES = [
    "landmarks",
    "bench",
    "media",
    "demo",
    "evaluate",
    "controller_sim",
    "keys",
    "tip",
    "calibrate",
    "markers",
    "plan",
    "locate",
    "atlas",
    "simulate",
    "run",
    "reprocess",
    "replay",
    "report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guidance",
        description="Camera-based treatment guidance for needle-free mesotherapy.",
    )
    parser.add_argument("--version", action="version", version=f"guidance {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"guidance.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except UserError as exc:
        print(f"guidance {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"guidance {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
