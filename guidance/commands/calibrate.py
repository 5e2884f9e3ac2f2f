"""`guidance calibrate camera|handpiece`: camera intrinsics from a ChArUco board; tip offset by pivot calibration."""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

from guidance.outputs import output_file
from guidance.errors import UserError
from guidance.vision.capture.calibration import calibrate_from_frames
from guidance.vision.capture.camera import CameraModel
from guidance.vision.capture.camera_select import camera_for
from guidance.vision.handpiece.marker_detect import MarkerDetector
from guidance.vision.handpiece.marker_pose import PoseLimits, estimate_body_pose
from guidance.vision.handpiece.designs import CharucoDesign
from guidance.vision.handpiece.pivot import pivot_calibrate
from guidance.vision.handpiece.profiles import load_handpiece_profile, write_yaml_atomic
from guidance.vision.capture.sources import open_source
from guidance.vision.rigid import RigidPose


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="calibrate the camera (ChArUco board) or a handpiece (pivot)")
    what = p.add_subparsers(dest="what", metavar="WHAT")
    what.required = True

    c = what.add_parser("camera", help="intrinsics from views of the ChArUco board (`guidance markers` prints it)")
    c.add_argument("--source", required=True, help="camera index, video file, or image folder/glob")
    c.add_argument("-o", "--output", required=True, metavar="calibration/NAME.yaml")
    c.add_argument("--max-frames", type=int, default=900, help="stop reading after this many frames (live cameras)")
    c.add_argument("--max-views", type=int, default=40)
    c.add_argument("--max-rms", type=float, default=1.0, help="refuse to save above this RMS reprojection error (px)")
    c.set_defaults(func=run_camera)

    h = what.add_parser("handpiece", help="pivot calibration: rotate the handpiece about its tip resting in a dimple")
    h.add_argument("--source", required=True, help="camera index, video file, or image folder/glob")
    h.add_argument("--profile", required=True, metavar="P.yaml", help="handpiece profile whose tip offset to measure")
    h.add_argument("--camera-calibration", metavar="CAM.yaml")
    h.add_argument("-o", "--output", metavar="OUT.yaml", help="where to save (default: update the profile in place)")
    h.add_argument("--max-frames", type=int, default=900)
    h.add_argument("--max-rms", type=float, default=1.5, help="refuse to save above this RMS residual (mm)")
    h.set_defaults(func=run_handpiece)


def run_camera(args: argparse.Namespace) -> int:
    output_file(args.output, "--output", what="calibration file")  # before the frames, not after
    with open_source(args.source) as source:
        frames = ((f.index, f.image) for f, _ in zip(source, range(args.max_frames)))
        result = calibrate_from_frames(frames, CharucoDesign(), max_views=args.max_views, source=str(args.source))
    rejected = ", ".join(f"{v} {k}" for k, v in sorted(result.rejected.items())) or "none"
    if result.rms_px > args.max_rms:
        raise UserError(f"RMS reprojection error {result.rms_px:.2f} px exceeds {args.max_rms:.2f} px; not saved "
                        f"(views used {result.views_used}; rejected: {rejected})", path=args.source)
    result.camera.save(Path(args.output))
    cam = result.camera
    print(f"{args.output}: fx {cam.fx:.1f} fy {cam.fy:.1f} px, RMS {result.rms_px:.3f} px, "
          f"{result.views_used} views (rejected: {rejected})", file=sys.stderr)
    return 0


def run_handpiece(args: argparse.Namespace) -> int:
    if args.output:
        output_file(args.output, "--output", what="profile file")
    profile = load_handpiece_profile(args.profile)
    poses: list[RigidPose] = []
    with open_source(args.source) as source:
        detector = MarkerDetector(profile.body.dictionary, profile.body.ids)
        camera: CameraModel | None = None
        limits = PoseLimits()
        for frame, _ in zip(source, range(args.max_frames)):
            if camera is None:
                h, w = frame.image.shape[:2]
                camera = camera_for(args.camera_calibration, w, h, "calibrate handpiece")
            body = estimate_body_pose(profile.body, detector.detect(frame.image), camera, frame.t_capture_ns,
                                      None, limits)
            if body.valid and len(body.ids_used) >= 2:  # single-marker poses are too weak for this
                assert body.pose is not None, "a valid BodyPose carries its pose"
                poses.append(body.pose)
    result = pivot_calibrate(poses, max_rms_mm=args.max_rms)
    if not result.ok:
        raise UserError(f"pivot calibration refused: {result.reason}; profile not changed", path=args.source)
    assert profile.raw is not None, "load_handpiece_profile keeps the file content"
    assert camera is not None, "a successful pivot calibration used frames, so the camera was set"
    data = dict(profile.raw)
    data["tip_offset_mm"] = [round(float(v), 3) for v in result.tip_offset_mm]
    data["pivot_calibration"] = {
        "rms_mm": round(result.rms_mm, 3),
        "poses_used": result.poses_used,
        "poses_rejected": result.poses_rejected,
        "rotation_range_deg": round(result.rotation_range_deg, 1),
        "camera_calibrated": bool(camera.calibrated),
        "source": str(args.source),
        "calibrated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    out = args.output or args.profile
    write_yaml_atomic(out, data, "# Handpiece profile; tip_offset_mm measured by `guidance calibrate handpiece`.\n")
    t = result.tip_offset_mm
    print(f"{out}: tip offset ({t[0]:.2f}, {t[1]:.2f}, {t[2]:.2f}) mm, RMS {result.rms_mm:.2f} mm, "
          f"{result.poses_used} poses ({result.poses_rejected} rejected), rotation range "
          f"{result.rotation_range_deg:.0f} deg", file=sys.stderr)
    return 0
