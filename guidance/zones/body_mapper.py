"""Image point → skin point near the patch → body zone, with the signed distances and an honest sigma.

The patch's plane (its markers' plane moved `standoff_mm` into the skin: card
and tape) stands for the skin near it. A lookup casts the camera ray through
the pixel onto that plane; the point's coordinates in the patch frame are the
chart position (u, v) in millimetres, read against the body area's atlas like a
face chart position.

The skin curves away from that plane. A convex body part with radius of
curvature R (across u, along v) lies s = u²/(2R_u) + v²/(2R_v) behind it at
(u, v): the ray meets the plane s·tan(a) before it reaches the skin (a: the
ray's angle from the plane normal, known every frame from the patch pose), and
the plane's chord is shorter than the skin's arc by about |u|³/(6R_u²) along u
(|v|³/(6R_v²) along v). Both shorten the distance from the patch. With the
area's *smallest* plausible radii (body_atlas.json) their sum is the
curvature part of the mapping sigma; the pose part is the patch pose's own
covariance (from its corner fit) carried to (u, v). The gate adds their
quadrature sum to the tip's own sigma, so the required distance to an edge grows
with the distance from the patch, and beyond the area's trusted ellipse
(`range_mm`) nothing is mapped: the lookup is out of range (`patch_far`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.designs import PatchDesign
from guidance.zones.atlas import OFF_SURFACE
from guidance.zones.body_atlas import BodyArea
from guidance.zones.mapper import ZoneLookup

# Rays closer than this to the plane (degrees from the normal) are not mapped: the point is too uncertain.
MAX_VIEW_ANGLE_DEG = 75.0
# The pose part when the patch pose has no covariance (a degenerate fit): finite, so that it is recorded and
# re-judged as it was, and large enough that the gate denies (near_boundary) whatever the zone.
UNKNOWN_SIGMA_MM = 1000.0
_EPS = 1e-6


@dataclass(frozen=True)
class BodyLookup(ZoneLookup):
    """A ZoneLookup on a body area's patch chart (`face_found`: the patch was found)."""

    in_range: bool = False  # inside the area's trusted ellipse around the patch
    patch_distance_mm: float | None = None  # chart distance from the patch centre
    mapping_sigma_mm: float | None = None  # pose and curvature parts together (√(pose² + curvature²))
    curvature_mm: float | None = None  # the curvature part alone (a bound for the area's smallest radii)
    view_angle_deg: float | None = None  # the ray's angle from the patch normal

    def to_json(self) -> dict:
        d = super().to_json()
        for k in ("patch_distance_mm", "mapping_sigma_mm", "curvature_mm", "view_angle_deg"):
            v = getattr(self, k)
            d[k] = None if v is None else round(float(v), 3)
        d["in_range"] = self.in_range
        return d


def _curvature_at(u_mm: float, v_mm: float, tan_view: float, radius_mm: tuple[float, float]) -> float:
    ru, rv = radius_mm
    s = u_mm * u_mm / (2 * ru) + v_mm * v_mm / (2 * rv)  # depth behind the plane (at least this, for an arc)
    arc = math.hypot(abs(u_mm) ** 3 / (6 * ru * ru), abs(v_mm) ** 3 / (6 * rv * rv))  # arc longer than chord
    return s * tan_view + arc


def curvature_error_mm(u_mm: float, v_mm: float, tan_view: float, radius_mm: tuple[float, float]) -> float:
    """How far the plane mapping may put (u, v) from the skin point, for skin of these (smallest) radii.

    Both terms shorten the distance from the patch, so the skin point is further out than (u, v): the terms are
    evaluated there (a few fixed-point steps of e = f(d + e)), not at the mapped point.
    """
    d = math.hypot(u_mm, v_mm)
    e = _curvature_at(u_mm, v_mm, tan_view, radius_mm)
    if d < 1e-9:
        return e
    for _ in range(4):
        k = (d + e) / d
        e = _curvature_at(u_mm * k, v_mm * k, tan_view, radius_mm)
    return e


