"""ArUco detection for the tracked bodies, with a search window from the last frame.

Corners: OpenCV's subpixel refinement (`cornerSubPix`) is made for chessboard
saddle points; on a marker's outer L-shaped corners it is pulled inwards by
0.2-1 px on 20-40 px markers, which is millimetres at the tip. We instead fit a
line to each of the four black-border edges (the 50 % crossing between border
and white plate, sampled along the edge) and intersect neighbouring lines; on
rendered markers with known corners this brings the error to a few hundredths
of a pixel (see tests/test_handpiece_tracking.py).

Full-frame detection costs about 2 ms at 640x480; most frames the clip is where
it was, so we first look in a window around the previous detection and fall
back to the full frame when that finds nothing. The window only says where to
look: detections are always this frame's pixels, so nothing stale leaks out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from guidance.vision.handpiece.marker_body import get_dictionary


@dataclass(frozen=True)
class MarkerDetections:
    """Markers found in one frame: id -> corners (4, 2) in pixels, OpenCV corner order."""

    corners_px: dict[int, np.ndarray]
    duplicate_ids: tuple[int, ...]  # ids seen more than once (not usable: which one is real?)
    searched_full_frame: bool


def detector_parameters() -> cv2.aruco.DetectorParameters:
    """Tuned for small (20-60 px) markers; corners are refined afterwards by `refine_corners`."""
    p = cv2.aruco.DetectorParameters()
    p.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_NONE
    p.minMarkerPerimeterRate = 0.03  # 4 x 14 px at 640 wide: below that the pose is meaningless anyway
    p.adaptiveThreshWinSizeMin = 5
    p.adaptiveThreshWinSizeMax = 25
    p.adaptiveThreshWinSizeStep = 10
    return p


class MarkerDetector:
    def __init__(self, dictionary: str, ids: list[int] | None = None, roi_margin: float = 1.0, roi_min_px: int = 48):
        self._det = cv2.aruco.ArucoDetector(get_dictionary(dictionary), detector_parameters())
        self._ids = set(ids) if ids is not None else None
        self._roi_margin = roi_margin
        self._roi_min_px = roi_min_px
        self._last_box: tuple[int, int, int, int] | None = None

    def reset(self) -> None:
        self._last_box = None

    def detect(self, image: np.ndarray) -> MarkerDetections:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        full = True
        found: dict[int, list[np.ndarray]] = {}
        if self._last_box is not None:
            x0, y0, x1, y1 = self._last_box
            found = self._run(gray[y0:y1, x0:x1], (x0, y0))
            full = not found
        if full:
            found = self._run(gray, (0, 0))
        dup = tuple(sorted(i for i, v in found.items() if len(v) > 1))
        corners = {i: v[0] for i, v in found.items() if len(v) == 1}
        self._last_box = self._box(corners, gray.shape) if corners else None
        return MarkerDetections(corners, dup, full)

    def _run(self, gray: np.ndarray, offset: tuple[int, int]) -> dict[int, list[np.ndarray]]:
        if gray.shape[0] < 16 or gray.shape[1] < 16:
            return {}
        corners, ids, _ = self._det.detectMarkers(gray)
        out: dict[int, list[np.ndarray]] = {}
        if ids is None:
            return out
        off = np.array(offset, np.float64)
        for c, raw_id in zip(corners, ids.ravel()):
            i = int(raw_id)
            if self._ids is not None and i not in self._ids:
                continue
            out.setdefault(i, []).append(refine_corners(gray, c.reshape(4, 2).astype(np.float64)) + off)
        return out

    def _box(self, corners: dict[int, np.ndarray], shape) -> tuple[int, int, int, int]:
        pts = np.concatenate(list(corners.values()))
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = np.maximum((hi - lo) * self._roi_margin, self._roi_min_px)
        h, w = shape[:2]
        x0, y0 = np.maximum(lo - pad, 0).astype(int)
        x1, y1 = np.minimum(hi + pad, [w, h]).astype(int)
        return int(x0), int(y0), int(x1), int(y1)


_OFFSETS = np.linspace(-1.0, 1.0, 17)
_ALONG = np.linspace(0.15, 0.85, 10)  # stay clear of the corners, where edges bend


def refine_corners(gray: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Subpixel corners as intersections of lines fitted to the four border edges.

    Each edge point is where the intensity profile across the edge crosses halfway
    between the dark border and the white plate (unbiased under symmetric blur).
    Returns the input unchanged when the edges are not clean enough to trust.
    """
    c = corners.astype(np.float64)
    nxt = c[[1, 2, 3, 0]]
    seg = nxt - c  # side k runs from corner k to corner k+1
    length = np.linalg.norm(seg, axis=1)
    side = float(length.mean())
    if side < 4:
        return corners
    half = float(np.clip(0.7 * side / 6.0, 1.5, 4.0))  # stay within the one-cell black border
    offs = _OFFSETS * half
    step = offs[1] - offs[0]
    q = len(offs) // 4
    d = seg / length[:, None]
    n = np.stack([-d[:, 1], d[:, 0]], axis=1)
    outward = np.sum(n * ((c + nxt) / 2 - c.mean(axis=0)), axis=1) < 0
    n[outward] *= -1
    # (4 sides, samples along, 2)
    pts = c[:, None, :] + _ALONG[None, :, None] * seg[:, None, :]
    nn = np.repeat(n[:, None, :], len(_ALONG), axis=1)
    pts = pts.reshape(-1, 2)
    nn = nn.reshape(-1, 2)
    rows = np.arange(len(pts))
    ok: np.ndarray = np.zeros(len(pts), bool)
    for _ in range(2):  # the second pass re-centres the profiles on the first estimate
        sx = (pts[:, 0:1] + offs[None, :] * nn[:, 0:1]).astype(np.float32)
        sy = (pts[:, 1:2] + offs[None, :] * nn[:, 1:2]).astype(np.float32)
        prof = cv2.remap(gray, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float64)
        lo = prof[:, :q].mean(axis=1)
        hi = prof[:, -q:].mean(axis=1)
        thr = (lo + hi) / 2
        idx = np.argmax(prof > thr[:, None], axis=1)
        ok = (idx > 0) & (hi - lo > 20)
        i1 = np.clip(idx, 1, len(offs) - 1)
        p0, p1 = prof[rows, i1 - 1], prof[rows, i1]
        s = offs[i1 - 1] + np.clip((thr - p0) / np.maximum(p1 - p0, 1e-6), 0.0, 1.0) * step
        pts = pts + np.where(ok, s, 0.0)[:, None] * nn
    pts = pts.reshape(4, len(_ALONG), 2)
    ok = ok.reshape(4, len(_ALONG))
    if (ok.sum(axis=1) < 4).any():
        return corners
    # Total-least-squares line per side: through the mean, along the covariance's main axis.
    w = ok[..., None].astype(np.float64)
    m = (pts * w).sum(axis=1) / w.sum(axis=1)
    dev = (pts - m[:, None, :]) * w
    cxx, cyy, cxy = (dev[..., 0] ** 2).sum(1), (dev[..., 1] ** 2).sum(1), (dev[..., 0] * dev[..., 1]).sum(1)
    ang = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
    u = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    # Corner k = intersection of side k-1 and side k.
    pm, um = m[[3, 0, 1, 2]], u[[3, 0, 1, 2]]
    det = um[:, 0] * (-u[:, 1]) - (-u[:, 0]) * um[:, 1]
    if (np.abs(det) < 1e-6).any():
        return corners
    r = m - pm
    t = (r[:, 0] * (-u[:, 1]) - (-u[:, 0]) * r[:, 1]) / det
    out = pm + t[:, None] * um
    if np.max(np.linalg.norm(out - c, axis=1)) > max(2.0, side / 12.0):
        return corners  # the fit wandered off: keep the detector's corners
    return out
