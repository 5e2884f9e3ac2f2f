"""`guidance bench VIDEO [--json]`: per-stage timings of the hot path, medians and p99."""

from __future__ import annotations

import argparse
import json

from guidance.bench import stages as bench
from guidance.errors import UserError

STAGES = ("face", "markers", "zones", "bridge", "run", "occlusion")
DEFAULT_STAGES = ("face", "markers", "zones", "bridge")


def _size(text: str) -> tuple[int, int] | None:
    if text == "native":
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError("expected WIDTHxHEIGHT, e.g. 640x480, or 'native'") from None


def _stages(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in STAGES]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"stages are {', '.join(STAGES)} (comma-separated)")
    return parts


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the hot-path stages (median and p99)",
                       description="Face tracking on VIDEO (frames resized to 640x480 and decoded beforehand); "
                                   "marker detection + tip pose on the handpiece rendered into VIDEO's frames; "
                                   "permit publish -> controller receive over loopback with CURVE, and gate costs.")
    p.add_argument("video", help="video to track (e.g. the sample single_face.mp4)")
    p.add_argument("--stage", type=_stages, default=DEFAULT_STAGES,
                   help="comma-separated: face,markers,zones,bridge,run (default: face,markers,zones,bridge); "
                        "run = the whole live app in real time with overlay video, recording and CURVE permits; "
                        "occlusion = tip chart error per landmark model on a `guidance simulate` video (accuracy, not speed)")
    p.add_argument("--plan", default="full_face", help="plan for the run stage (default: the bundled full_face)")
    p.add_argument("--frames", type=int, default=600, help="frames to time (the video is looped; default 600)")
    p.add_argument("--size", type=_size, default=(640, 480), help="resize frames to WxH (default 640x480) or 'native'")
    p.add_argument("--raw", action="store_true", help="no temporal smoothing")
    p.add_argument("--handpiece", metavar="PROFILE.yaml", help="handpiece profile for the marker stage (default: the bundled handpiece_default)")
    p.add_argument("--console", action="store_true", help="with --stage run: the same session without and with "
                   "`guidance console` and a headless chromium watching its live page; the difference is the console's cost")
    p.add_argument("--rounds", type=int, default=1, help="with --console: pairs of runs, alternating (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise UserError("must be at least 1", field="--frames")
    result: dict = {}
    text: list[str] = []
    if "face" in args.stage:
        face = bench.bench_face(args.video, frames=args.frames, size=args.size, smoothing=not args.raw)
        result.update(face)
        text.append(bench.format_face(face))
    if "markers" in args.stage:
        from guidance.bench.markers import run_marker_bench
        m = run_marker_bench(args.video, args.handpiece, frames=min(args.frames, 600))
        result["markers"] = m
        text.append("marker detection + tip pose (640x480): "
                    + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))
    if "zones" in args.stage:
        import cv2

        from guidance.bench.zones import run_zone_bench
        from guidance.vision.capture.sources import open_source
        with open_source(args.video) as src:  # a frame of the video, at the benchmark's size
            first = next(iter(src)).image
        if args.size:
            first = cv2.resize(first, args.size, interpolation=cv2.INTER_AREA)
        z = run_zone_bench(first)
        result["zones"] = z
        text.append("zone lookup (one point, prepared frame) and frame preparation: "
                    + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in z.items()))
    if "bridge" in args.stage:
        from guidance.bench.bridge import run_bridge_bench
        b = run_bridge_bench(n=min(max(args.frames, 200), 2000), curve=True)
        result["bridge"] = b
        text.append("permit bridge (loopback, CURVE on): " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in b.items()))
    if "run" in args.stage and args.console:
        from guidance.bench.console import bench_console, format_console
        c = bench_console(args.video, frames=args.frames, rounds=args.rounds)
        result["console"] = c
        text.append(format_console(c))
    elif "run" in args.stage:
        r = bench.bench_run(args.video, args.plan)
        result["run"] = r
        text.append(f"live app (real time, overlay + recording + CURVE): {r['frames']} frames, recorded {r['recorded_frames']} "
                    f"({r['recorded_images']} with image), capture→publish median {r['latency_ms_median']:.2f} ms, "
                    f"p99 {r['latency_ms_p99']:.2f} ms; source dropped {r['source_dropped']}, overlay dropped {r['overlay_dropped']}")
        for k, st in r["stages_ms"].items():
            text.append(f"  {k:<20} median {st['median']:.3f} ms  p99 {st['p99']:.3f} ms")
    if "occlusion" in args.stage:
        from guidance.bench.occlusion import format_occlusion, run_occlusion_bench
        o = run_occlusion_bench(args.video)
        result["occlusion"] = o
        text.append(format_occlusion(o))
    print(json.dumps(result) if args.json else "\n".join(text))
    return 0
