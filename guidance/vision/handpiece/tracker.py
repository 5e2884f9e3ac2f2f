"""Handpiece tracking: where the tip is this frame (camera mm and pixels), how fast it moves, how sure we are.

Every observation describes exactly one frame. When this frame's markers do not
give a trustworthy pose the observation is invalid with a reason, and the tip
fields are None: the gate never sees an old tip dressed up as a new one. The
last valid pose (at most `PoseLimits.prior_max_age_ns` old, also across a
refused frame) is only used to check a single marker's pose against the
motion, never to fill in a missing one; a single marker without it gives no
tip (see marker_pose.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.marker_detect import MarkerDetector
from guidance.vision.handpiece.marker_pose import (BodyPose, PoseLimits, estimate_body_pose, lateral_sigma_mm,
                                         point_covariance_mm2)
from guidance.vision.handpiece.profiles import HandpieceProfile

import cv2

# Tip uncertainty (1 sigma, mm) at which confidence falls to one half.
CONFIDENCE_HALF_SIGMA_MM = 1.5


@dataclass(frozen=True)
class TipObservation:
    frame_index: int
    t_capture_ns: int
    valid: bool
    reason: str  # empty when valid
    tip_px: tuple[float, float] | None
    tip_mm: tuple[float, float, float] | None  # camera frame
    velocity_mm_s: tuple[float, float, float] | None  # None: not yet known (first frame after (re)acquisition)
    speed_mm_s: float | None
    confidence: float  # 0 when invalid; 1/(1 + (sigma/1.5 mm)^2) otherwise
    tip_sigma_mm: float | None  # 1-sigma 3D tip uncertainty from the pose fit
    rms_px: float | None
    marker_ids: tuple[int, ...]
    rvec: tuple[float, float, float] | None  # handpiece frame -> camera
    tvec_mm: tuple[float, float, float] | None
    calibrated_camera: bool
    t_processed_ns: int
    tip_sigma_lateral_mm: float | None = None  # the part of tip_sigma_mm across the line of sight (moves the pixel)


class VelocityFilter:
    """Tip velocity from successive valid tips: finite differences smoothed with a time constant.

    A gap (invalid frame or more than `max_gap_ns` between samples) resets it, so a
    velocity never spans a period in which we did not see the tip; right after a
    reset the velocity is unknown (None), which the gate must treat as unsafe.
    """

    def __init__(self, tau_s: float = 0.05, max_gap_ns: int = 150_000_000):
        self.tau_s = tau_s
        self.max_gap_ns = max_gap_ns
        self._p: np.ndarray | None = None
        self._t: int | None = None
        self._v: np.ndarray | None = None

    def reset(self) -> None:
        self._p = self._t = self._v = None

    def update(self, p_mm: np.ndarray, t_ns: int) -> np.ndarray | None:
        if self._t is None or not (0 < t_ns - self._t <= self.max_gap_ns):
            self._p, self._t, self._v = p_mm.copy(), t_ns, None
            return None
        dt = (t_ns - self._t) * 1e-9
        raw = (p_mm - self._p) / dt
        if self._v is None:
            self._v = raw
        else:
            a = 1.0 - np.exp(-dt / self.tau_s)
            self._v = self._v + a * (raw - self._v)
        self._p, self._t = p_mm.copy(), t_ns
        return self._v.copy()


class HandpieceTracker:
    def __init__(self, profile: HandpieceProfile, camera: CameraModel, limits: PoseLimits = PoseLimits(),
                 velocity: VelocityFilter | None = None):
        self.profile = profile
        self.camera = camera
        self.limits = limits
        self.detector = MarkerDetector(profile.body.dictionary, profile.body.ids)
        self.velocity = velocity or VelocityFilter()
        self._prior: BodyPose | None = None

    def process(self, image: np.ndarray, t_capture_ns: int, frame_index: int) -> TipObservation:
        h, w = image.shape[:2]
        if (w, h) != self.camera.size:
            self.camera = self.camera.scaled_to(w, h)
        det = self.detector.detect(image)
        body = estimate_body_pose(self.profile.body, det, self.camera, t_capture_ns, self._prior, self.limits)
        return self.observe(body, frame_index)

    def observe(self, body: BodyPose, frame_index: int) -> TipObservation:
        """Turn a body pose into a tip observation (also used by replay and calibration)."""
        t_ns = body.t_capture_ns
        if not body.valid:
            # The last valid pose stays as the prior until it ages out (estimate_body_pose checks its age),
            # unless a lone marker is being acquired (then there is no fresh valid pose to lose).
            if body.tentative is not None:
                self._prior = body
            self.velocity.reset()
            return TipObservation(frame_index, t_ns, False, body.reason, None, None, None, None, 0.0, None,
                                  None if np.isnan(body.rms_px) else body.rms_px, body.ids_used, None, None,
                                  self.camera.calibrated, time.monotonic_ns())
        self._prior = body
        pose = body.pose
        tip = pose.apply(self.profile.tip_offset_mm.reshape(1, 3))[0]
        px, _ = cv2.projectPoints(tip.reshape(1, 3), np.zeros(3), np.zeros(3), self.camera.K, self.camera.dist)
        px = px.reshape(2)
        cov3 = point_covariance_mm2(pose, body.cov6, self.profile.tip_offset_mm)
        sigma = float("inf") if cov3 is None else float(np.sqrt(max(np.trace(cov3), 0.0)))
        sigma_lat = lateral_sigma_mm(cov3, tip)
        conf = 1.0 / (1.0 + (sigma / CONFIDENCE_HALF_SIGMA_MM) ** 2) if np.isfinite(sigma) else 0.0
        v = self.velocity.update(tip, t_ns)
        return TipObservation(
            frame_index, t_ns, True, "",
            (float(px[0]), float(px[1])), (float(tip[0]), float(tip[1]), float(tip[2])),
            None if v is None else (float(v[0]), float(v[1]), float(v[2])),
            None if v is None else float(np.linalg.norm(v)),
            float(conf), float(sigma), body.rms_px, body.ids_used,
            tuple(float(x) for x in pose.rvec), tuple(float(x) for x in pose.t_mm),
            self.camera.calibrated, time.monotonic_ns(), float(sigma_lat),
        )
