"""Head-pose validity relative to the face's size: the demo's face keeps the 8 px limit, a close face gets a pose."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from guidance.sim.ground_truth import load_ground_truth
from guidance.sim.render import fit_frame
from guidance.sim.simulate import simulate
from guidance.vision.capture.camera import CameraModel
from guidance.vision.capture.sources import Frame
from guidance.vision.face.head_pose import (RIGID_LANDMARKS, REFERENCE_FACE_SIZE_PX, HeadPoseEstimator,
                                            face_size_px, load_canonical_face)
from guidance.vision.face.landmarks import ORIGINAL_LANDMARK_MODEL
from guidance.vision.face.tracker import FaceTracker, TrackerConfig

ZOOM = 2.5  # single_face at 640x480, zoomed 2.5x: a face as close as a 512x512 talking head's


def _zoom(img: np.ndarray, z: float) -> np.ndarray:
    h, w = img.shape[:2]
    cw, ch = int(w / z), int(h / z)
    x0, y0 = (w - cw) // 2, (h - ch) // 3
    return cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def _frames(path, n: int, zoom: float = 1.0) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        img = fit_frame(img, (640, 480))
        out.append(_zoom(img, zoom) if zoom != 1.0 else img)
    cap.release()
    return out


def test_the_limit_is_8_px_up_to_the_demo_face_and_grows_with_a_larger_face():
    est = HeadPoseEstimator(load_canonical_face())
    for calibrated in (False, True):
        assert est.limit_px(0.5 * REFERENCE_FACE_SIZE_PX, calibrated) == 8.0  # never tighter, never looser
        assert est.limit_px(REFERENCE_FACE_SIZE_PX, calibrated) == 8.0
        assert est.limit_px(float("nan"), calibrated) == 8.0
    assert est.limit_px(2 * REFERENCE_FACE_SIZE_PX, False) == pytest.approx(32.0)
    assert est.limit_px(2 * REFERENCE_FACE_SIZE_PX, True) == pytest.approx(16.0)
    square = np.array([[0, 0], [2, 0], [0, 2], [2, 2]], float)
    assert face_size_px(square) == pytest.approx(np.sqrt(2))


def test_the_demo_face_is_of_the_reference_size_and_keeps_the_old_limit(sample):
    cam = CameraModel.default(640, 480)
    tracker = FaceTracker(TrackerConfig(smoothing=False, landmark_model=ORIGINAL_LANDMARK_MODEL), cam)
    sizes = []
    for i, img in enumerate(_frames(sample("single_face.mp4"), 15)):
        obs = tracker.process(Frame(i, int(i * 1e9 / 30), img))
        assert obs.found and obs.head_pose.valid
        sizes.append(face_size_px(obs.landmarks_raw[list(RIGID_LANDMARKS)]))
    assert np.median(sizes) == pytest.approx(REFERENCE_FACE_SIZE_PX, abs=3.0)
    assert HeadPoseEstimator(load_canonical_face()).limit_px(np.median(sizes), False) < 8.7


def test_a_close_face_simulates_with_the_handpiece_drawn(sample, tmp_path):
    """With the fixed 8 px limit this face had no valid pose (residual ~21 px): no handpiece was drawn."""
    frames = _frames(sample("single_face.mp4"), 30, ZOOM)
    video = tmp_path / "close.avi"
    w = cv2.VideoWriter(str(video), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for img in frames:
        w.write(img)
    w.release()
    cam = CameraModel.default(640, 480)
    tracker = FaceTracker(TrackerConfig(smoothing=False, landmark_model=ORIGINAL_LANDMARK_MODEL), cam)
    poses = [o.head_pose for o in (tracker.process(Frame(i, int(i * 1e9 / 30), img)) for i, img in enumerate(frames))
             if o.found]
    assert len(poses) >= 25 and all(p.valid for p in poses)
    assert min(p.reprojection_px for p in poses) > 8.0  # what the fixed limit refused
    simulate(video, "demo_full_face", tmp_path / "sim", max_frames=30)
    gt = load_ground_truth(tmp_path / "sim")
    drawn = [r for r in gt if r.face_found and np.isfinite(r.tip_x_px)]
    assert len(drawn) >= 0.9 * len(gt), f"handpiece drawn on {len(drawn)} of {len(gt)} frames"
