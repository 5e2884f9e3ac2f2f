"""Benchmarks: per-stage medians and p99, the figures the performance budget is judged on.

Timing lives here and not in tests: a shared 2-core machine makes timed
assertions flaky, while a benchmark run on a quiet machine is repeatable.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.capture.sources import Frame, open_source


def stats(values: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"median": float("nan"), "p99": float("nan"), "n": 0}
    return {"median": float(np.median(a)), "p99": float(np.percentile(a, 99)), "n": int(a.size)}


def load_frames(video: str | Path, size: tuple[int, int] | None, frames: int) -> list[Frame]:
    """Decode up to `frames` frames into memory (looping the video), so decoding is not timed."""
    images = []
    with open_source(video) as src:
        fps = src.fps or 30.0
        for f in src:
            img = f.image if size is None else cv2.resize(f.image, size, interpolation=cv2.INTER_AREA)
            images.append(img)
            if len(images) >= frames:
                break
    out = []
    for i in range(frames):
        # Loop back and forth (ping-pong) so the face does not jump at the seam.
        period = max(2 * len(images) - 2, 1)
        k = i % period
        j = k if k < len(images) else period - k
        out.append(Frame(i, int(i * 1e9 / fps), images[j]))
    return out


def bench_face(video: str | Path, *, frames: int = 600, size: tuple[int, int] | None = (640, 480),
               warmup: int = 10, smoothing: bool = True) -> dict:
    data = load_frames(video, size, frames + warmup)
    tracker = FaceTracker(TrackerConfig(smoothing=smoothing))
    for f in data[:warmup]:
        tracker.process(f)
    tracker.redetections = 0
    per_stage: dict[str, list[float]] = {k: [] for k in ("detector", "pre", "landmark", "post")}
    total, tracking, found = [], [], 0
    t0 = time.perf_counter()
    for f in data[warmup:]:
        s = time.perf_counter_ns()
        obs = tracker.process(f)
        ms = (time.perf_counter_ns() - s) / 1e6
        total.append(ms)
        found += obs.found
        if not obs.redetected:
            tracking.append(ms)
        for k in per_stage:
            if k in obs.timings_ms:
                per_stage[k].append(obs.timings_ms[k])
    wall = time.perf_counter() - t0
    n = len(total)
    # The detector runs only on re-detection; time it on its own too.
    detector_only = []
    for f in data[warmup:warmup + min(200, len(data) - warmup)]:
        s = time.perf_counter_ns()
        tracker.detector.detect(f.image)
        detector_only.append((time.perf_counter_ns() - s) / 1e6)
    h, w = data[0].image.shape[:2]
    all_s, trk_s = stats(total), stats(tracking)
    return {
        "video": str(video),
        "frame_size": [w, h],
        "frames": n,
        "faces_found": found,
        "fps": n / wall if wall > 0 else float("nan"),
        "redetections": tracker.redetections,
        "track_ms_median": trk_s["median"],
        "track_ms_p99": trk_s["p99"],
        "total_ms_median": all_s["median"],
        "total_ms_p99": all_s["p99"],
        "stages_ms": {**{k: stats(v) for k, v in per_stage.items()}, "detector (full frame)": stats(detector_only)},
    }


def format_face(r: dict) -> str:
    lines = [f"face tracking: {r['video']} at {r['frame_size'][0]}x{r['frame_size'][1]}, {r['frames']} frames, "
             f"face in {r['faces_found']}, re-detections {r['redetections']}, {r['fps']:.0f} fps",
             f"  {'stage':<22}{'median ms':>10}{'p99 ms':>10}{'n':>7}"]
    for k, s in r["stages_ms"].items():
        lines.append(f"  {k:<22}{s['median']:>10.3f}{s['p99']:>10.3f}{s['n']:>7}")
    lines.append(f"  {'total (tracking mode)':<22}{r['track_ms_median']:>10.3f}{r['track_ms_p99']:>10.3f}")
    lines.append(f"  {'total (all frames)':<22}{r['total_ms_median']:>10.3f}{r['total_ms_p99']:>10.3f}")
    return "\n".join(lines)


def bench_run(video: str | Path, plan: str | Path, *, frames: int | None = None) -> dict:
    """The whole live app on a video, as a practitioner runs it: real-time playback, the
    overlay rendered into a video, recording on, permits published over CURVE.

    Reports capture→publish latency (median, p99) and whether every processed
    frame reached the recording.
    """
    import tempfile

    from guidance.device_bridge.keys import generate
    from guidance.live.run import RunOptions, run_session
    from guidance.session.reader import open_session

    with tempfile.TemporaryDirectory() as tmp:
        generate(f"{tmp}/keys")
        opts = RunOptions(source=str(video), plan=str(plan), publish="tcp://127.0.0.1:*", report="tcp://127.0.0.1:*",
                          keys=f"{tmp}/keys", record=f"{tmp}/session", headless=True, out=f"{tmp}/overlay.mkv",
                          arm=True, max_frames=frames, linger_s=0.1)
        s = run_session(opts)
        session = open_session(f"{tmp}/session")
        lat = [(r.t_published_ns - r.t_capture_ns) / 1e6 for r in session.frames]
        stages = {
            "face": [(r.t_face_ns - r.t_capture_ns) / 1e6 for r in session.frames],
            "tip": [(r.t_tip_ns - r.t_capture_ns) / 1e6 for r in session.frames],  # in parallel with the face
            "zone+gate+publish": [(r.t_published_ns - max(r.t_face_ns, r.t_tip_ns)) / 1e6 for r in session.frames],
        }
        return {
            "video": str(video), "frames": s.frames, "recorded_frames": len(session.frames),
            "recorded_images": sum(1 for r in session.frames if r.video),
            "source_dropped": s.dropped_frames, "overlay_dropped": s.overlay_dropped,
            "latency_ms_median": float(np.median(lat)), "latency_ms_p99": float(np.percentile(lat, 99)),
            "stages_ms": {k: stats(v) for k, v in stages.items()},
        }
