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
    # Since the tip filter (TipFilter): tip_px, tip_mm, velocity, speed, confidence and both sigmas above are the
    # filtered estimate for this frame's capture time (this frame's measurement fused with the earlier ones by a
    # constant-velocity Kalman filter). This frame's own measurement, as the fields above were before the filter:
    measured_tip_px: tuple[float, float] | None = None
    measured_tip_mm: tuple[float, float, float] | None = None
    measured_sigma_mm: float | None = None
    measured_sigma_lateral_mm: float | None = None
    measured_speed_mm_s: float | None = None  # finite differences of measured tips, 50 ms smoothing (VelocityFilter)
    speed_sigma_mm_s: float | None = None  # 1-sigma of speed_mm_s along the velocity, from the filter's covariance
    filter_frames: int = 0  # measurements fused since the filter (re)started, this frame included; 1 = this one alone
    filter_reset: str = ""  # why the filter restarted at this frame: start, gap, innovation; empty if it went on


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


# Restart reasons (TipObservation.filter_reset).
FILTER_START = "start"  # no earlier state (first measurement, or the filter was reset by an invalid stretch)
FILTER_GAP = "gap"  # the last measurement is older than TipFilter.max_gap_ns
FILTER_INNOVATION = "innovation"  # this measurement disagrees with the prediction beyond chance


@dataclass(frozen=True)
class FilterOutput:
    x_mm: np.ndarray  # tip, camera frame
    P_mm2: np.ndarray  # its 3x3 covariance
    v_mm_s: np.ndarray  # velocity (meaningless while frames == 1)
    Pv: np.ndarray  # its 3x3 covariance
    frames: int  # measurements fused since the (re)start, this one included
    reset: str  # restart reason at this measurement, "" when it went on


