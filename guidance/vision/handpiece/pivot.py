"""Pivot calibration: the tip offset from poses of the clip while the tip rests in a dimple.

Every pose (R_i, t_i) of the clip satisfies R_i p + t_i = q, with p the tip in the
handpiece frame and q the fixed dimple in the camera frame: a linear least-squares
problem in (p, q). Frames where the tip slipped or the pose was poor are outliers;
we drop them by a median-based threshold and refit. The result states its RMS
residual in millimetres and is refused when that, the number of poses or the
range of rotation (too little rotation leaves p along the shaft undetermined)
says it cannot be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from guidance.vision.rigid import RigidPose


@dataclass(frozen=True)
class PivotResult:
    ok: bool
    reason: str  # why it was refused; empty when ok
    tip_offset_mm: np.ndarray
    pivot_mm: np.ndarray  # the dimple, camera frame
    rms_mm: float
    poses_used: int
    poses_rejected: int
    rotation_range_deg: float


def _solve(poses: list[RigidPose]) -> tuple[np.ndarray, np.ndarray]:
    A = np.zeros((3 * len(poses), 6))
    b = np.zeros(3 * len(poses))
    for i, p in enumerate(poses):
        A[3 * i:3 * i + 3, :3] = p.R
        A[3 * i:3 * i + 3, 3:] = -np.eye(3)
        b[3 * i:3 * i + 3] = -p.t_mm
    x, *_ = np.linalg.lstsq(A, b, rcond=None)
    return x[:3], x[3:]


def _residuals(poses: list[RigidPose], tip: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(p.R @ tip + p.t_mm - pivot) for p in poses])


def pivot_calibrate(poses: list[RigidPose], *, max_rms_mm: float = 1.5, min_poses: int = 20,
                    min_rotation_deg: float = 20.0, outlier_floor_mm: float = 1.0) -> PivotResult:
    n_in = len(poses)
    if n_in < min_poses:
        return PivotResult(False, f"only {n_in} usable poses (need {min_poses})", np.zeros(3), np.zeros(3),
                           float("inf"), n_in, 0, 0.0)
    used = list(poses)
    for _ in range(10):
        tip, pivot = _solve(used)
        r = _residuals(used, tip, pivot)
        mad = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        limit = max(float(np.median(r)) + 3.0 * mad, outlier_floor_mm)
        keep = r <= limit
        if keep.all() or keep.sum() < min_poses:
            break
        used = [p for p, k in zip(used, keep) if k]
    tip, pivot = _solve(used)
    r = _residuals(used, tip, pivot)
    rms = float(np.sqrt(np.mean(r ** 2)))
    # What pins the tip down is how far the line from clip to tip swings around the dimple
    # (spinning about that line teaches nothing about its length).
    d = np.array([p.R @ tip for p in used])
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    mean_d = d.mean(axis=0) / max(np.linalg.norm(d.mean(axis=0)), 1e-9)
    spread = 2.0 * float(np.degrees(np.arccos(np.clip(d @ mean_d, -1.0, 1.0))).max())
    rejected = n_in - len(used)
    reason = ""
    if len(used) < min_poses:
        reason = f"only {len(used)} consistent poses after rejecting {rejected} outliers (need {min_poses})"
    elif spread < min_rotation_deg:
        reason = f"the handpiece tilted through only {spread:.0f} degrees (need {min_rotation_deg:.0f}): tilt it further around the tip"
    elif rms > max_rms_mm:
        reason = f"RMS error {rms:.2f} mm exceeds {max_rms_mm:.2f} mm: the tip moved in the dimple or the markers were poorly seen"
    return PivotResult(not reason, reason, tip, pivot, rms, len(used), rejected, spread)
