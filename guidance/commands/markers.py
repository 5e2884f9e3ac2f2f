"""`guidance markers -o DIR`: print-ready handpiece clip, head band, skin patch and ChArUco board sheets at true scale."""

from __future__ import annotations

import argparse
import sys

from guidance.errors import UserError
from guidance.vision.handpiece.printouts import write_sheets


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("markers", help="write print-ready marker sheets (PDF and PNG with DPI) at true scale")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--dpi", type=int, default=600, help="raster resolution (default 600)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 150 <= args.dpi <= 1200:
        raise UserError("must be between 150 and 1200", field="--dpi")
    try:
        paths = write_sheets(args.output, args.dpi)
    except OSError as exc:
        raise UserError(f"cannot write ({exc.strerror})", path=args.output) from None
    for p in paths:
        print(p)
    print("print at 100 % / actual size; check the 100 mm bar with a ruler", file=sys.stderr)
    return 0
