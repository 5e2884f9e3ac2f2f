"""`guidance replay SESSION_DIR`: play a recording with its overlays, timeline strip and chart view."""

from __future__ import annotations

import argparse
import math
import sys
import warnings

from guidance.errors import UserError
from guidance.outputs import output_file


def register(sub: argparse._SubParsersAction) -> None:
    from guidance.review.player import KEYS_HELP
    p = sub.add_parser("replay", help="play a recorded session: overlays, coverage over time, denials, violations",
                       description=f"Window keys: {KEYS_HELP}. Works on a cut-off recording (up to its last "
                                   "good record).")
    p.add_argument("session", metavar="SESSION_DIR", help="a folder written by `guidance run --record`")
    p.add_argument("--start", type=int, default=0, metavar="FRAME", help="first frame shown")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed (x recorded time)")
    p.add_argument("--paused", action="store_true", help="open paused (window)")
    p.add_argument("--keys", metavar="K1,K2,...",
                   help="scripted keys, one per rendered picture (e.g. 'n,space,.,q'; names: space, left, right, "
                        "home, end, esc, comma, plus, minus, wait)")
    p.add_argument("--headless", action="store_true", help="no window; use with --out or --snapshot")
    p.add_argument("--out", metavar="VIDEO.mp4", help="headless: write the player pictures as a video")
    p.add_argument("--snapshot", type=int, metavar="FRAME", help="write one player picture of this frame (-o PNG)")
    p.add_argument("-o", "--output", metavar="PNG", help="where --snapshot writes")
    p.add_argument("--screenshot", metavar="PNG", help="on exit, save the last picture the player rendered")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from guidance.session.reader import open_session
    from guidance.review.player import PlayOptions, parse_keys, play, snapshot
    from guidance.review.timeline import build_timeline, session_notes

    if args.snapshot is not None and not args.output:
        raise UserError("--snapshot needs -o PNG", field="--output")
    if args.headless and args.snapshot is None and not args.out and not args.screenshot:
        raise UserError("headless replay needs --out VIDEO, --snapshot FRAME -o PNG or --screenshot PNG",
                        field="--headless")
    if not (args.speed > 0 and math.isfinite(args.speed)):
        raise UserError("must be a positive number", field="--speed")
    for value, flag in ((args.out, "--out"), (args.output, "--output"), (args.screenshot, "--screenshot")):
        if value:
            output_file(value, flag)  # before the recording is read, not after it has been played
    keys = parse_keys(args.keys) if args.keys else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once below, in plain words
        session = open_session(args.session)
    tl = build_timeline(session)  # a recording with nothing to play is refused before any warning
    for note in session_notes(session):  # damage and a cut, one line each; the player shows what it can
        print(f"guidance replay: warning: {args.session}: {note}", file=sys.stderr)
    if args.snapshot is not None:
        snapshot(tl, args.snapshot, args.output)
        print(f"snapshot: {args.output}")
        return 0
    opts = PlayOptions(window=not args.headless, out=args.out, keys=keys, start=args.start,
                       play=not args.paused, speed=args.speed, screenshot=args.screenshot)
    if opts.window:
        import os
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            raise UserError("no display (set DISPLAY, or use --headless --out VIDEO)", field="DISPLAY")
    st = play(tl, opts)
    print(f"replayed {args.session}: {tl.n} frames, {len(tl.pulses)} pulses, {len(tl.violations)} violations; "
          f"stopped at frame {st.frame}")
    if args.out:
        print(f"video: {args.out}")
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")
    return 0
