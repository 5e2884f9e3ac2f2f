"""Marker stage benchmark: detection + pose + tip per 640x480 frame, on the handpiece rendered into real video.

Frames are rendered first (not timed); then only `HandpieceTracker.process`
is timed, frame after frame as in the live loop, so the search-window reuse
between frames counts as it would live. Used by `guidance bench`.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

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


# --- Tip accuracy and honesty of the stated sigma on a simulated session (guidance simulate) ----------------

def lateral_error_mm(est_mm: npt.ArrayLike, true_mm: npt.ArrayLike) -> float:
    """Error across the line of sight to the true tip (what moves the tip's pixel)."""
    d = np.asarray(true_mm, float) / max(float(np.linalg.norm(true_mm)), 1e-9)
    e = np.asarray(est_mm, float) - np.asarray(true_mm, float)
    return float(np.linalg.norm(e - np.dot(e, d) * d))


def webcam_degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cheaper camera than the simulator's: slight defocus (Gaussian 0.7 px), sensor noise 4 grey levels,
    JPEG quality 75. On rendered clips this brings the corner error to ~0.3 px RMS (0.1 px median), the noise
    the pose covariance assumes at least (PoseLimits.corner_noise_floor_px)."""
    import cv2

    f: np.ndarray = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.7)
    f += rng.normal(0.0, 4.0, f.shape).astype(np.float32)
    ok, buf = cv2.imencode(".jpg", np.clip(f + 0.5, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 75])
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if out is None:
        raise RuntimeError("JPEG round trip of the frame failed")
    return out


def track_simulation(sim_dir: str, tracker_factory=None, degrade=None, seed: int = 0) -> list[dict]:
    """Run the handpiece tracker over a `guidance simulate` folder; one row per frame with a handpiece drawn.

    Each row: the tracker's output (filtered and, where the tracker gives it, the single-frame measurement)
    next to the truth. `tracker_factory(profile, camera)` builds the tracker (default: HandpieceTracker);
    `degrade(image, rng)`, e.g. `webcam_degrade`, is applied to every frame first.
    """
    import json
    from pathlib import Path

    import cv2

    from guidance.sim.ground_truth import load_ground_truth
    from guidance.vision.capture.camera import CameraModel as _Cam

    sim = Path(sim_dir)
    info = json.loads((sim / "info.json").read_text())
    cam_d = info["camera"]
    camera = _Cam(np.array(cam_d["camera_matrix"], float), np.array(cam_d["dist_coeffs"], float),
                  tuple(cam_d["image_size"]), bool(cam_d.get("calibrated", False)))
    profile = load_handpiece_profile(info["handpiece_profile"]["source"])
    gt = load_ground_truth(sim)
    tracker = (tracker_factory or HandpieceTracker)(profile, camera)
    cap = cv2.VideoCapture(str(sim / info["video"]))
    rows = []
    rng = np.random.default_rng(seed)
    try:
        for g in gt:
            ok, img = cap.read()
            if not ok:
                break
            if degrade is not None:
                img = degrade(img, rng)
            t_ns = 1_000_000_000 + g.t_video_ns
            obs = tracker.process(img, t_ns, g.frame_index)
            if not np.isfinite(g.tip_x_px):
                continue
            true_mm = np.array([g.tip_x_mm, g.tip_y_mm, g.tip_z_mm])
            true_px = np.array([g.tip_x_px, g.tip_y_px])
            row = {"frame": g.frame_index, "valid": obs.valid, "reason": obs.reason, "contact": g.contact,
                   "segment_type": g.segment_type, "true_speed": g.speed_mm_s, "ids": obs.marker_ids}
            for tag, mm, px, _sig, sig_lat, speed in (
                    ("", obs.tip_mm, obs.tip_px, obs.tip_sigma_mm, obs.tip_sigma_lateral_mm, obs.speed_mm_s),
                    ("raw_", getattr(obs, "measured_tip_mm", obs.tip_mm), getattr(obs, "measured_tip_px", obs.tip_px),
                     getattr(obs, "measured_sigma_mm", obs.tip_sigma_mm),
                     getattr(obs, "measured_sigma_lateral_mm", obs.tip_sigma_lateral_mm),
                     getattr(obs, "measured_speed_mm_s", obs.speed_mm_s))):
                if obs.valid and mm is not None:
                    assert px is not None, "a valid observation's tip has its pixel with its mm"
                    row[tag + "sigma_lat"] = sig_lat
                    row[tag + "err_px"] = float(np.linalg.norm(np.subtract(px, true_px)))
                    row[tag + "err_mm"] = float(np.linalg.norm(np.subtract(mm, true_mm)))
                    row[tag + "err_lat"] = lateral_error_mm(mm, true_mm)
                    row[tag + "speed"] = float("nan") if speed is None else float(speed)
                else:
                    for key in ("sigma_lat", "err_px", "err_mm", "err_lat", "speed"):
                        row[tag + key] = float("nan")
            rows.append(row)
    finally:
        cap.release()
    return rows


def summarise_tracking(rows: list[dict], tag: str = "") -> dict:
    """Shares and error figures over the frames with a handpiece drawn (`tag` "raw_": the single-frame measurement).

    Beyond-k-sigma shares compare the lateral error (2D) with the stated lateral sigma (the root of the 2D
    covariance's trace): for an honest Gaussian, 37 % / 1.8 % / 0.01 % of frames lie beyond 1 / 2 / 3 sigma.
    """
    n = len(rows)
    v = [r for r in rows if r["valid"]]
    sig = np.array([r[tag + "sigma_lat"] for r in v], float)
    conf = 1.0 / (1.0 + (sig / 1.5) ** 2)
    err_px = np.array([r[tag + "err_px"] for r in v], float)
    err_mm = np.array([r[tag + "err_mm"] for r in v], float)
    err_lat = np.array([r[tag + "err_lat"] for r in v], float)
    ratio = err_lat / np.maximum(sig, 1e-9)
    conf_ok = conf >= 0.5
    sp = np.array([r[tag + "speed"] for r in v], float)
    tsp = np.array([r["true_speed"] for r in v], float)
    spm = np.isfinite(sp) & np.isfinite(tsp)

    def pct(a, q):
        return float(np.percentile(a, q)) if len(a) else float("nan")

    return {
        "frames": n,
        "valid": len(v) / max(n, 1),
        "gate_conf_ok": float(conf_ok.sum()) / max(n, 1),
        "err_px_median": pct(err_px, 50), "err_px_p90": pct(err_px, 90), "err_px_max": pct(err_px, 100),
        "err_mm_median": pct(err_mm, 50), "err_mm_p90": pct(err_mm, 90),
        "err_lat_median": pct(err_lat, 50), "err_lat_p90": pct(err_lat, 90),
        "sigma_lat_median": pct(sig, 50),
        "beyond_1sigma": float(np.mean(ratio > 1)) if len(v) else float("nan"),
        "beyond_2sigma": float(np.mean(ratio > 2)) if len(v) else float("nan"),
        "beyond_3sigma": float(np.mean(ratio > 3)) if len(v) else float("nan"),
        "beyond_3sigma_gated": float(np.mean(ratio[conf_ok] > 3)) if conf_ok.any() else float("nan"),
        "err_lat_p99_gated": pct(err_lat[conf_ok], 99),
        "speed_known": float(spm.sum()) / max(len(v), 1),
        "speed_abs_err_median": pct(np.abs(sp[spm] - tsp[spm]), 50),
        "speed_abs_err_p90": pct(np.abs(sp[spm] - tsp[spm]), 90),
    }
