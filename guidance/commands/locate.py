"""`guidance locate IMAGE X Y [--json]`: which zone is under pixel (X, Y) of a face image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from guidance.errors import UserError, native_stderr_silenced
from guidance.vision.capture.camera import load_camera
from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.capture.sources import Frame
from guidance.zones.mapper import ZoneMapper


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("locate", help="map an image pixel to a treatment zone",
                       description="Runs the face tracker on IMAGE and maps pixel (X, Y) to the chart, the zone "
                                   "and the signed distance (mm, positive inside) to the zone's boundary.")
    p.add_argument("image", help="image file")
    p.add_argument("x", type=float, help="pixel column")
    p.add_argument("y", type=float, help="pixel row")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--camera-calibration", metavar="CAM.yaml", help="intrinsics (default: uncalibrated)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.image)
    if not path.is_file():
        raise UserError("image not found", path=path)
    with native_stderr_silenced():  # libjpeg's own complaints about a damaged file: we say it once
        image = cv2.imread(str(path))
    if image is None:
        raise UserError("not a readable image", path=path)
    h, w = image.shape[:2]
    if not (0 <= args.x < w and 0 <= args.y < h):
        raise UserError(f"pixel ({args.x:g}, {args.y:g}) is outside the {w}x{h} image", path=path, field="x,y")
    camera = load_camera(args.camera_calibration) if args.camera_calibration else None
    obs = FaceTracker(TrackerConfig(smoothing=False), camera=camera).process(Frame(0, 0, image))
    result = ZoneMapper().locate(obs, args.x, args.y, (w, h), camera)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    if not result.face_found:
        print(f"{path}: no face found")
    elif result.chart_mm is None:
        print(f"{path}: ({args.x:g}, {args.y:g}) is off-surface (not on the face, neck or scalp)")
    else:
        u, v = result.chart_mm
        print(f"{path}: ({args.x:g}, {args.y:g}) -> {result.zone} [{result.kind}, {result.surface}] "
              f"chart ({u:.1f}, {v:.1f}) mm, {result.boundary_mm:+.1f} mm from the boundary")
    return 0
