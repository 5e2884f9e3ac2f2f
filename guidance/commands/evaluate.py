"""`guidance evaluate -o OUT`: simulated sessions on the evaluation faces, judged against their ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guidance.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from guidance.evaluate.evaluation import DEFAULT_PATHS, RESULT_FILE

    p = sub.add_parser(
        "evaluate", help="sessions over face videos x paths x plans, judged against ground truth (safety, accuracy)",
        description="Per session: guidance simulate -> controller-sim (own process, CURVE, trigger held) -> "
                    "guidance run (headless, armed, realtime, recording) -> reprocess with the dose limits lifted "
                    f"-> figures against the ground truth. Writes OUT/{RESULT_FILE}, one folder per session, and "
                    "prints the tables and the issue's targets. Exit code 0 when it ran (failed sessions are "
                    "reported), 2 for user errors. Figures: docs/evaluate.md.")
    p.add_argument("-o", "--output", default="out/evaluate", metavar="OUT",
                   help="output folder (default out/evaluate; must be new or empty unless --force)")
    p.add_argument("--faces", nargs="+", metavar="VIDEO",
                   help="face videos: pinned sample names or files (default: the evaluation set of "
                        "guidance/data/face_sets.yaml)")
    p.add_argument("--paths", nargs="+", metavar="PATH", default=list(DEFAULT_PATHS),
                   help=f"simulation paths, bundled names or files (default: {' '.join(DEFAULT_PATHS)})")
    p.add_argument("--plans", nargs="+", metavar="PLAN",
                   help="judge every path under each of these plans (default: each path's own plan)")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="sessions at once (default: cores - 1, at least 1: a realtime run needs its core)")
    p.add_argument("--max-frames", type=int, metavar="N", help="shorten every session (development, tests)")
    p.add_argument("--size", default="640x480", metavar="WxH", help="camera frame size (default 640x480)")
    p.add_argument("--overlay", action="store_true", help="also write each session's overlay video (costs CPU)")
    p.add_argument("--force", action="store_true", help="write into a non-empty output folder (sessions are redone)")
    p.add_argument("--resume", action="store_true",
                   help="go on with the evaluation in OUT: sessions that ran and kept up are re-judged from their "
                        "recordings; failed or starved ones run again, keeping their simulations")
    p.add_argument("--print", dest="print_json", metavar="EVALUATION.json",
                   help="only print the tables of an earlier evaluation")
    p.set_defaults(func=run)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if min(w, h) < 64:
            raise ValueError
        return w, h
    except ValueError:
        raise UserError("expected WIDTHxHEIGHT, e.g. 640x480", field="--size") from None


def run(args: argparse.Namespace) -> int:
    import json

    from guidance.evaluate.evaluation import RESULT_FILE, EvaluationOptions, run_evaluation
    from guidance.evaluate.tables import report_lines

    if args.print_json:
        p = Path(args.print_json)
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"not a readable evaluation ({type(exc).__name__})", path=p) from None
    else:
        if args.max_frames is not None and args.max_frames < 2:
            raise UserError("must be at least 2", field="--max-frames")
        opts = EvaluationOptions(out=Path(args.output), faces=args.faces, paths=args.paths, plans=args.plans,
                                 jobs=args.jobs, max_frames=args.max_frames, size=_size(args.size),
                                 overlay=args.overlay, force=args.force, resume=args.resume)
        doc = run_evaluation(opts, log=lambda m: print(m, flush=True))
    for line in report_lines(doc):
        print(line)
    if not args.print_json:
        print(f"\nJSON: {Path(args.output) / RESULT_FILE}; one folder per session in {Path(args.output) / 'sessions'}")
    sys.stdout.flush()
    return 0
