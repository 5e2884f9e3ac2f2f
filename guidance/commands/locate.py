"""`guidance locate IMAGE X Y [--json]`: which zone is under pixel (X, Y) of a face image (of whichever face the
pixel lies on, when the picture has several)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from guidance.errors import UserError, native_stderr_silenced
from guidance.vision.capture.camera import load_camera
from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.zones.mapper import ZoneLookup, ZoneMapper


def locate_on_faces(mapper: ZoneMapper, faces: list, x: float, y: float, size: tuple[int, int],
                    camera=None) -> tuple[ZoneLookup, int | None]:
    """The lookup on the face whose mesh contains (x, y) (the largest, i.e. nearest, if several do); else on the
    face whose neck, décolletage or scalp surface does (the nearest one); else off-surface beside the nearest face.
    Returns the lookup and the face's index in `faces` (None without a face)."""
    if not faces:
        return mapper.locate(None, x, y, size, camera), None
    looks = [mapper.locate(f, x, y, size, camera) for f in faces]
    for i, z in enumerate(looks):  # faces come largest first
        if z.triangle is not None:
            return z, i
    centres = [f.landmarks[:, :2].mean(axis=0) for f in faces]
    order = sorted(range(len(faces)), key=lambda i: float((centres[i][0] - x) ** 2 + (centres[i][1] - y) ** 2))
    for i in order:
        if looks[i].chart_mm is not None:
            return looks[i], i
    return looks[order[0]], order[0]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("locate", help="map an image pixel to a treatment zone",
                       description="Finds every face in IMAGE and maps pixel (X, Y), on the face it lies on, to the chart, the zone "
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
    faces = FaceTracker(TrackerConfig(smoothing=False), camera=camera).find_faces(image)
    result, k = locate_on_faces(ZoneMapper(), faces, args.x, args.y, (w, h), camera)
    if args.json:
        box = None
        landmarks = faces[k].landmarks if k is not None else None
        if landmarks is not None:
            lm = landmarks[:, :2]
            box = [round(float(v), 1) for v in (*lm.min(axis=0), *lm.max(axis=0))]
        print(json.dumps({**result.to_json(), "face": k, "faces": len(faces), "face_box": box}))
        return 0
    which = f" on face {k + 1} of {len(faces)}" if len(faces) > 1 and k is not None else ""
    if not result.face_found:
        print(f"{path}: no face found")
    elif result.chart_mm is None:
        print(f"{path}: ({args.x:g}, {args.y:g}) is off-surface (not on the face, neck or scalp of any of "
              f"{len(faces)} face(s))")
    else:
        u, v = result.chart_mm
        print(f"{path}: ({args.x:g}, {args.y:g}) -> {result.zone} [{result.kind}, {result.surface}]{which} "
              f"chart ({u:.1f}, {v:.1f}) mm, {result.boundary_mm:+.1f} mm from the boundary")
    return 0