class PatchMapper:
    """Maps image points to a body area's zones through the patch pose. Read-only apart from its inputs."""

    def __init__(self, area: BodyArea, design: PatchDesign = PatchDesign()):
        self.area = area
        self.atlas = area.atlas
        self.standoff_mm = design.standoff_mm

    def _chart(self, rvec: np.ndarray, tvec: np.ndarray, ray: np.ndarray) -> tuple[np.ndarray, float] | None:
        """(u, v) where the ray meets the skin plane and cos(view angle); None behind the camera or grazing."""
        R = cv2.Rodrigues(rvec.reshape(3, 1))[0]
        n = R[:, 2]
        origin = tvec + n * self.standoff_mm
        denom = float(n @ ray)
        cos_a = abs(denom) / float(np.linalg.norm(ray))
        if cos_a < math.cos(math.radians(MAX_VIEW_ANGLE_DEG)) or abs(denom) < _EPS:
            return None
        lam = float(n @ origin) / denom
        if not lam > 0:
            return None
        q = R.T @ (lam * ray - origin)
        return q[:2], cos_a

    def locate(self, patch, x_px: float, y_px: float, camera: CameraModel) -> BodyLookup:
        """Pixel (x, y) on the body near `patch` (a PatchObservation, or None)."""
        x, y = float(x_px), float(y_px)
        if patch is None or not patch.found or patch.rvec is None or patch.tvec_mm is None:
            return BodyLookup(False, None, None, None, None, None, None, None, (x, y))
        rvec = np.asarray(patch.rvec, float)
        tvec = np.asarray(patch.tvec_mm, float)
        pt = cv2.undistortPoints(np.array([[[x, y]]], np.float64), camera.K, camera.dist).reshape(2)
        ray = np.array([pt[0], pt[1], 1.0])
        hit = self._chart(rvec, tvec, ray)
        if hit is None:
            return BodyLookup(True, OFF_SURFACE, OFF_SURFACE, "body", None, None, None, None, (x, y))
        uv, cos_a = hit
        u, v = float(uv[0]), float(uv[1])
        tan_a = math.sqrt(max(1.0 - cos_a * cos_a, 0.0)) / cos_a
        curv = curvature_error_mm(u, v, tan_a, self.area.curvature_radius_mm)
        pose_sigma = self._pose_sigma(rvec, tvec, ray, uv, patch.cov6)
        sigma = math.hypot(curv, pose_sigma)
        dist = math.hypot(u, v)
        angle = math.degrees(math.acos(min(cos_a, 1.0)))
        common = dict(patch_distance_mm=dist, mapping_sigma_mm=sigma, curvature_mm=curv, view_angle_deg=angle)
        if not self.area.in_range(u, v):
            return BodyLookup(True, OFF_SURFACE, OFF_SURFACE, "body", (u, v), None, None, None, (x, y),
                              in_range=False, **common)
        zone, d = self.atlas.zone_at(u, v)
        if zone is None:  # inside the range every point has a zone; if the atlas was cut short, fail closed
            return BodyLookup(True, OFF_SURFACE, OFF_SURFACE, "body", (u, v), d, None, None, (x, y), in_range=False,
                              **common)
        return BodyLookup(True, zone.name, zone.kind, "body", (u, v), d, None, None, (x, y), in_range=True, **common)

    def _pose_sigma(self, rvec: np.ndarray, tvec: np.ndarray, ray: np.ndarray, uv: np.ndarray,
                    cov6: np.ndarray | None) -> float:
        """1-sigma of (u, v) from the patch pose's covariance (finite differences of the mapping)."""
        if cov6 is None:
            return UNKNOWN_SIGMA_MM
        J = np.zeros((2, 6))
        steps = (1e-4, 1e-4, 1e-4, 1e-2, 1e-2, 1e-2)  # rad, mm
        for k, h in enumerate(steps):
            r, t = rvec.copy(), tvec.copy()
            if k < 3:
                r[k] += h
            else:
                t[k - 3] += h
            hit = self._chart(r, t, ray)
            if hit is None:
                return UNKNOWN_SIGMA_MM
            J[:, k] = (hit[0] - uv) / h
        cov = J @ np.asarray(cov6, float) @ J.T
        out = math.sqrt(max(float(np.trace(cov)), 0.0))
        return out if math.isfinite(out) else UNKNOWN_SIGMA_MM

    def project(self, patch, uv_mm: np.ndarray, camera: CameraModel) -> np.ndarray | None:
        """Chart points (N, 2) on the skin plane → image pixels (N, 2), for drawing zones; None without a patch."""
        if patch is None or not patch.found or patch.rvec is None:
            return None
        uv = np.asarray(uv_mm, float).reshape(-1, 2)
        pts = np.c_[uv, np.full(len(uv), self.standoff_mm)]
        px, _ = cv2.projectPoints(pts, np.asarray(patch.rvec, float), np.asarray(patch.tvec_mm, float), camera.K,
                                  camera.dist)
        return px.reshape(-1, 2)
