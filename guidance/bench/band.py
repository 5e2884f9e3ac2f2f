"""Head band stage benchmark: marker detection + band pose per 640x480 frame, on a rendered scalp session.

A short scalp session (sim/scalp.py: frontal, then a turn to the back) is
rendered first (not timed), then only `HeadReferenceTracker.track` (the
stage's work on the handpiece thread in a scalp session) is timed, frame
after frame as live, so the detector's window reuse counts as it would. Used
by `guidance bench --stage band`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from guidance.sim.scalp import ScalpScript, simulate_scalp
from guidance.sim.simulate import VIDEO_FILE
from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.head_band import HeadReferenceTracker
from guidance.vision.handpiece.profiles import load_head_band

SIZE = (640, 480)


def run_band_bench(frames: int = 120) -> dict:
    """Median and p99 (ms) of the band's detection + pose per frame, and in how many frames it was found."""
    fps = 30.0
    script = ScalpScript(fps=fps, frontal_s=0.5, turn_s=max(frames / fps - 0.5, 0.1), back_s=0.0, touches=False)
    with tempfile.TemporaryDirectory(prefix="guidance-band-bench-") as tmp:
        sim = simulate_scalp(Path(tmp) / "sim", script=script, size=SIZE).out_dir
        cap = cv2.VideoCapture(str(sim / VIDEO_FILE))
        images: list[np.ndarray] = []
        while len(images) < frames:
            ok, img = cap.read()
            if not ok or img is None:
                break
            images.append(img)
        cap.release()
    tracker = HeadReferenceTracker(load_head_band("head_band_default"), CameraModel.default(*SIZE))
    times_ms = np.empty(len(images))
    found = 0
    for k, img in enumerate(images):
        t0 = time.perf_counter_ns()
        band = tracker.track(img, int(k * 1e9 / fps))
        times_ms[k] = (time.perf_counter_ns() - t0) / 1e6
        found += int(band.valid)
    return {
        "stage": "head band detection + pose",
        "frames": len(images),
        "frame_size": list(SIZE),
        "median_ms": float(np.median(times_ms)) if len(images) else float("nan"),
        "p99_ms": float(np.percentile(times_ms, 99)) if len(images) else float("nan"),
        "band_found": found,
    }
