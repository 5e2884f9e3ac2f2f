"""Neck, décolletage and scalp: skin the face mesh does not cover, carried by the head pose.

The face mesh stops at the face contour. Below it (neck, décolletage) and
above it (scalp) the service uses simple surfaces fixed in the head frame and
proportional to the canonical face (parameters in ``data/face_chart.json``,
made by ``build_chart.py``):

- neck: a vertical cylinder below the ears; chart u = arc length, v = y;
- décolletage: a plane tangent to the front of the neck, from the
  suprasternal notch (menton + 100 mm) down 150 mm; u = x, v = y. This is the
  *proportional extension*; when the pose model sees the shoulders the lower
  edge is the shoulder line instead (``decolletage.py``);
- scalp: an axis-aligned ellipsoid through the top of the face mesh; chart
  u = R·θ·cos φ / cos φ_top (so it meets the face chart at the hairline),
  v continues upward as meridian arc length.

A camera ray through an image point is intersected with each surface in the
head frame (x_cam = R x_head + t); the nearest hit in front of the camera wins.
Carrying the neck with the head pose is an approximation: it holds for a head
upright over the shoulders, not for a strongly bent neck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SurfaceHit:
    surface: str  # "neck" | "decolletage" | "scalp"
    distance_mm: float  # along the ray from the camera
    point_head_mm: np.ndarray  # (3,)
    chart_mm: tuple[float, float]


def ray_in_head_frame(R: np.ndarray, t_mm: np.ndarray, ray_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre and unit ray direction expressed in the head frame."""
    o = -R.T @ t_mm
    d = R.T @ (ray_cam / np.linalg.norm(ray_cam))
    return o, d


def scalp_chart(p: np.ndarray, params: dict) -> tuple[float, float]:
    c = np.asarray(params["centre_mm"], float)
    a = np.asarray(params["semi_axes_mm"], float)
    q = (p - c) / a
    q = q / np.linalg.norm(q)
    theta = np.arctan2(q[0], -q[2])
    phi = np.arcsin(np.clip(-q[1], -1, 1))
    phi_top = (params["v_offset_mm"] - params["v_top_mm"]) / params["meridian_radius_mm"] if "v_top_mm" in params else 0.0
    u = params["equator_radius_mm"] * theta * np.cos(phi) / max(np.cos(phi_top), 1e-6)
    v = params["v_offset_mm"] - params["meridian_radius_mm"] * phi
    return float(u), float(v)


def scalp_points(uv: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `scalp_chart`: head-frame points (N, 3) on the scalp ellipsoid at chart (u, v) (N, 2), and
    their outward unit normals. (The overlay draws the scalp zones through it.)"""
    uv = np.asarray(uv, float).reshape(-1, 2)
    c = np.asarray(params["centre_mm"], float)
    a = np.asarray(params["semi_axes_mm"], float)
    phi_top = (params["v_offset_mm"] - params["v_top_mm"]) / params["meridian_radius_mm"] if "v_top_mm" in params else 0.0
    phi = (params["v_offset_mm"] - uv[:, 1]) / params["meridian_radius_mm"]
    theta = uv[:, 0] * max(np.cos(phi_top), 1e-6) / (params["equator_radius_mm"] * np.maximum(np.cos(phi), 1e-6))
    q = np.stack([np.sin(theta) * np.cos(phi), -np.sin(phi), -np.cos(theta) * np.cos(phi)], axis=1)
    pts = c + a * q
    n = (pts - c) / a ** 2
    return pts, n / np.linalg.norm(n, axis=1, keepdims=True)


def intersect_scalp(o: np.ndarray, d: np.ndarray, params: dict) -> SurfaceHit | None:
    c = np.asarray(params["centre_mm"], float)
    a = np.asarray(params["semi_axes_mm"], float)
    oo, dd = (o - c) / a, d / a
    A, B, C = dd @ dd, 2 * oo @ dd, oo @ oo - 1
    disc = B * B - 4 * A * C
    if disc < 0:
        return None
    s = (-B - np.sqrt(disc)) / (2 * A)
    if s <= 0:
        return None
    p = o + s * d
    return SurfaceHit("scalp", float(s), p, scalp_chart(p, params))


def intersect_neck(o: np.ndarray, d: np.ndarray, params: dict) -> SurfaceHit | None:
    x0, z0, r = params["axis_x_mm"], params["axis_z_mm"], params["radius_mm"]
    ox, oz, dx, dz = o[0] - x0, o[2] - z0, d[0], d[2]
    A, B, C = dx * dx + dz * dz, 2 * (ox * dx + oz * dz), ox * ox + oz * oz - r * r
    disc = B * B - 4 * A * C
    if A < 1e-12 or disc < 0:
        return None
    s = (-B - np.sqrt(disc)) / (2 * A)
    if s <= 0:
        return None
    p = o + s * d
    if not (params["y_top_mm"] <= p[1] <= params["y_bottom_mm"]):
        return None
    u = r * np.arctan2(p[0] - x0, z0 - p[2])
    return SurfaceHit("neck", float(s), p, (float(u), float(p[1])))


def intersect_decolletage(o: np.ndarray, d: np.ndarray, params: dict) -> SurfaceHit | None:
    if abs(d[2]) < 1e-9:
        return None
    s = (params["plane_z_mm"] - o[2]) / d[2]
    if s <= 0:
        return None
    p = o + s * d
    if not (params["y_top_mm"] <= p[1] <= params["y_bottom_mm"]):
        return None
    return SurfaceHit("decolletage", float(s), p, (float(p[0]), float(p[1])))


def cast_ray(R: np.ndarray, t_mm: np.ndarray, ray_cam: np.ndarray, surfaces: dict) -> list[SurfaceHit]:
    """All hits of a camera ray on the off-mesh surfaces, nearest first."""
    o, d = ray_in_head_frame(R, t_mm, ray_cam)
    hits = [intersect_scalp(o, d, surfaces["scalp"]), intersect_neck(o, d, surfaces["neck"]),
            intersect_decolletage(o, d, surfaces["decolletage"])]
    return sorted((h for h in hits if h is not None), key=lambda h: h.distance_mm)
