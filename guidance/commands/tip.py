"""`guidance tip VIDEO --handpiece P.yaml [--camera-calibration CAM.yaml] -o TIPS.csv`: the tip, frame by frame."""

from __future__ import annotations

import argparse
import sys

from guidance.errors import UserError
from guidance.vision.capture.camera_select import camera_for
from guidance.vision.handpiece.tracker import HandpieceTracker
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.vision.capture.sources import open_source
from guidance.vision.handpiece.tip_csv import write_tip_csv


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tip", help="track the handpiece tip in a video; one CSV row per frame",
                       description="Columns: frame_index, t_capture_ns, tip_x_px, tip_y_px, tip_x_mm, tip_y_mm, "
                                   "tip_z_mm, speed_mm_s, confidence, reason, tip_sigma_mm, reprojection_rms_px, "
                                   "marker_ids, camera_calibrated (see docs/handpiece.md). Coordinates are empty "
                                   "when there is no tip; reason says why.")
    p.add_argument("video", help="video file, image folder or glob")
    p.add_argument("--handpiece", required=True, metavar="PROFILE.yaml", help="handpiece profile (calibration/*.yaml)")
    p.add_argument("--camera-calibration", metavar="CAM.yaml", help="intrinsics from `guidance calibrate camera`")
    p.add_argument("-o", "--output", required=True, metavar="TIPS.csv")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    profile = load_handpiece_profile(args.handpiece)
    with open_source(args.video) as source:
        frames = iter(source)
        first = next(frames, None)
        if first is None:
            raise UserError("no frames", path=args.video)
        h, w = first.image.shape[:2]
        camera = camera_for(args.camera_calibration, w, h, "tip")
        tracker = HandpieceTracker(profile, camera)
        stats = {"frames": 0, "valid": 0}

        def observations():
            for frame in _chain(first, frames):
                obs = tracker.process(frame.image, frame.t_capture_ns, frame.index)
                stats["frames"] += 1
                stats["valid"] += int(obs.valid)
                yield obs

        write_tip_csv(args.output, observations())
    print(f"{args.output}: {stats['frames']} frames, tip found in {stats['valid']}", file=sys.stderr)
    return 0


def _chain(first, rest):
    yield first
    yield from rest
