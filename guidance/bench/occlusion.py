"""How far the handpiece in front of the face moves the tip on the face chart, per landmark model.

On a `guidance simulate` session the truth is known: each contact frame's tip
pixel and its chart position (defined by mediapipe's landmark model on the clean
frame). The face is tracked over the simulated video as the live pipeline does
(`TrackerConfig()`, smoothing on), once per landmark model, and the true tip
pixel is looked up on the chart through the tracked landmarks. The difference
is the mapping error the handpiece causes (plus smoothing lag), in chart mm.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from guidance.errors import UserError
from guidance.sim.ground_truth import GROUND_TRUTH_FILE, GTFrame, load_ground_truth
from guidance.vision.face.landmarks import OCCLUSION_LANDMARK_MODEL, ORIGINAL_LANDMARK_MODEL
from guidance.vision.face.tracker import FaceObservation, FaceTracker, TrackerConfig
from guidance.vision.capture.sources import Frame
from guidance.zones.mapper import ZoneMapper


def chart_error(mapper: ZoneMapper, obs: FaceObservation, g: GTFrame, size: tuple[int, int]) -> tuple[float, float]:
    """(distance, v error) in chart mm of the true tip pixel looked up through `obs`; NaN off the mesh."""
    z = mapper.locate(obs, g.tip_x_px, g.tip_y_px, size)
    if z.chart_mm is None:
        return float("nan"), float("nan")
    du, dv = z.chart_mm[0] - g.chart_u_mm, z.chart_mm[1] - g.chart_v_mm
    return float(np.hypot(du, dv)), float(dv)


def tip_chart_errors(video: str | Path, model: str) -> dict:
    """Chart error (mm) of the true tip pixel looked up through `model`'s tracked landmarks."""
    video = Path(video)
    if not (video.parent / GROUND_TRUTH_FILE).is_file():
        raise UserError(f"not a `guidance simulate` output: no {GROUND_TRUTH_FILE} beside the video", path=video)
    gt = {g.frame_index: g for g in load_ground_truth(video.parent)}
    tracker = FaceTracker(TrackerConfig(landmark_model=model))
    mapper = ZoneMapper()
    cap = cv2.VideoCapture(str(video))
    err, dv_forehead = [], []
    i = 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            g = gt.get(i)
            obs = tracker.process(Frame(i, g.t_video_ns if g else i * 33_333_333, img))
            i += 1
            if g is None or not g.contact or not np.isfinite(g.tip_x_px):
                continue
            e, dv = chart_error(mapper, obs, g, (img.shape[1], img.shape[0])) if obs.found else (np.nan, np.nan)
            err.append(e)
            if np.isfinite(e) and g.true_zone.startswith("forehead"):
                dv_forehead.append(dv)
    finally:
        cap.release()
    errors = np.array(err, float)
    f = errors[np.isfinite(errors)]
    if not len(f):
        raise UserError("no contact frame with a tracked face in this simulated session", path=video)
    return {"model": model, "contact_frames": int(len(errors)), "unmapped": int(np.sum(~np.isfinite(errors))),
            "median_mm": float(np.median(f)), "p90_mm": float(np.percentile(f, 90)), "p99_mm": float(np.percentile(f, 99)),
            "forehead_dv_mm": float(np.mean(dv_forehead)) if dv_forehead else None}


def run_occlusion_bench(video: str | Path) -> dict:
    return {m: tip_chart_errors(video, m) for m in (ORIGINAL_LANDMARK_MODEL, OCCLUSION_LANDMARK_MODEL)}


def format_occlusion(r: dict) -> str:
    lines = ["tip chart error with the handpiece in front of the face (contact frames, true tip pixel):"]
    for m, s in r.items():
        fh = f"{s['forehead_dv_mm']:+.2f}" if s["forehead_dv_mm"] is not None else "n/a"
        lines.append(f"  {m:<26} median {s['median_mm']:.2f} mm  p90 {s['p90_mm']:.2f}  p99 {s['p99_mm']:.2f}  "
                     f"forehead v bias {fh} mm  unmapped {s['unmapped']}/{s['contact_frames']}")
    return "\n".join(lines)
