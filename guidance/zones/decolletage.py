"""The shoulder line from the pose model: where the décolletage (and the neck) end below.

The décolletage is the atlas's outline on a plane tangent to the front of the
neck (``surfaces.py``): the clavicles level with the suprasternal notch, the
deltopectoral grooves, and the V of a neckline down to the sternum at the 4th
costal level (``models/build_chart.py``, atlas 1.2). When the pose model sees
both shoulders (visibility above a threshold, result fresh), the line between
them cuts it further:

1. each shoulder's image point is undistorted into a camera ray, expressed in
   the head frame (head pose of the same frame) and intersected with the
   décolletage plane — giving two chart points (u = x, v = y on the plane);
2. the décolletage is then the part of the atlas's décolletage outline that
   lies *above* the line through those two points and *between* them
   laterally (never more than the outline: the shoulder joints sit near the
   clavicles' height, so a low line means a slumped client or a misplaced
   pose, not more chest to treat);
3. a point below the line (or outside the shoulders, or outside the outline)
   is not décolletage: the mapper moves on to the other surfaces and, failing
   them, reports ``off-surface`` (the gate denies);
4. the boundary distance on the décolletage is the smallest of the atlas's
   distance to the outline, the distances to the band's top and lateral
   edges and to the shoulder line, minus one grid cell (as conservative as
   the atlas rasters); the line's distance is also returned on its own as
   ``ZoneLookup.limit_mm`` so the gate can take it into the planned-region
   distance (which is read from the atlas and knows nothing of shoulders).

The pose model runs off the hot path (``guidance.vision.body.shoulders.ShoulderTracker``);
the mapper only gets its latest result. The limit is built once per frame in
``ZoneMapper.prepare(..., shoulders=...)`` (two rays; a few tens of µs) and
costs nothing on face-mesh lookups.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


MIN_VISIBILITY = 0.5
MAX_AGE_MS = 1000.0  # shoulders move slowly; older than this and the proportional extension is used


@dataclass(frozen=True)
class DecolletageLimit:
    """The shoulder line on the décolletage plane, in chart mm, and the band it bounds."""

    right_uv: tuple[float, float]  # the client's right shoulder (image left for a frontal client)
    left_uv: tuple[float, float]
    u_min: float  # the band's lateral edges (atlas décolletage ∩ between the shoulders)
    u_max: float
    v_top: float  # the band's top edge (suprasternal notch)
    v_bottom: float  # how far down the plane may be hit (the plane's lower edge; the outline ends above it)
    cell_mm: float
    t_capture_ns: int  # of the pose frame it came from

    def signed_mm(self, u: float, v: float) -> float:
        """Signed distance from (u, v) to the shoulder line: + above (towards the neck), − below."""
        (u0, v0), (u1, v1) = self.right_uv, self.left_uv
        du, dv = u1 - u0, v1 - v0
        n = float(np.hypot(du, dv))
        # normal pointing up the chart (towards smaller v); du > 0 for a frontal client
        s = (du * (v0 - v) - dv * (u0 - u)) / n
        return float(s if du > 0 else -s)

    def edge_v(self, u: float) -> float:
        """v of the shoulder line at chart u."""
        (u0, v0), (u1, v1) = self.right_uv, self.left_uv
        return float(v0 + (v1 - v0) * (u - u0) / (u1 - u0))

    def locate(self, u: float, v: float) -> tuple[bool, float, float]:
        """(inside, boundary_mm, limit_mm) of a hit on the décolletage plane at chart (u, v)."""
        limit = self.signed_mm(u, v)
        band = min(v - self.v_top, u - self.u_min, self.u_max - u) - self.cell_mm
        inside = limit >= 0 and band >= -self.cell_mm and v <= self.v_bottom
        return inside, min(band, limit), limit


def _plane_points(pxs: list[tuple[float, float]], pose, camera, plane_z: float) -> list[tuple[float, float] | None]:
    """Image points → where their camera rays meet the décolletage plane, (x, y) in the head frame."""
    pts = cv2.undistortPoints(np.array([pxs], np.float64), camera.K, camera.dist).reshape(-1, 2)
    Rt = pose.R.T
    o = -Rt @ np.asarray(pose.tvec_mm, float)  # camera centre in the head frame
    d = np.hstack([pts, np.ones((len(pts), 1))]) @ Rt.T  # ray directions (unnormalised: s absorbs the scale)
    out: list[tuple[float, float] | None] = []
    for dx, dy, dz in d.tolist():
        s = (plane_z - o[2]) / dz if abs(dz) > 1e-12 else -1.0
        out.append((float(o[0] + s * dx), float(o[1] + s * dy)) if s > 0 else None)
    return out


def _band(atlas) -> tuple[float, float, float] | None:
    """(u_min, u_max, v_top) of the atlas's décolletage zone, cached per atlas."""
    key = id(atlas)
    if key not in _BANDS:
        zone = atlas.zones.get("decolletage")
        ring = np.vstack(zone.boundary_mm) if zone is not None else None
        _BANDS[key] = None if ring is None else (float(ring[:, 0].min()), float(ring[:, 0].max()),
                                                 float(ring[:, 1].min()))
    return _BANDS[key]


