"""The body atlas: zones around the skin reference patch, one patch chart per body area.

Data: ``data/zones/body_atlas.json`` (made by ``models/build_body_atlas.py``,
sha256 in the manifest). Each body area is an ordinary `Atlas` (same zones,
rasters, distances and exclusion buffers as the face atlas, surface ``body``)
plus what the patch mapping needs: where the patch goes, the smallest radius
of curvature of that skin across (u) and along (v) the body, and the ellipse
around the patch in which its plane is trusted to stand for the skin
(`range_mm`). docs/body.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from guidance.errors import ModelIntegrityError, UserError
from guidance.resources import verified_path
from guidance.zones.atlas import Atlas, atlas_from_dict, load_atlas

BODY_PREFIX = "body/"


@dataclass(frozen=True)
class BodyArea:
    name: str
    clinical_name: str
    placement: str  # where the patch goes
    curvature_radius_mm: tuple[float, float]  # smallest plausible radius across (u) and along (v) the body
    range_mm: tuple[float, float]  # semi-axes (u, v) of the ellipse around the patch where its plane is trusted
    patch_size_mm: tuple[float, float]  # the card, width (u) and height (v)
    atlas: Atlas

    def range_fraction(self, u_mm: float, v_mm: float) -> float:
        """(u/a)² + (v/b)²: at most 1 inside the trusted ellipse (NaN stays NaN: not in range)."""
        a, b = self.range_mm
        return (u_mm / a) ** 2 + (v_mm / b) ** 2

    def in_range(self, u_mm: float, v_mm: float) -> bool:
        return self.range_fraction(u_mm, v_mm) <= 1.0


def _file() -> Path:
    return verified_path("body_atlas", kind="zones")


@lru_cache(maxsize=1)
def _document(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(f"unreadable body atlas ({type(exc).__name__})", path=p) from None
    if not isinstance(d.get("areas"), dict) or not d["areas"]:
        raise ModelIntegrityError("no body areas", path=p, field="areas")
    return d


def body_area_names() -> list[str]:
    return list(_document(str(_file()))["areas"])


@lru_cache(maxsize=8)
def _load_area(path: str, name: str) -> BodyArea:
    d = _document(path)
    a = d["areas"].get(name)
    if a is None:
        raise UserError(f"unknown body area {name!r} (known: {', '.join(d['areas'])})", field="body_area")
    where = f"areas.{name}."
    atlas = atlas_from_dict(a, Path(path), name=BODY_PREFIX + name, prefix=where)
    try:
        radius = (float(a["curvature_radius_mm"][0]), float(a["curvature_radius_mm"][1]))
        rng = (float(a["range_mm"][0]), float(a["range_mm"][1]))
        size = (float(d["patch"]["size_mm"][0]), float(d["patch"]["size_mm"][1]))
    except (KeyError, IndexError, TypeError, ValueError):
        raise ModelIntegrityError("curvature_radius_mm, range_mm and patch.size_mm need two numbers each",
                                  path=path, field=where + "range_mm") from None
    if min(radius) <= 0 or min(rng) <= 0:
        raise ModelIntegrityError("radii and range must be positive", path=path, field=where + "range_mm")
    return BodyArea(name, str(a.get("clinical_name", name)), str(a.get("placement", "")), radius, rng, size, atlas)


def load_body_area(name: str) -> BodyArea:
    """A body area with its atlas (cached; the file is checked against the manifest)."""
    return _load_area(str(_file()), name)


def atlas_named(name: str) -> Atlas:
    """The atlas an `Atlas.name` names: "face" or "body/AREA"."""
    if name.startswith(BODY_PREFIX):
        return load_body_area(name[len(BODY_PREFIX):]).atlas
    return load_atlas()


def plan_atlas(plan: Any, default: Atlas | None = None) -> Atlas:
    """The atlas a plan's zones are on: its body area's for a body plan, else `default` (the face atlas)."""
    if getattr(plan, "area", None) == "body":
        return load_body_area(plan.body_area).atlas
    return default or load_atlas()
