"""`guidance landmarks VIDEO -o OUT.npy`: the face mesh of every frame of a video."""

from __future__ import annotations

import argparse

from guidance.outputs import output_file
from guidance.vision.capture.camera import load_camera
from guidance.vision.face.track_video import track_video
from guidance.vision.capture.video_out import save_npy_atomic


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("landmarks", help="track the face in a video; write (frames, 468, 3) float32 landmarks",
                       description="Writes a float32 array (frames, 468, 3) of landmark pixel coordinates "
                                   "(x, y, and z in the same pixel scale; smaller z = nearer the camera), "
                                   "NaN for frames with no face.")
    p.add_argument("video", help="video file, image, image folder or glob")
    p.add_argument("-o", "--output", required=True, help="output .npy")
    p.add_argument("--raw", action="store_true", help="turn temporal smoothing off")
    p.add_argument("--annotated", metavar="VIDEO.mp4", help="also write a video with the mesh drawn")
    p.add_argument("--camera-calibration", metavar="CAM.yaml", help="intrinsics for head pose (default: uncalibrated)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output_file(args.output, "--output", what=".npy file")  # before minutes of tracking, not after
    if args.annotated:
        output_file(args.annotated, "--annotated", what="video file")
    camera = load_camera(args.camera_calibration) if args.camera_calibration else None
    result = track_video(args.video, raw=args.raw, camera=camera, annotated=args.annotated)
    save_npy_atomic(args.output, result.landmarks)
    n = len(result.landmarks)
    print(f"{args.output}: {n} frames, face in {int(result.found.sum())}, re-detections {result.redetections}")
    return 0
