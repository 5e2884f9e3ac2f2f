"""`guidance simulate --face-video VIDEO --path PATH.yaml -o SIM_DIR`: a scripted handpiece on a real face, with ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guidance import samples
from guidance.errors import UserError
from guidance.sim.simulate import simulate
from guidance.vision.capture.camera import load_camera


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="render a scripted handpiece path into a real face video, with per-frame ground truth",
        description="Writes SIM_DIR/simulated.avi (lossless FFV1), ground_truth.csv (one row per frame: tip px/mm, "
                    "chart position, true zone, contact), path.yaml (a copy) and info.json. Path file format and "
                    "columns: docs/simulate.md. Example: paths/demo_full_face.yaml.")
    p.add_argument("--face-video", metavar="VIDEO",
                   help="face video file, or the name of a pinned sample (e.g. WolfgangLanger_Pexels.mp4); not for "
                        "a body path (its plan has area: body), which is rendered on a synthetic body")
    p.add_argument("--path", required=True, metavar="PATH.yaml", help="handpiece path file")
    p.add_argument("-o", "--output", required=True, metavar="SIM_DIR", help="output folder (created)")
    p.add_argument("--handpiece", metavar="PROFILE.yaml",
                   help="handpiece profile (default: the path's plan's profile, else calibration/handpiece_default.yaml)")
    p.add_argument("--camera-calibration", metavar="CAM.yaml",
                   help="intrinsics to render with (default: the uncalibrated default, f = image width)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (previews, tests)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty SIM_DIR")
    p.add_argument("--size", metavar="WxH", help="frame the face video at this resolution (crop + scale, e.g. 640x480)")
    p.set_defaults(func=run)


def _face_video(spec: str | None) -> Path | None:
    if spec is None:
        return None
    p = Path(spec)
    if not p.exists() and spec in samples.MEMBERS:
        return samples.fetch(spec)
    return p


def run(args: argparse.Namespace) -> int:
    camera = load_camera(args.camera_calibration) if args.camera_calibration else None
    size: tuple[int, int] | None = None
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
            if min(w, h) < 64:
                raise ValueError
            size = (w, h)
        except ValueError:
            raise UserError("expected WIDTHxHEIGHT, e.g. 640x480", field="--size") from None

    def progress(i: int, n: int) -> None:
        if i == n or i % 100 == 0:
            print(f"\rguidance simulate: frame {i}/{n}", end="\n" if i == n else "", file=sys.stderr, flush=True)

    r = simulate(_face_video(args.face_video), args.path, args.output, profile_path=args.handpiece, camera=camera,
                 force=args.force, max_frames=args.max_frames, progress=progress, size=size)
    print(f"{r.out_dir}: {r.frames} frames at {r.fps:.3f} fps ({r.frames / r.fps:.1f} s of a {r.duration_s:.1f} s "
          f"path), face found in {r.face_found_frames}, tip on the skin in {r.contact_frames}")
    return 0
