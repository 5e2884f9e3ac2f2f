"""Per-frame ground truth of a simulation: what the tip really did, one CSV row per output video frame.

The demo judges the live pipeline against this file (was a pulse fired while
the true tip was in an exclusion? how far is measured coverage from the true
coverage?), so it is written once, completely, and read back with types.
Columns: docs/simulate.md.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from guidance.errors import UserError

GROUND_TRUTH_FILE = "ground_truth.csv"


@dataclass(frozen=True)
class GTFrame:
    frame_index: int  # frame of the simulated video, 0-based
    t_video_ns: int  # presentation time in the simulated video (frame_index / fps)
    source_frame: int  # frame of the face video used as background (ping-pong loop)
    face_found: bool  # the face tracker found the face on the clean frame; if not, no handpiece is drawn
    segment: int  # index into the path file's segments; -1 for lead-in / lead-out
    segment_type: str  # sweep | line | move | lift | dwell | reposition | lead_in | lead_out
    contact: bool  # tip on the skin (height 0); a pulse can only land when true
    height_mm: float  # tip above the skin along the normal
    chart_u_mm: float
    chart_v_mm: float
    true_zone: str  # atlas zone of the chart point ("" when none)
    true_kind: str  # treat | exclusion | "" (no zone)
    boundary_mm: float  # signed chart distance to the zone's edge (+ inside), as the atlas gives it
    in_plan: bool | None  # zone is treated by the path's plan (None: the path names no plan)
    plan_distance_mm: float  # signed chart distance to the edge of the union of planned zones (NaN: no plan)
    tip_x_px: float  # NaN when no handpiece is drawn
    tip_y_px: float
    tip_x_mm: float  # camera frame
    tip_y_mm: float
    tip_z_mm: float
    skin_x_px: float  # the chart point on the skin (landmark interpolation); equals tip px in contact
    skin_y_px: float
    speed_mm_s: float  # 3D tip speed in the camera frame (path plus head motion), backward difference
    chart_speed_mm_s: float  # scripted speed along the chart
    facing_camera: bool  # the skin triangle under the tip faces the camera
    markers_visible: str  # ids of clip markers facing the camera inside the image, joined with '+'


COLUMNS = [f.name for f in fields(GTFrame)]


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def write_ground_truth(path: str | Path, frames: list[GTFrame]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for fr in frames:
            w.writerow([_fmt(getattr(fr, c)) for c in COLUMNS])
    tmp.replace(path)


def _parse(name: str, text: str, typ: type | str) -> Any:
    if typ is bool:
        return text == "1"
    if typ == "bool | None":
        return None if text == "" else text == "1"
    if typ is float:
        return float("nan") if text == "" else float(text)
    if typ is int:
        return int(text)
    return text


def load_ground_truth(sim_dir: str | Path) -> list[GTFrame]:
    """The ground-truth rows of a simulation folder (or of a ground_truth.csv given directly)."""
    p = Path(sim_dir)
    if p.is_dir():
        p = p / GROUND_TRUTH_FILE
    if not p.is_file():
        raise UserError("ground truth not found (is this a `guidance simulate` folder?)", path=p)
    # `from __future__ import annotations`: every field type is its source text ("int", "bool | None").
    types = {f.name: str(f.type) for f in fields(GTFrame)}
    typemap: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
    out: list[GTFrame] = []
    with open(p, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError("missing column", path=p, field=missing[0])
        for n, row in enumerate(reader, start=2):
            try:
                out.append(GTFrame(**{c: _parse(c, row[c], typemap.get(types[c], types[c])) for c in COLUMNS}))
            except (TypeError, ValueError):
                raise UserError(f"unreadable value on line {n}", path=p) from None
    return out