_BANDS: dict[int, tuple[float, float, float] | None] = {}


# Face-mesh landmarks bounding the face (right and left contour at the cheekbones, top of the
# forehead, menton) and the inner upper lip, for the pose ↔ face consistency check.
_FACE_RIGHT, _FACE_LEFT, _FACE_TOP, _MENTON, _MOUTH = 234, 454, 10, 152, 13


def _face_mismatch(shoulders, face_lm: np.ndarray) -> str:
    """Why these shoulders are not the tracked face's (another person, a false detection), or ""."""
    lm = getattr(shoulders, "landmarks", None)
    if lm is None:
        return "shoulders without pose landmarks"
    xa, xb = float(face_lm[_FACE_RIGHT, 0]), float(face_lm[_FACE_LEFT, 0])
    ya, yb = float(face_lm[_FACE_TOP, 1]), float(face_lm[_MENTON, 1])
    x0, x1, y0, y1 = min(xa, xb), max(xa, xb), min(ya, yb), max(ya, yb)
    nx, ny = float(lm[0][0]), float(lm[0][1])
    if not (x0 <= nx <= x1 and y0 <= ny <= y1):
        return "shoulders belong to another pose than the tracked face"
    (lx, ly), (rx, ry) = shoulders.left_px, shoulders.right_px
    if min(ly, ry) <= float(face_lm[_MOUTH, 1]):
        return "shoulders not below the face"
    if ((lx - rx) ** 2 + (ly - ry) ** 2) ** 0.5 < x1 - x0:
        return "shoulders narrower than the face"
    return ""


def shoulder_limit(shoulders, pose, camera, surfaces: dict, atlas, *, t_reference_ns: int | None = None,
                   face_landmarks: np.ndarray | None = None,
                   min_visibility: float = MIN_VISIBILITY, max_age_ms: float = MAX_AGE_MS
                   ) -> tuple[DecolletageLimit | None, str]:
    """The décolletage limit from a shoulder observation, or (None, why not) → proportional extension.

    ``shoulders`` is a ``guidance.vision.body.shoulders.ShoulderObservation`` (anything
    with ``valid``, ``left_px``, ``right_px``, ``visibility``, ``t_capture_ns``).
    ``t_reference_ns`` is the face frame's capture time: a shoulder result more
    than ``max_age_ms`` away from it is not used. ``face_landmarks`` (the face
    mesh in image px) ties the pose to the tracked face: the pose's nose must
    lie in the face's box, the shoulders below the mouth and further apart
    than the face is wide — otherwise the pose is someone (or something) else.
    """
    if shoulders is None:
        return None, "no shoulders"
    if not getattr(shoulders, "valid", False) or shoulders.left_px is None or shoulders.right_px is None:
        return None, f"shoulders invalid ({getattr(shoulders, 'reason', '?')})"
    if min(shoulders.visibility) < min_visibility:
        return None, "shoulders not visible"
    if t_reference_ns is not None and abs(t_reference_ns - shoulders.t_capture_ns) / 1e6 > max_age_ms:
        return None, "shoulders stale"
    if pose is None or camera is None or not getattr(pose, "valid", False):
        return None, "no head pose"
    if face_landmarks is not None:
        why = _face_mismatch(shoulders, face_landmarks)
        if why:
            return None, why
    dec = surfaces["decolletage"]
    band = _band(atlas)
    if band is None:
        return None, "atlas has no décolletage"
    r, l_ = _plane_points([shoulders.right_px, shoulders.left_px], pose, camera, dec["plane_z_mm"])
    if r is None or l_ is None:
        return None, "shoulder ray misses the décolletage plane"
    if l_[0] - r[0] < 1.0:  # crossed or coincident on the plane: not a frontal chest
        return None, "shoulders crossed on the décolletage plane"
    g = atlas.grid
    limit = DecolletageLimit(
        right_uv=r, left_uv=l_, u_min=max(band[0], r[0]), u_max=min(band[1], l_[0]),
        v_top=max(band[2], float(dec["y_top_mm"])), v_bottom=float(dec["y_bottom_mm"]),
        cell_mm=g.cell_mm, t_capture_ns=int(shoulders.t_capture_ns))
    return limit, "shoulder line"
