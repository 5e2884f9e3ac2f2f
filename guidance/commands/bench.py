"""`guidance bench VIDEO [--json]`: per-stage timings, medians and p99."""

from __future__ import annotations

import argparse
import json

from guidance import bench
from guidance.errors import UserError


def _size(text: str) -> tuple[int, int] | None:
    if text == "native":
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError("expected WIDTHxHEIGHT, e.g. 640x480, or 'native'") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the hot-path stages (median and p99)")
    p.add_argument("video", help="video to track (e.g. the sample single_face.mp4)")
    p.add_argument("--frames", type=int, default=600, help="frames to time (the video is looped; default 600)")
    p.add_argument("--size", type=_size, default=(640, 480), help="resize frames to WxH (default 640x480) or 'native'")
    p.add_argument("--raw", action="store_true", help="no temporal smoothing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise UserError("must be at least 1", field="--frames")
    result = bench.bench_face(args.video, frames=args.frames, size=args.size, smoothing=not args.raw)
    if args.json:
        print(json.dumps(result))
    else:
        print(bench.format_face(result))
    return 0
