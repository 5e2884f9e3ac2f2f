"""Marker stage benchmark: detection + pose + tip per 640x480 frame, on the handpiece rendered into real video.

Frames are rendered first (not timed); then only `HandpieceTracker.process`
is timed, frame after frame as in the live loop, so the search-window reuse
between frames counts as it would live. Used by `guidance bench`.
"""

from __future__ import annotations

import time

import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.tracker import HandpieceTracker
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.sim.render import SceneRenderer, handpiece_item, sample_tip_pose, video_frames

DEFAULT_PROFILE = "handpiece_default"  # bundled (guidance/data/calibration)
SIZE = (640, 480)


def run_marker_bench(video_path: str, profile_path: str | None, frames: int = 300) -> dict:
    """Median and p99 (ms) of detection + pose per frame, and how many frames gave a tip."""
    profile = load_handpiece_profile(profile_path or DEFAULT_PROFILE)
    camera = CameraModel.default(*SIZE)
    backgrounds = video_frames(video_path, SIZE, limit=min(frames, 120)) or [np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)]
    renderer = SceneRenderer(camera, supersample=1)
    rng = np.random.default_rng(0)
    # A slow stroke with a new random pose every 30 frames: mostly tracking, some re-acquisition.
    images = []
    pose = None
    velocity = np.zeros(3)
    for k in range(frames):
        if k % 30 == 0:
            pose = sample_tip_pose(profile, camera, rng, margin=0.3)
            velocity = rng.normal(0, 40, 3)
        assert pose is not None, "drawn at k == 0"
        p = pose.advanced(velocity, np.zeros(3), (k % 30) / 30.0)
        img, _ = renderer.render(backgrounds[k % len(backgrounds)], [handpiece_item(profile, p)],
                                 noise_sigma=2.0, rng=rng)
        images.append(img)
    tracker = HandpieceTracker(profile, camera)
    times_ms = np.empty(frames)
    valid = 0
    for k, img in enumerate(images):
        t0 = time.perf_counter_ns()
        obs = tracker.process(img, k * 33_333_333, k)
        times_ms[k] = (time.perf_counter_ns() - t0) / 1e6
        valid += int(obs.valid)
    return {
        "stage": "marker detection + pose",
        "frames": frames,
        "frame_size": list(SIZE),
        "median_ms": float(np.median(times_ms)),
        "p99_ms": float(np.percentile(times_ms, 99)),
        "tip_found": valid,
    }
