"""The face chart: a fixed 2D parametrisation of the skin, in millimetres.

A point on the skin is a mesh triangle plus barycentric weights; its chart
coordinates are the same weights applied to the chart coordinates of the
triangle's three vertices. Because those vertex coordinates are data (made by
``build_chart.py`` from the canonical face), the chart position of a skin point
does not depend on the head pose, the camera or the face's expression.

The unwrap is cylindrical about a vertical axis behind the face (u = R·θ,
v = y), so the cheeks and temples keep most of their width instead of being
squashed as in a frontal view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from guidance.errors import ModelIntegrityError
from guidance.resources import verified_path



@dataclass(frozen=True)
class FaceChart:
    """Mesh triangles and where each vertex sits on the chart."""

    chart_version: str
    triangles: np.ndarray  # (T, 3) vertex indices, counter-clockwise in image/chart for a face seen from the front
    vertex_uv_mm: np.ndarray  # (468, 2)
    triangle_sigma: np.ndarray  # (T, 2) singular values (min, max) of skin mm per chart mm
    cylinder: dict  # axis_x_mm, axis_z_mm, radius_mm
    surfaces: dict  # neck / décolletage / scalp parameters (head frame, mm)

    def uv_of(self, triangle: int, barycentric: np.ndarray) -> np.ndarray:
        """Chart position (mm) of a skin point given as triangle + barycentric weights."""
        return np.asarray(barycentric, float) @ self.vertex_uv_mm[self.triangles[triangle]]

    def cylinder_uv(self, points_head_mm: np.ndarray) -> np.ndarray:
        """Chart (u, v) of head-frame points by the same cylindrical unwrap as the mesh vertices."""
        p = np.atleast_2d(points_head_mm)
        c = self.cylinder
        theta = np.arctan2(p[:, 0] - c["axis_x_mm"], c["axis_z_mm"] - p[:, 2])
        return np.c_[c["radius_mm"] * theta, p[:, 1]]


def load_chart(path: Path | None = None) -> FaceChart:
    """The face chart; the bundled one is checked against the manifest first, like the models."""
    return _load_chart(str(path or verified_path("face_chart", kind="zones")))


@lru_cache(maxsize=4)
def _load_chart(path: str) -> FaceChart:
    p = Path(path)
    if not p.exists():
        raise ModelIntegrityError("face chart missing (run python models/build_chart.py)", path=p)
    d = json.loads(p.read_text())
    tri = np.asarray(d["triangles"], dtype=np.int64)
    uv = np.asarray(d["vertex_uv_mm"], dtype=np.float64)
    if uv.shape != (468, 2) or tri.ndim != 2 or tri.shape[1] != 3:
        raise ModelIntegrityError(f"unexpected shapes {uv.shape}, {tri.shape}", path=p)
    for a in (tri, uv):
        a.setflags(write=False)
    sig = np.asarray(d["triangle_sigma_mm_per_mm"], dtype=np.float64)
    sig.setflags(write=False)
    return FaceChart(d["chart_version"], tri, uv, sig, d["cylinder"], d["surfaces"])
