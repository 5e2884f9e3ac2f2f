"""Camera intrinsics from ChArUco views: collect, reject poor views, calibrate, and say how good it is.

OpenCV 5 dropped `aruco.calibrateCameraCharuco`; we detect the board with
`CharucoDetector`, turn its corners into object/image point pairs with
`CharucoBoard.matchImagePoints` and call `cv2.calibrateCamera` directly.
Rejected views are counted per reason so a clinic knows whether to re-shoot.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import cv2
import numpy as np

from guidance.errors import UserError
from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.designs import CharucoDesign


@dataclass
class CharucoView:
    frame_index: int
    obj_mm: np.ndarray  # (N, 3)
    img_px: np.ndarray  # (N, 2)
    ids: np.ndarray  # (N,) chessboard corner ids


@dataclass
class CameraCalibrationResult:
    camera: CameraModel
    rms_px: float
    views_used: int
    rejected: dict[str, int] = field(default_factory=dict)
    per_view_rms_px: list[float] = field(default_factory=list)


class CharucoViewCollector:
    """Accepts views with enough corners spread over enough of the board, skipping near-duplicates."""

    def __init__(self, design: CharucoDesign = CharucoDesign(), min_corner_fraction: float = 0.4,
                 min_shift_px: float = 15.0):
        self.design = design
        self.board = design.board()
        self.detector = cv2.aruco.CharucoDetector(self.board)
        self.min_corners = max(6, int(np.ceil(min_corner_fraction * design.n_corners)))
        self.min_shift_px = min_shift_px
        self.views: list[CharucoView] = []
        self.rejected: Counter = Counter()
        self.image_size: tuple[int, int] | None = None

    def add(self, image: np.ndarray, frame_index: int) -> bool:
        h, w = image.shape[:2]
        if self.image_size is None:
            self.image_size = (w, h)
        elif self.image_size != (w, h):
            self.rejected["different image size"] += 1
            return False
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        corners, ids, _, _ = self.detector.detectBoard(gray)
        if ids is None or len(ids) == 0:
            self.rejected["board not found"] += 1
            return False
        if len(ids) < self.min_corners:
            self.rejected["too few corners"] += 1
            return False
        # cv2 stub: detectedCorners is typed Sequence[MatLike], but the C++ InputArrayOfArrays also takes the
        # single Nx1x2 array that detectBoard returns.
        obj, img = self.board.matchImagePoints(corners, ids)  # type: ignore[call-overload]
        obj, img, ids = obj.reshape(-1, 3), img.reshape(-1, 2), ids.ravel()
        # Corners on one line (or nearly) constrain nothing: demand 2D spread on the board.
        if np.linalg.matrix_rank(obj[:, :2] - obj[:, :2].mean(axis=0), tol=self.design.square_mm * 0.5) < 2:
            self.rejected["corners collinear"] += 1
            return False
        for v in self.views:
            common, a, b = np.intersect1d(v.ids, ids, return_indices=True)
            if len(common) >= 0.8 * len(ids) and np.median(np.linalg.norm(v.img_px[a] - img[b], axis=1)) < self.min_shift_px:
                self.rejected["too similar to an accepted view"] += 1
                return False
        self.views.append(CharucoView(frame_index, obj.astype(np.float64), img.astype(np.float64), ids))
        return True


def calibrate_views(views: list[CharucoView], image_size: tuple[int, int], *, max_views: int = 40,
                    min_views: int = 6, outlier_factor: float = 3.0, source: str = "") -> CameraCalibrationResult:
    """`cv2.calibrateCamera` with k3 fixed, then once more without views whose error is far above the rest."""
    rejected: Counter = Counter()
    if len(views) > max_views:  # keep an even spread over the recording
        keep = np.linspace(0, len(views) - 1, max_views).round().astype(int)
        rejected["beyond max views"] += len(views) - max_views
        views = [views[i] for i in keep]
    if len(views) < min_views:
        raise UserError(f"only {len(views)} usable ChArUco views (need at least {min_views}); show the board "
                        f"from more angles and distances")
    flags = cv2.CALIB_FIX_K3
    for _ in range(2):
        obj = [v.obj_mm.astype(np.float32) for v in views]
        img = [v.img_px.astype(np.float32) for v in views]
        rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, image_size, None, None, flags=flags)
        per_view = []
        for v, rv, tv in zip(views, rvecs, tvecs):
            px, _ = cv2.projectPoints(v.obj_mm, rv, tv, K, dist)
            per_view.append(float(np.sqrt(np.mean(np.sum((px.reshape(-1, 2) - v.img_px) ** 2, axis=1)))))
        limit = max(outlier_factor * float(np.median(per_view)), 0.5)
        bad = [i for i, e in enumerate(per_view) if e > limit]
        if not bad or len(views) - len(bad) < min_views:
            break
        rejected["reprojection error far above the others"] += len(bad)
        views = [v for i, v in enumerate(views) if i not in bad]
    extra = {
        "calibrated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "views_used": len(views),
        "source": source,
    }
    cam = CameraModel(K=K, dist=dist.ravel(), size=(int(image_size[0]), int(image_size[1])), calibrated=True,
                      rms_px=float(rms), source=source, extra=extra)
    return CameraCalibrationResult(cam, float(rms), len(views), dict(rejected), per_view)


def calibrate_from_frames(frames: Iterable[tuple[int, np.ndarray]], design: CharucoDesign = CharucoDesign(),
                          max_views: int = 40, source: str = "") -> CameraCalibrationResult:
    collector = CharucoViewCollector(design)
    for index, image in frames:
        collector.add(image, index)
    if collector.image_size is None:
        raise UserError("no frames", path=source or None)
    result = calibrate_views(collector.views, collector.image_size, max_views=max_views, source=source)
    for k, v in collector.rejected.items():
        result.rejected[k] = result.rejected.get(k, 0) + v
    return result
