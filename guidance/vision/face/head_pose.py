"""Head pose from face landmarks: solvePnP against the project's canonical face (mm).

The canonical face (models/canonical_face.json, made by
models/make_canonical_face.py) gives the 3D position in millimetres of each of
the 468 mesh points on an average head, in a head frame whose axes match the
camera's for a frontal face (x to the image right, y down, z away from the
camera). Only landmarks on rigid parts of the face (forehead, nose, cheekbones,
eye corners) enter the fit, so a smile or an open mouth does not tilt the head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from guidance.errors import ModelIntegrityError
from guidance.vision.capture.camera import CameraModel
from guidance.resources import verified_path

# Rigid landmarks: forehead, glabella, nasal bridge and tip, eye corners,
# zygomatic region, temples. Mouth, lower lip and jaw are left out on purpose.
RIGID_LANDMARKS = (
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1,  # midline: forehead → nose tip
    109, 338, 67, 297, 103, 332, 69, 299, 104, 333,  # forehead
    33, 133, 362, 263, 130, 359, 243, 463,  # eye corners
    70, 300, 105, 334, 107, 336,  # brows (upper, stable part)
    116, 345, 123, 352, 50, 280, 36, 266, 205, 425,  # cheekbones
    234, 454, 127, 356, 93, 323,  # lateral face
    98, 327, 48, 278,  # alar base
)


def load_canonical_face(path: Path | None = None) -> np.ndarray:
    """The canonical face; the shipped one is checked against models/MANIFEST.json like the models."""
    path = Path(path) if path else verified_path("canonical_face", kind="data")
    if not path.exists():
        raise ModelIntegrityError("canonical face missing (run models/make_canonical_face.py)", path=path)
    data = json.loads(path.read_text())
    pts = np.asarray(data["vertices_mm"], dtype=np.float64)
    if pts.shape != (468, 3):
        raise ModelIntegrityError(f"expected 468x3 vertices, got {pts.shape}", path=path, field="vertices_mm")
    return pts


@dataclass(frozen=True)
class HeadPose:
    """Head frame → camera frame: x_cam = R @ x_head + t (millimetres)."""

    rvec: np.ndarray  # (3,) Rodrigues
    tvec_mm: np.ndarray  # (3,)
    reprojection_px: float  # RMS over the rigid landmarks
    calibrated: bool  # False when the camera intrinsics are the uncalibrated default
    valid: bool
    t_capture_ns: int

    @property
    def R(self) -> np.ndarray:
        return cv2.Rodrigues(self.rvec)[0]

    def euler_deg(self) -> tuple[float, float, float]:
        """(yaw, pitch, roll) in degrees, for display and tests."""
        R = self.R
        yaw = float(np.degrees(np.arcsin(-np.clip(R[2, 0], -1, 1))))
        pitch = float(np.degrees(np.arctan2(R[2, 1], R[2, 2])))
        roll = float(np.degrees(np.arctan2(R[1, 0], R[0, 0])))
        return yaw, pitch, roll


class HeadPoseEstimator:
    def __init__(self, canonical_mm: np.ndarray, *, max_reprojection_px: float = 8.0):
        self.canonical = canonical_mm
        self.idx = np.array(RIGID_LANDMARKS)
        self.object_points = canonical_mm[self.idx].astype(np.float64)
        self.max_reprojection_px = max_reprojection_px
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self._prev = None

    def estimate(self, landmarks_px: np.ndarray, camera: CameraModel, t_capture_ns: int) -> HeadPose:
        image_points = landmarks_px[self.idx, :2].astype(np.float64)
        if self._prev is not None:
            rvec, tvec = self._prev[0].copy(), self._prev[1].copy()
            ok, rvec, tvec = cv2.solvePnP(self.object_points, image_points, camera.K, camera.dist, rvec, tvec,
                                          useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        else:
            ok, rvec, tvec = cv2.solvePnP(self.object_points, image_points, camera.K, camera.dist, flags=cv2.SOLVEPNP_SQPNP)
        rvec, tvec = rvec.reshape(3), tvec.reshape(3)
        proj, _ = cv2.projectPoints(self.object_points, rvec, tvec, camera.K, camera.dist)
        rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - image_points) ** 2, axis=1))))
        valid = bool(ok) and tvec[2] > 0 and rms <= self.max_reprojection_px
        self._prev = (rvec, tvec) if valid else None
        return HeadPose(rvec, tvec, rms, camera.calibrated, valid, t_capture_ns)
