"""`guidance reprocess SESSION_DIR [--plan OTHER.yaml] [--margin MM] -o NEW_DIR`: what-if on a recording."""

from __future__ import annotations

import argparse
import sys

from guidance.review.reprocess import reprocess


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reprocess", help="re-run a recording through today's gate, optionally with another plan/margin",
                       description="Writes a new recording (same video) with the new decisions, and comparison.json: "
                                   "decisions that changed, pulses that would now be blocked, coverage then vs now.")
    p.add_argument("session", help="recorded session folder")
    p.add_argument("--plan", help="another treatment plan (default: the plan as recorded)")
    p.add_argument("--margin", type=float, help="another boundary margin in mm")
    p.add_argument("-o", "--output", required=True, help="new session folder (must not exist or be empty)")
    p.set_defaults(func=run)


def _progress(i: int, n: int) -> None:
    if sys.stderr.isatty() and (i == n or i % 25 == 0):
        width = 30
        done = int(width * i / max(n, 1))
        print(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} frames", end="" if i < n else "\n", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    cmp = reprocess(args.session, args.output, plan_path=args.plan, margin_mm=args.margin, progress=_progress)
    for line in cmp.lines():
        print(line)
    print(f"new recording and comparison.json in {args.output}")
    return 0
