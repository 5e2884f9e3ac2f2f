"""The per-frame tip CSV written by `guidance tip`: columns, formatting, atomic file.

Columns (one row per frame, documented in docs/handpiece.md):
frame_index, t_capture_ns, tip_x_px, tip_y_px, tip_x_mm, tip_y_mm, tip_z_mm,
speed_mm_s, confidence, reason, tip_sigma_mm, reprojection_rms_px, marker_ids,
camera_calibrated. When there is no tip, every coordinate and the speed are
empty and `reason` says why; never a number that was not measured in that frame.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Iterable

from guidance.vision.handpiece.tracker import TipObservation

COLUMNS = [
    "frame_index", "t_capture_ns", "tip_x_px", "tip_y_px", "tip_x_mm", "tip_y_mm", "tip_z_mm",
    "speed_mm_s", "confidence", "reason", "tip_sigma_mm", "reprojection_rms_px", "marker_ids",
    "camera_calibrated",
]


def _f(v: float | None, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def row(obs: TipObservation) -> list[str]:
    px = obs.tip_px or (None, None)
    mm = obs.tip_mm or (None, None, None)
    return [
        str(obs.frame_index), str(obs.t_capture_ns), _f(px[0], 3), _f(px[1], 3),
        _f(mm[0], 3), _f(mm[1], 3), _f(mm[2], 3), _f(obs.speed_mm_s, 2), f"{obs.confidence:.3f}",
        obs.reason, _f(obs.tip_sigma_mm, 3), _f(obs.rms_px, 3), "+".join(str(i) for i in obs.marker_ids),
        "1" if obs.calibrated_camera else "0",
    ]


def write_tip_csv(path: str | Path, observations: Iterable[TipObservation]) -> int:
    """Write all rows to a temporary file next to `path`, then rename; returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    n = 0
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            for obs in observations:
                w.writerow(row(obs))
                n += 1
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
