"""`guidance demo -o DIR`: the README's first command, on embedded sample media (no camera).

Today it tracks the face in the sample videos and writes annotated videos and
landmark files; it grows into the full simulated treatment session as the
live app lands.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from guidance import samples
from guidance.vision.landmark_run import track_video
from guidance.vision.video_out import save_npy_atomic

DEMO_VIDEOS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo on sample media (no camera needed)")
    p.add_argument("-o", "--output", default="out/demo", help="output folder (default out/demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name in DEMO_VIDEOS:
        video = samples.fetch(name)
        stem = Path(name).stem
        t0 = time.perf_counter()
        result = track_video(video, annotated=out / f"{stem}_annotated.mp4")
        save_npy_atomic(out / f"{stem}_landmarks.npy", result.landmarks)
        dt = time.perf_counter() - t0
        n = len(result.landmarks)
        print(f"{name}: {n} frames, face in {int(result.found.sum())} ({100 * result.found.mean():.1f} %), "
              f"{result.redetections} detector runs, {n / dt:.0f} frames/s including decode and drawing")
    print(f"annotated videos and landmark arrays (frames x 468 x 3, float32 px) in {out.resolve()}")
    return 0
