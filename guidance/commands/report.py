"""`guidance report SESSION_DIR [...] -o report.html`: one self-contained HTML review of sessions."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML report of recorded sessions (summary, coverage, timeline, denials, "
                                      "violations, latency; a cohort table for several)")
    p.add_argument("sessions", nargs="+", metavar="SESSION_DIR", help="folders written by `guidance run --record`")
    p.add_argument("-o", "--output", required=True, metavar="report.html", help="the HTML file to write")
    p.add_argument("--max-thumbnails", type=int, default=24,
                   help="violation thumbnails per session (all violations are listed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from guidance.review.report import write_report

    result = write_report(args.sessions, args.output, max_thumbnails=args.max_thumbnails,
                          progress=not args.quiet)
    for line in result.lines():
        print(line)
    return 0
