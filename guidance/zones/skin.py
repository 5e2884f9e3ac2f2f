"""Chart → skin: which mesh triangle (and barycentric weights) a chart point lies in.

The inverse of the chart map. Because the chart is fixed data, a chart point's
(triangle, weights) never changes; each frame only has to apply the weights to
that frame's landmarks to know where the point is in the image. That is how
zone outlines and deposited coverage are drawn on a moving face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from guidance.zones.chart import FaceChart

_TOL = 1e-7


@dataclass(frozen=True)
class SkinPoints:
    """Chart points tied to the face mesh; `ok` is False for points off the mesh."""

    triangle: np.ndarray  # (N,) int, -1 off the mesh
    barycentric: np.ndarray  # (N, 3)

    @property
    def ok(self) -> np.ndarray:
        return self.triangle >= 0

    def image_px(self, chart: FaceChart, landmarks_px: np.ndarray) -> np.ndarray:
        """(N, 3) image x, y and z of the points for this frame's landmarks (NaN off the mesh)."""
        out = np.full((len(self.triangle), 3), np.nan)
        ok = self.ok
        if ok.any():
            corners = np.asarray(landmarks_px, np.float64)[chart.triangles[self.triangle[ok]]]  # (n, 3, 3)
            out[ok] = np.einsum("nk,nkd->nd", self.barycentric[ok], corners)
        return out


class ChartLocator:
    def __init__(self, chart: FaceChart):
        self.chart = chart
        p = chart.vertex_uv_mm[chart.triangles]  # (T, 3, 2)
        self.a = p[:, 0]
        e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        good = np.abs(det) > 1e-12
        det = np.where(good, det, 1.0)
        self.inv = np.stack([np.stack([e2[:, 1] / det, -e2[:, 0] / det], -1),
                             np.stack([-e1[:, 1] / det, e1[:, 0] / det], -1)], 1)  # (T, 2, 2)
        self.inv[~good] = 0.0
        self.good = good
        # The chart folds over in a few triangles; where it overlaps itself, prefer the majority
        # orientation (the unfolded surface), then the triangle the point is most inside of.
        self.majority = np.sign(det) == np.sign(np.median(det[good]))

    def locate(self, uv_mm: np.ndarray, chunk: int = 512) -> SkinPoints:
        uv = np.atleast_2d(np.asarray(uv_mm, np.float64))
        tri = np.full(len(uv), -1, np.int64)
        bary = np.zeros((len(uv), 3))
        for s in range(0, len(uv), chunk):
            q = uv[s:s + chunk]
            d = q[:, None, :] - self.a[None]  # (n, T, 2)
            l12 = np.einsum("tij,ntj->nti", self.inv, d)
            l1, l2 = l12[..., 0], l12[..., 1]
            inside = (l1 >= -_TOL) & (l2 >= -_TOL) & (l1 + l2 <= 1 + _TOL) & self.good[None]
            has = inside.any(1)
            depth = np.minimum(np.minimum(l1, l2), 1 - l1 - l2)  # how far inside (barycentric)
            score = np.where(inside, depth + 10.0 * self.majority[None], -np.inf)
            k = score.argmax(1)
            rows = np.flatnonzero(has)
            tri[s + rows] = k[rows]
            b1, b2 = l1[rows, k[rows]], l2[rows, k[rows]]
            b = np.clip(np.stack([1 - b1 - b2, b1, b2], -1), 0.0, 1.0)
            bary[s + rows] = b / b.sum(1, keepdims=True)
        return SkinPoints(tri, bary)