class TipFilter:
    """Constant-velocity Kalman filter on the tip position (camera mm), fed with each frame's measurement and
    its 3x3 covariance from the pose fit.

    The motion model is white-noise acceleration with spectral density `accel_psd` (mm^2/s^3 per axis): over dt
    the position becomes uncertain by about sqrt(accel_psd * dt^3 / 3) even with the velocity known, so a frame
    after a dropout, or after fast motion, gets little from the past. It is set from the simulator's true tip
    motion (the skin follows the head, and the placed tip carries the face tracker's landmark jitter): the
    sigma it states holds on rendered sessions (docs/handpiece.md, "Tip filter").

    A measurement farther from the prediction than chance allows (squared Mahalanobis distance of the
    innovation above `gate_chi2`, 3 degrees of freedom) restarts the filter from it: a wrong prediction must not
    drag a right measurement, and the measurement stands alone with its own sigma, as without a filter. So does
    a measurement more than `max_gap_ns` after the last one.
    """

    def __init__(self, accel_psd_mm2_s3: float = 15_000.0, max_gap_ns: int = 150_000_000, gate_chi2: float = 16.27,
                 initial_velocity_sigma_mm_s: float = 1000.0):
        self.accel_psd = float(accel_psd_mm2_s3)
        self.max_gap_ns = int(max_gap_ns)
        self.gate_chi2 = float(gate_chi2)
        self.v0_var = float(initial_velocity_sigma_mm_s) ** 2
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None  # (6,) position, velocity
        self._P: np.ndarray | None = None
        self._t: int | None = None
        self._n = 0

    def _start(self, z: np.ndarray, R: np.ndarray, t_ns: int, why: str) -> FilterOutput:
        self._x = np.concatenate([z, np.zeros(3)])
        self._P = np.zeros((6, 6))
        self._P[:3, :3] = R
        self._P[3:, 3:] = np.eye(3) * self.v0_var
        self._t, self._n = t_ns, 1
        return self._out(why)

    def _out(self, why: str) -> FilterOutput:
        assert self._x is not None and self._P is not None, "called right after _start or update set the state"
        return FilterOutput(self._x[:3].copy(), self._P[:3, :3].copy(), self._x[3:].copy(), self._P[3:, 3:].copy(),
                            self._n, why)

    def predict(self, t_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
        """State and covariance predicted to t_ns (None without a state, or past the gap limit)."""
        if self._t is None or not (0 <= t_ns - self._t <= self.max_gap_ns):
            return None
        assert self._x is not None and self._P is not None, "state, covariance and time are set together"
        dt = (t_ns - self._t) * 1e-9
        F = np.eye(6)
        F[:3, 3:] = np.eye(3) * dt
        q = self.accel_psd
        Q = np.zeros((6, 6))
        Q[:3, :3] = np.eye(3) * q * dt ** 3 / 3
        Q[:3, 3:] = Q[3:, :3] = np.eye(3) * q * dt ** 2 / 2
        Q[3:, 3:] = np.eye(3) * q * dt
        return F @ self._x, F @ self._P @ F.T + Q

    def update(self, z_mm: np.ndarray, R_mm2: np.ndarray, t_ns: int) -> FilterOutput:
        z = np.asarray(z_mm, float).reshape(3)
        R = np.asarray(R_mm2, float).reshape(3, 3)
        if self._t is None:
            return self._start(z, R, t_ns, FILTER_START)
        pred = self.predict(t_ns)
        if pred is None:
            return self._start(z, R, t_ns, FILTER_GAP)
        x, P = pred
        S = P[:3, :3] + R
        y = z - x[:3]
        try:
            Sinv = np.linalg.inv(S)
        except np.linalg.LinAlgError:
            return self._start(z, R, t_ns, FILTER_INNOVATION)
        if float(y @ Sinv @ y) > self.gate_chi2:
            return self._start(z, R, t_ns, FILTER_INNOVATION)
        K = P[:, :3] @ Sinv
        self._x = x + K @ y
        IKH = np.eye(6)
        IKH[:, :3] -= K
        # Joseph form: stays symmetric positive semi-definite whatever the rounding.
        self._P = IKH @ P @ IKH.T + K @ R @ K.T
        self._P = (self._P + self._P.T) / 2
        self._t = t_ns
        self._n += 1
        return self._out("")


class HandpieceTracker:
    def __init__(self, profile: HandpieceProfile, camera: CameraModel, limits: PoseLimits = PoseLimits(),
                 velocity: VelocityFilter | None = None, tip_filter: TipFilter | None | bool = True):
        """`tip_filter`: True for the default TipFilter, a TipFilter, or False/None to output each frame's
        measurement alone (the tracker before the filter; used to measure what the filter buys)."""
        self.profile = profile
        self.camera = camera
        self.limits = limits
        self.detector = MarkerDetector(profile.body.dictionary, profile.body.ids)
        self.velocity = velocity or VelocityFilter()
        self.tip_filter: TipFilter | None = TipFilter() if tip_filter is True else (tip_filter or None)
        self._prior: BodyPose | None = None
        self._last_valid = False

    def process(self, image: np.ndarray, t_capture_ns: int, frame_index: int) -> TipObservation:
        h, w = image.shape[:2]
        if (w, h) != self.camera.size:
            self.camera = self.camera.scaled_to(w, h)
        det = self.detector.detect(image)
        body = estimate_body_pose(self.profile.body, det, self.camera, t_capture_ns, self._prior, self.limits)
        return self.observe(body, frame_index)

    def _project(self, p_mm: np.ndarray) -> np.ndarray:
        px, _ = cv2.projectPoints(p_mm.reshape(1, 3), np.zeros(3), np.zeros(3), self.camera.K, self.camera.dist)
        return px.reshape(2)

    def observe(self, body: BodyPose, frame_index: int) -> TipObservation:
        """Turn a body pose into a tip observation (also used by replay and calibration)."""
        t_ns = body.t_capture_ns
        if not body.valid:
            # The last valid pose stays as the prior until it ages out (estimate_body_pose checks its age),
            # unless a lone marker is being acquired (then there is no fresh valid pose to lose).
            if body.tentative is not None:
                self._prior = body
            self.velocity.reset()
            self._last_valid = False
            # The tip filter keeps its state: a measurement after a short dropout is fused with the prediction,
            # whose covariance has grown over the dropout. This frame has no tip all the same.
            return TipObservation(frame_index, t_ns, False, body.reason, None, None, None, None, 0.0, None,
                                  None if np.isnan(body.rms_px) else body.rms_px, body.ids_used, None, None,
                                  self.camera.calibrated, time.monotonic_ns())
        pose = body.pose
        if pose is None:
            raise ValueError("a valid BodyPose must carry its pose")
        self._prior = body
        tip = pose.apply(self.profile.tip_offset_mm.reshape(1, 3))[0]
        px = self._project(tip)
        cov3 = point_covariance_mm2(pose, body.cov6, self.profile.tip_offset_mm)
        sigma = float("inf") if cov3 is None else float(np.sqrt(max(np.trace(cov3), 0.0)))
        sigma_lat = lateral_sigma_mm(cov3, tip)
        v_meas = self.velocity.update(tip, t_ns)
        speed_meas = None if v_meas is None else float(np.linalg.norm(v_meas))
        after_gap = not self._last_valid
        self._last_valid = True

        est, P, px_est, v, speed, speed_sigma, frames, why = tip, cov3, px, v_meas, speed_meas, None, 1, ""
        if self.tip_filter is not None:
            if cov3 is None or not np.all(np.isfinite(cov3)):
                self.tip_filter.reset()  # nothing to weigh this measurement by: no filtering, confidence 0
            else:
                f = self.tip_filter.update(tip, cov3, t_ns)
                est, P, frames, why = f.x_mm, f.P_mm2, f.frames, f.reset
                px_est = self._project(est) if frames > 1 else px
                # The speed is known from the second measurement on, and never across a frame without a tip
                # (as VelocityFilter: right after a dropout the gate must treat the speed as unknown).
                if frames > 1 and not why and not after_gap:
                    v = f.v_mm_s
                    speed = float(np.linalg.norm(v))
                    u = v / speed if speed > 1e-9 else np.array([1.0, 0.0, 0.0])
                    speed_sigma = float(np.sqrt(max(u @ f.Pv @ u, 0.0)))
                else:
                    v = speed = None
        sig_f = float("inf") if P is None else float(np.sqrt(max(np.trace(P), 0.0)))
        sig_lat_f = lateral_sigma_mm(P, est)
        conf = 1.0 / (1.0 + (sig_f / CONFIDENCE_HALF_SIGMA_MM) ** 2) if np.isfinite(sig_f) else 0.0
        rvec = pose.rvec
        return TipObservation(
            frame_index, t_ns, True, "",
            (float(px_est[0]), float(px_est[1])), (float(est[0]), float(est[1]), float(est[2])),
            None if v is None else (float(v[0]), float(v[1]), float(v[2])),
            speed,
            float(conf), float(sig_f), body.rms_px, body.ids_used,
            (float(rvec[0]), float(rvec[1]), float(rvec[2])), (float(pose.t_mm[0]), float(pose.t_mm[1]), float(pose.t_mm[2])),
            self.camera.calibrated, time.monotonic_ns(), float(sig_lat_f),
            (float(px[0]), float(px[1])), (float(tip[0]), float(tip[1]), float(tip[2])), float(sigma),
            float(sigma_lat), speed_meas, speed_sigma, frames, why,
        )
