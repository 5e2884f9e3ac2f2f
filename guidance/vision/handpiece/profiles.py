"""Handpiece profiles and head-band files: schema, loading, saving.

A profile is what the clinic's handpiece *is* to the tracker: which markers,
where they sit, where the tip is. A wrong profile silently moves every pulse,
so loading is strict (schema plus geometry checks) and errors name the file and
the field, exit code 2, like the plan file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from guidance.errors import UserError
from guidance.resources import user_or_bundled
from guidance.yamlfile import read_yaml, validate
from guidance.vision.handpiece.marker_body import MarkerBody

# A handpiece or head band is well under a metre across: bounds keep the geometry checks in plain numbers.
_POINT = {"type": "array", "items": {"type": "number", "minimum": -1000, "maximum": 1000}, "minItems": 3, "maxItems": 3}

PROFILE_SCHEMA = {
    "type": "object",
    "required": ["name", "kind", "dictionary", "markers"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "kind": {"enum": ["handpiece", "head_band"]},
        "dictionary": {"type": "string", "pattern": "^DICT_"},
        "markers": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "size_mm", "corners_mm"],
                "properties": {
                    "id": {"type": "integer", "minimum": 0, "maximum": 100000},
                    "size_mm": {"type": "number", "exclusiveMinimum": 0, "maximum": 500},
                    "plate_mm": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
                    "corners_mm": {"type": "array", "items": _POINT, "minItems": 4, "maxItems": 4},
                },
                "additionalProperties": False,
            },
        },
        "tip_offset_mm": _POINT,
        "electrode_diameter_mm": {"type": "number", "exclusiveMinimum": 0, "maximum": 50},
        "shaft": {
            "type": "object",
            "required": ["diameter_mm", "rear_z_mm"],
            "properties": {"diameter_mm": {"type": "number", "exclusiveMinimum": 0, "maximum": 200},
                           "rear_z_mm": {"type": "number", "minimum": -1000, "maximum": 1000}},
            "additionalProperties": False,
        },
        "pivot_calibration": {"type": "object"},
    },
    "additionalProperties": False,
}

# Corners must describe the stated square to this tolerance, or the profile is a typo.
_GEOMETRY_TOL_MM = 0.2


@dataclass(frozen=True)
class HandpieceProfile:
    name: str
    body: MarkerBody
    tip_offset_mm: np.ndarray  # tip in the handpiece (marker) frame
    electrode_diameter_mm: float
    shaft_diameter_mm: float = 20.0
    shaft_rear_z_mm: float = -90.0
    source: str = ""
    raw: dict | None = None  # the file content, kept so a re-save changes only what it means to


def _read_yaml(path: Path) -> dict:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError("expected a mapping at the top level", path=path)
    return data


def body_from_dict(data: dict, path: Path | str) -> MarkerBody:
    """Validate schema and geometry; the MarkerBody it describes."""
    validate(data, PROFILE_SCHEMA, path)
    if not hasattr(cv2.aruco, data["dictionary"]):
        raise UserError("not an OpenCV ArUco dictionary name", path=path, field="dictionary")
    corners: dict[int, np.ndarray] = {}
    sizes: dict[int, float] = {}
    for k, m in enumerate(data["markers"]):
        field = f"markers.{k}"
        if m["id"] in corners:
            raise UserError(f"marker id {m['id']} listed twice", path=path, field=f"{field}.id")
        c = np.asarray(m["corners_mm"], dtype=float)
        s = float(m["size_mm"])
        sides = np.linalg.norm(c - np.roll(c, -1, axis=0), axis=1)
        diags = np.linalg.norm(c[[0, 1]] - c[[2, 3]], axis=1)
        normal = np.cross(c[1] - c[0], c[3] - c[0])
        planar = abs(np.dot(normal / max(np.linalg.norm(normal), 1e-9), c[2] - c[0]))
        if (np.abs(sides - s).max() > _GEOMETRY_TOL_MM or np.abs(diags - s * np.sqrt(2)).max() > _GEOMETRY_TOL_MM
                or planar > _GEOMETRY_TOL_MM):
            raise UserError(f"corners do not form a flat square of side {s:g} mm "
                            f"(sides {', '.join(f'{v:.2f}' for v in sides)} mm)", path=path, field=f"{field}.corners_mm")
        corners[int(m["id"])] = c
        sizes[int(m["id"])] = s
    return MarkerBody(data["name"], data["dictionary"], corners, sizes)


def load_handpiece_profile(path: str | Path) -> HandpieceProfile:
    """A handpiece profile file, or a bundled one by name (`handpiece_default`)."""
    path = user_or_bundled(path, "profiles", what="handpiece profile")
    data = _read_yaml(path)
    body = body_from_dict(data, path)
    if data["kind"] != "handpiece":
        raise UserError(f"expected kind 'handpiece', got {data['kind']!r}", path=path, field="kind")
    for key in ("tip_offset_mm", "electrode_diameter_mm"):
        if key not in data:
            raise UserError("missing field", path=path, field=key)
    tip = np.asarray(data["tip_offset_mm"], dtype=float)
    if np.linalg.norm(tip) > 500:
        raise UserError("tip more than 500 mm from the marker frame origin", path=path, field="tip_offset_mm")
    shaft = data.get("shaft") or {}
    return HandpieceProfile(
        name=data["name"], body=body, tip_offset_mm=tip,
        electrode_diameter_mm=float(data["electrode_diameter_mm"]),
        shaft_diameter_mm=float(shaft.get("diameter_mm", 20.0)),
        shaft_rear_z_mm=float(shaft.get("rear_z_mm", -90.0)),
        source=str(path), raw=data,
    )


def load_head_band(path: str | Path) -> MarkerBody:
    """A head-band file, or a bundled one by name (`head_band_default`)."""
    path = user_or_bundled(path, "profiles", what="head-band file")
    data = _read_yaml(path)
    body = body_from_dict(data, path)
    if data["kind"] != "head_band":
        raise UserError(f"expected kind 'head_band', got {data['kind']!r}", path=path, field="kind")
    return body


def write_yaml_atomic(path: str | Path, data: dict, header: str = "") -> None:
    """Write YAML via a temporary file and rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(header)
            yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=None)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
