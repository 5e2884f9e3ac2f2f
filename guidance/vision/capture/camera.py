"""Pinhole camera model with distortion, and where it came from.

Everything downstream that turns pixels into millimetres needs intrinsics.
When no calibration file is given we still run, on a documented default
(focal length = image width, principal point at the centre, no distortion),
but the model says `calibrated=False` so the gate and the reports can tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from guidance.errors import UserError
from guidance.yamlfile import read_yaml


@dataclass(frozen=True)
class CameraModel:
    K: np.ndarray  # 3x3 intrinsic matrix, pixels
    dist: np.ndarray  # OpenCV distortion coefficients (k1, k2, p1, p2, k3, ...)
    size: tuple[int, int]  # (width, height) in pixels the intrinsics are valid for
    calibrated: bool
    rms_px: float | None = None
    source: str = "default"
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def default(cls, width: int, height: int) -> "CameraModel":
        """The documented uncalibrated default: f = image width, centred principal point."""
        f = float(width)
        K = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
        return cls(K=K, dist=np.zeros(5), size=(int(width), int(height)), calibrated=False)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    def scaled_to(self, width: int, height: int) -> "CameraModel":
        """The same camera at another resolution (same field of view)."""
        if (width, height) == self.size:
            return self
        sx, sy = width / self.size[0], height / self.size[1]
        K = self.K.copy()
        K[0, :] *= sx
        K[1, :] *= sy
        return CameraModel(K=K, dist=self.dist.copy(), size=(width, height), calibrated=self.calibrated,
                           rms_px=self.rms_px, source=self.source, extra=self.extra)

    def to_dict(self) -> dict:
        return {
            "image_size": list(self.size),
            "camera_matrix": self.K.tolist(),
            "dist_coeffs": self.dist.ravel().tolist(),
            "rms_px": self.rms_px,
            "calibrated": self.calibrated,
            **self.extra,
        }

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)


def load_camera(path: str | Path) -> CameraModel:
    """Load intrinsics saved by `guidance calibrate camera`; user errors name the file and field."""
    path = Path(path)
    data = read_yaml(path, "camera calibration file")
    if not isinstance(data, dict):
        raise UserError("expected a mapping at the top level", path=path)
    for key in ("image_size", "camera_matrix", "dist_coeffs"):
        if key not in data:
            raise UserError("missing field", path=path, field=key)
    try:
        K = np.asarray(data["camera_matrix"], dtype=float)
        if K.shape != (3, 3):
            raise ValueError
    except (TypeError, ValueError):
        raise UserError("must be a 3x3 list of numbers", path=path, field="camera_matrix") from None
    try:
        dist = np.asarray(data["dist_coeffs"], dtype=float).ravel()
    except (TypeError, ValueError):
        raise UserError("must be a list of numbers", path=path, field="dist_coeffs") from None
    size = data["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise UserError("must be [width, height] in pixels", path=path, field="image_size")
    rms = data.get("rms_px")
    known = {"image_size", "camera_matrix", "dist_coeffs", "rms_px", "calibrated"}
    return CameraModel(K=K, dist=dist, size=(size[0], size[1]), calibrated=True,
                       rms_px=float(rms) if rms is not None else None, source=str(path),
                       extra={k: v for k, v in data.items() if k not in known})
