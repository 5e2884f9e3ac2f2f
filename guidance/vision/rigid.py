"""Rigid transforms (body -> camera) in millimetres, shared by renderer, trackers and calibration."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class RigidPose:
    """x_camera = R @ x_body + t_mm."""

    R: np.ndarray
    t_mm: np.ndarray

    @classmethod
    def from_rvec(cls, rvec: np.ndarray, tvec: np.ndarray) -> "RigidPose":
        R = cv2.Rodrigues(np.asarray(rvec, dtype=float).reshape(3, 1))[0]
        return cls(R, np.asarray(tvec, dtype=float).reshape(3))

    @classmethod
    def identity(cls) -> "RigidPose":
        return cls(np.eye(3), np.zeros(3))

    @property
    def rvec(self) -> np.ndarray:
        return cv2.Rodrigues(self.R)[0].reshape(3)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=float) @ self.R.T + self.t_mm

    def inverse(self) -> "RigidPose":
        return RigidPose(self.R.T, -self.R.T @ self.t_mm)

    def compose(self, other: "RigidPose") -> "RigidPose":
        """self ∘ other: first other, then self."""
        return RigidPose(self.R @ other.R, self.R @ other.t_mm + self.t_mm)

    def advanced(self, linear_mm_s: np.ndarray, angular_rad_s: np.ndarray, dt_s: float,
                 about_mm: np.ndarray | None = None) -> "RigidPose":
        """This pose moved for dt_s: rotating (camera-frame axis) about `about_mm`, then translating."""
        pivot = self.t_mm if about_mm is None else np.asarray(about_mm, dtype=float)
        dR = cv2.Rodrigues(np.asarray(angular_rad_s, dtype=float).reshape(3, 1) * dt_s)[0]
        t = dR @ (self.t_mm - pivot) + pivot + np.asarray(linear_mm_s, dtype=float) * dt_s
        return RigidPose(dR @ self.R, t)


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    """Angle of the rotation taking Ra to Rb."""
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def rotation_aligning(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a onto unit vector b."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    s, c = np.linalg.norm(v), float(np.dot(a, b))
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        return cv2.Rodrigues(perp / np.linalg.norm(perp) * np.pi)[0]
    return cv2.Rodrigues(v / s * np.arctan2(s, c))[0]


def mean_rotation(Rs: list[np.ndarray]) -> np.ndarray:
    """Chordal L2 mean of rotations (projection of the summed matrices onto SO(3))."""
    U, _, Vt = np.linalg.svd(np.sum(Rs, axis=0))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt
