"""Chart point → this frame's skin: image pixel, camera-frame millimetres and surface normal.

The simulator scripts the handpiece in chart coordinates, so that the truth
("which zone is the tip in") is exact by construction. To draw it on a real
face it needs the inverse of the chart map: the mesh triangle containing the
chart point and its barycentric weights (fixed, since the chart is data), then
this frame's landmarks give the pixel, and the head pose plus the canonical
face give the depth. The tip is put on the camera ray through that pixel at
that depth, so it projects exactly onto the landmark-interpolated pixel: what
the zone mapper will see is exactly what we claim.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.zones.atlas import ChartGrid
from guidance.zones.chart import FaceChart
from guidance.zones.skin import ChartLocator



@dataclass(frozen=True)
class SkinPoint:
    """A chart point tied to the mesh: triangle and barycentric weights (constant across frames)."""

    triangle: int
    barycentric: np.ndarray  # (3,)


@dataclass(frozen=True)
class PlacedPoint:
    """A skin point in one frame."""

    px: np.ndarray  # (2,) image pixels (landmark interpolation)
    cam_mm: np.ndarray  # (3,) on the camera ray through px, at the canonical face's depth
    normal_cam: np.ndarray  # (3,) unit outward skin normal (towards the camera on a visible face)
    facing_camera: bool  # the triangle faces the camera in this frame's landmarks


class ChartToSkin:
    """Inverse of the chart map, plus the canonical face's smooth vertex normals."""

    def __init__(self, chart: FaceChart, canonical_mm: np.ndarray):
        self.chart = chart
        self.canonical = np.asarray(canonical_mm, np.float64)
        self.locator = ChartLocator(chart)
        self.vertex_normals = self._vertex_normals()

    def _vertex_normals(self) -> np.ndarray:
        tri = self.chart.triangles
        v = self.canonical
        n_face = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])  # area-weighted
        n = np.zeros_like(v)
        for k in range(3):
            np.add.at(n, tri[:, k], n_face)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        # Outward = towards the camera of a frontal face (head z points away from the camera).
        if np.median(n[:, 2]) > 0:
            n = -n
        return n

    def locate(self, u_mm: float, v_mm: float) -> SkinPoint | None:
        """The mesh triangle and weights of a chart point, or None off the face mesh."""
        hit = self.locator.locate(np.array([[u_mm, v_mm]]))
        if not hit.ok[0]:
            return None
        return SkinPoint(int(hit.triangle[0]), hit.barycentric[0])

    def on_mesh(self, uv_mm: np.ndarray) -> np.ndarray:
        """(N,) bool: which chart points lie on the face mesh."""
        uv = np.atleast_2d(uv_mm)
        return np.array([self.locate(float(u), float(v)) is not None for u, v in uv], bool)

    def mesh_mask(self, grid: ChartGrid) -> np.ndarray:
        """Cells of an atlas grid covered by the mesh, one cell eroded so every cell centre is on it."""
        mask = np.zeros((grid.height, grid.width), np.uint8)
        for t in self.chart.triangles:
            q = np.round((self.chart.vertex_uv_mm[t] - [grid.u0_mm, grid.v0_mm]) / grid.cell_mm).astype(np.int32)
            cv2.fillConvexPoly(mask, q.reshape(-1, 1, 2), 1)
        return cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)

    def place(self, point: SkinPoint, landmarks_px: np.ndarray, R: np.ndarray, t_mm: np.ndarray,
              camera: CameraModel) -> PlacedPoint:
        """Where the skin point is in this frame (landmarks in px, head pose head → camera)."""
        tri = self.chart.triangles[point.triangle]
        b = point.barycentric
        lm = np.asarray(landmarks_px, np.float64)[tri, :2]
        px = b @ lm
        p_head = b @ self.canonical[tri]
        depth = float((R @ p_head + t_mm)[2])
        xy = cv2.undistortPoints(px.reshape(1, 1, 2), camera.K, camera.dist).reshape(2)
        cam = np.array([xy[0], xy[1], 1.0]) * depth
        n_head = b @ self.vertex_normals[tri]
        n = R @ (n_head / np.linalg.norm(n_head))
        e1, e2 = lm[1] - lm[0], lm[2] - lm[0]
        facing = bool(e1[0] * e2[1] - e1[1] * e2[0] < 0)  # same winding test as the zone mapper
        return PlacedPoint(px, cam, n / np.linalg.norm(n), facing)
