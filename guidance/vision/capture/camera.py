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
from guidance.yamlfile import read_yaml, validate


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


_NUMBER = {"type": "number"}
CAMERA_SCHEMA = {
    "type": "object",
    "required": ["image_size", "camera_matrix", "dist_coeffs"],
    "properties": {
        "image_size": {"type": "array", "minItems": 2, "maxItems": 2,
                       "items": {"type": "integer", "minimum": 1, "maximum": 65536}},
        "camera_matrix": {"type": "array", "minItems": 3, "maxItems": 3,
                          "items": {"type": "array", "minItems": 3, "maxItems": 3, "items": _NUMBER}},
        "dist_coeffs": {"type": "array", "items": _NUMBER},
        "rms_px": {"type": ["number", "null"], "minimum": 0, "maximum": 1000},
        "calibrated": {"type": "boolean"},
    },
}
# The lengths OpenCV accepts: (k1 k2 p1 p2), + k3, + k4 k5 k6 (rational), + s1..s4 (thin prism), + tx ty (tilted).
DIST_LENGTHS = (4, 5, 8, 12, 14)


def camera_from_dict(data: object, path: str | Path, prefix: str = "") -> CameraModel:
    """Validate a calibration (a file's content, or the snapshot in a recording) and build the camera model.

    Beyond the schema, what would otherwise pass and then break every frame: a focal length that is not a
    positive number of pixels of plausible size, a principal point outside the image, a bottom row other
    than (0, 0, 1), a distortion vector of a length OpenCV does not take. `prefix` names where the mapping
    sits in its file (a recording's info.json: "camera").
    """
    validate(data, CAMERA_SCHEMA, path, prefix)
    assert isinstance(data, dict), "validate() refuses anything but a mapping"

    def field(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    w, h = data["image_size"]
    K = np.asarray(data["camera_matrix"], dtype=float)
    dist = np.asarray(data["dist_coeffs"], dtype=float)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not 0.05 * w <= fx <= 100 * w:
        raise UserError(f"focal length fx = {fx:g} px; for a {w} px wide image expected {0.05 * w:g} to "
                        f"{100 * w:g} px", path=path, field=field("camera_matrix.0.0"))
    if not 0.2 * fx <= fy <= 5 * fx:
        raise UserError(f"focal length fy = {fy:g} px does not go with fx = {fx:g} px", path=path,
                        field=field("camera_matrix.1.1"))
    if not 0 < cx < w:
        raise UserError(f"principal point x = {cx:g} px is outside the {w} px wide image", path=path,
                        field=field("camera_matrix.0.2"))
    if not 0 < cy < h:
        raise UserError(f"principal point y = {cy:g} px is outside the {h} px high image", path=path,
                        field=field("camera_matrix.1.2"))
    if abs(K[0, 1]) > 0.1 * fx:
        raise UserError(f"skew {K[0, 1]:g} is implausible for a camera", path=path, field=field("camera_matrix.0.1"))
    if K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
        raise UserError("not an intrinsic matrix: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]", path=path,
                        field=field("camera_matrix"))
    if dist.size not in DIST_LENGTHS:
        raise UserError(f"{dist.size} distortion coefficients; OpenCV takes "
                        f"{', '.join(map(str, DIST_LENGTHS[:-1]))} or {DIST_LENGTHS[-1]}", path=path,
                        field=field("dist_coeffs"))
    if np.abs(dist).max(initial=0.0) > 1e4:
        raise UserError("distortion coefficient beyond 10000: not a lens", path=path, field=field("dist_coeffs"))
    rms = data.get("rms_px")
    known = {"image_size", "camera_matrix", "dist_coeffs", "rms_px", "calibrated"}
    return CameraModel(K=K, dist=dist, size=(int(w), int(h)), calibrated=True,
                       rms_px=float(rms) if rms is not None else None, source=str(path),
                       extra={k: v for k, v in data.items() if k not in known})


def check_camera_fits(camera: CameraModel, width: int, height: int) -> None:
    """A calibration serves any resolution of the same aspect ratio (scaled), never another shape of image."""
    cw, ch = camera.size
    if abs(cw / ch - width / height) > 0.01:
        raise UserError(f"calibrated for {cw}x{ch}, but the frames are {width}x{height} (another aspect ratio)",
                        path=camera.source, field="image_size")


def load_camera(path: str | Path) -> CameraModel:
    """Load intrinsics saved by `guidance calibrate camera`; user errors name the file and field."""
    path = Path(path)
    return camera_from_dict(read_yaml(path, "camera calibration file"), path)
