"""`guidance keys generate DIR`: CurveZMQ key pairs for the service and a controller."""

from __future__ import annotations

import argparse

from guidance.device_bridge import keys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="make CurveZMQ key pairs for the permit link")
    p.add_argument("action", choices=["generate"], help="write service and controller key pairs and the allow-list")
    p.add_argument("dir", help="new (or empty) directory to write the keys into")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    written = keys.generate(args.dir)
    for name, path in written.items():
        print(f"{name}\t{path}")
    return 0
