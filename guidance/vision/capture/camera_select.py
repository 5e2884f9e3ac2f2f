"""Which camera model a command runs with: the calibration file, or the documented default, said out loud."""

from __future__ import annotations

import sys
from pathlib import Path

from guidance.vision.capture.camera import CameraModel, check_camera_fits, load_camera


def camera_for(path: str | Path | None, width: int, height: int, command: str) -> CameraModel:
    """The camera at this frame size. Without a file: the uncalibrated default, with a warning on stderr."""
    if path is None:
        print(f"guidance {command}: warning: no --camera-calibration; using the uncalibrated default "
              f"(focal length = image width, centred principal point): millimetres are approximate",
              file=sys.stderr)
        return CameraModel.default(width, height)
    cam = load_camera(path)
    check_camera_fits(cam, width, height)
    return cam.scaled_to(width, height)
