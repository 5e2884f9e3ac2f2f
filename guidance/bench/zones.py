"""Zone-lookup cost, for `guidance bench` (measured here, never inside a timed test)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.capture.sources import Frame
from guidance.zones.mapper import ZoneMapper


def run_zone_bench(image: str | Path | np.ndarray, *, lookups: int = 5000, seed: int = 0) -> dict:
    """Median / p99 cost (µs) of one lookup on a prepared frame, and of preparing a frame.

    Points are drawn uniformly over the face's bounding box (plus 20 %), so
    face, off-mesh surfaces and background are all exercised.
    """
    img = cv2.imread(str(image)) if not isinstance(image, np.ndarray) else image
    if img is None:
        raise FileNotFoundError(image)
    obs = FaceTracker(TrackerConfig(smoothing=False)).process(Frame(0, 0, img))
    if not obs.found:
        return {"face_found": False}
    assert obs.landmarks is not None, "a found face has landmarks"
    mapper = ZoneMapper()
    size = (img.shape[1], img.shape[0])
    prep = []
    for _ in range(200):
        t0 = time.perf_counter_ns()
        frame = mapper.prepare(obs, size)
        prep.append(time.perf_counter_ns() - t0)
    assert frame is not None, "prepare gives a frame for a found face"
    lm = obs.landmarks[:, :2]
    lo, hi = lm.min(0), lm.max(0)
    pad = 0.2 * (hi - lo)
    pts = np.random.default_rng(seed).uniform(lo - pad, hi + pad, (lookups, 2))
    costs = np.empty(lookups)
    zones: dict[str | None, int] = {}
    for k, (x, y) in enumerate(pts):
        t0 = time.perf_counter_ns()
        r = frame.locate(float(x), float(y))
        costs[k] = time.perf_counter_ns() - t0
        zones[r.surface or r.zone] = zones.get(r.surface or r.zone, 0) + 1
    return {
        "face_found": True,
        "lookups": lookups,
        "lookup_median_us": float(np.median(costs) / 1e3),
        "lookup_p99_us": float(np.percentile(costs, 99) / 1e3),
        "prepare_median_us": float(np.median(prep) / 1e3),
        "hits_by_surface": zones,
    }
