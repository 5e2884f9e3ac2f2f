"""The zone atlas: named treatment and exclusion zones on the face chart.

The atlas is data (``data/atlas.json``, versioned, made by ``build_chart.py``):
each zone has a clinical name, a kind (``treat`` or ``exclusion``), the
surface it lies on (face, neck, décolletage, scalp) and its boundary as closed
rings in chart millimetres. At load time the rings are rasterised on the grid
stored in the file; a cell claimed by two zones is a corrupt atlas and refuses
to load, so "every chart point has at most one zone" holds by construction.

For speed at video rate the atlas keeps, per cell, the zone label and the
distance to the nearest cell of a different label (signed: positive inside a
zone, negative outside every zone). A lookup is then two array reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from guidance.errors import ModelIntegrityError
from guidance.resources import verified_path

OFF_SURFACE = "off-surface"
KINDS = ("treat", "exclusion")
SURFACES = ("face", "neck", "decolletage", "scalp", "body")


@dataclass(frozen=True)
class Zone:
    name: str
    clinical_name: str
    kind: str  # "treat" | "exclusion"
    surface: str  # "face" | "neck" | "decolletage" | "scalp" | "body" (a body area's patch chart)
    boundary_mm: tuple[np.ndarray, ...]  # closed rings, (N, 2) chart mm each
    label: int  # 1-based index in the label raster
    carried_on: tuple[str, ...] = ()  # surfaces the zone extends over (the forehead continues onto the scalp cap)
    buffer_mm: float = 0.0  # exclusions: the clinical buffer kept beyond the zone's edge (atlas 1.1)


@dataclass(frozen=True)
class ChartGrid:
    cell_mm: float
    u0_mm: float
    v0_mm: float
    width: int
    height: int

    def to_cell(self, u_mm: float, v_mm: float) -> tuple[int, int] | None:
        """(row, col) of the cell containing (u, v), or None off the grid."""
        j = int(round((u_mm - self.u0_mm) / self.cell_mm))
        i = int(round((v_mm - self.v0_mm) / self.cell_mm))
        if 0 <= i < self.height and 0 <= j < self.width:
            return i, j
        return None

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        u = self.u0_mm + np.arange(self.width) * self.cell_mm
        v = self.v0_mm + np.arange(self.height) * self.cell_mm
        return u, v


@dataclass
class Atlas:
    atlas_version: str
    chart_version: str
    grid: ChartGrid
    zones: dict[str, Zone]
    labels: np.ndarray  # (H, W) uint8, 0 = no zone
    distance_mm: np.ndarray  # (H, W) float32: + inside a zone to its nearest other-label cell; − outside to the nearest zone
    source: str = ""
    name: str = "face"  # which chart: "face", or "body/AREA" for a body area's patch chart (zones/body_atlas.py)
    _by_label: list[Zone | None] = field(default_factory=list, repr=False)
    _zone_sdf: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_label = [None] * (len(self.zones) + 1)
        for z in self.zones.values():
            self._by_label[z.label] = z

    def zone_at(self, u_mm: float, v_mm: float) -> tuple[Zone | None, float]:
        """The zone containing chart point (u, v) and the signed chart distance (mm) to its boundary.

        Outside every zone: (None, −distance to the nearest zone). Off the grid: (None, −inf).
        """
        cell = self.grid.to_cell(u_mm, v_mm)
        if cell is None:
            return None, float("-inf")
        return self._by_label[int(self.labels[cell])], float(self.distance_mm[cell])

    def zone_names(self, *, surface: str | None = None, kind: str | None = None) -> list[str]:
        return [z.name for z in self.zones.values()
                if (surface is None or z.surface == surface) and (kind is None or z.kind == kind)]

    def region_distance_mm(self, zones: tuple[str, ...] | list[str], u_mm: float, v_mm: float) -> float:
        """Signed chart distance (mm) to the boundary of the union of `zones`: + inside, − outside.

        For the gate: how far the point is from leaving the planned zones. The
        field is computed once per set of zones and cached.
        """
        key = tuple(sorted(zones))
        sdf = self._zone_sdf.get(key)
        if sdf is None:
            mask = np.isin(self.labels, [self.zones[n].label for n in key])
            sdf = signed_distance(mask, self.grid.cell_mm)
            self._zone_sdf[key] = sdf
        cell = self.grid.to_cell(u_mm, v_mm)
        return float("-inf") if cell is None else float(sdf[cell])

    def exclusion_clearance_mm(self, u_mm: float, v_mm: float, surface: str = "face") -> tuple[float, str] | None:
        """Chart distance from (u, v) to the nearest atlas exclusion on `surface`, minus its clinical buffer.

        Positive: clear of every exclusion by that much beyond its buffer; None when the surface has none.
        Each exclusion's signed field is cached like `region_distance_mm`'s.
        """
        best: tuple[float, str] | None = None
        for z in self.zones.values():
            if z.kind != "exclusion" or z.surface != surface:
                continue
            d = -self.region_distance_mm((z.name,), u_mm, v_mm) - z.buffer_mm
            if best is None or d < best[0]:
                best = (d, z.name)
        return best

    def cell_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels.ravel(), minlength=len(self._by_label))
        return {z.name: int(counts[z.label]) for z in self.zones.values()}


def signed_distance(mask: np.ndarray, cell_mm: float) -> np.ndarray:
    """Distance (mm) from each cell centre to the region boundary: + inside `mask`, − outside.

    cv2 gives centre-to-centre distances to the nearest cell on the other
    side; the boundary lies half a cell before it, and a query point can sit up
    to half a cell diagonal from its cell centre, so one full cell is taken off
    (conservative by at most that much: 0.5 mm on the 0.5 mm grid).
    """
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d = np.where(mask, inside - 1.0, -(outside + 0.0)) * cell_mm
    return d.astype(np.float32)


def rasterise(zones: dict[str, Zone], grid: ChartGrid, *, source: str = "") -> np.ndarray:
    labels = np.zeros((grid.height, grid.width), np.uint8)
    for z in zones.values():
        m = np.zeros_like(labels)
        rings = [np.round((r - [grid.u0_mm, grid.v0_mm]) / grid.cell_mm).astype(np.int32).reshape(-1, 1, 2)
                 for r in z.boundary_mm]
        cv2.fillPoly(m, rings, 1)
        clash = (m > 0) & (labels > 0)
        if clash.any():
            other = int(np.bincount(labels[clash]).argmax())
            raise ModelIntegrityError(f"zone overlaps zone #{other} in {int(clash.sum())} cells", path=source,
                                      field=f"zones.{z.name}")
        labels[m > 0] = z.label
    return labels


def load_atlas(path: Path | None = None) -> Atlas:
    """The atlas, rasterised and with its distance field; cached per path (read-only by convention).

    The bundled atlas is checked against the manifest first, like the models: zones decide permits.
    """
    return _load_atlas(str(path or verified_path("atlas", kind="zones")))


@lru_cache(maxsize=4)
def _load_atlas(path: str) -> Atlas:
    p = Path(path)
    if not p.exists():
        raise ModelIntegrityError("zone atlas missing (run python models/build_chart.py)", path=p)
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ModelIntegrityError(f"not valid JSON (line {exc.lineno})", path=p) from None
    return atlas_from_dict(d, p)


def atlas_from_dict(d: dict, p: Path, name: str = "face", prefix: str = "") -> Atlas:
    """An atlas from its JSON object (`prefix`: where it sits in the file, for error messages)."""
    for key in ("atlas_version", "grid", "zones"):
        if key not in d:
            raise ModelIntegrityError("missing field", path=p, field=prefix + key)
    grid = ChartGrid(**d["grid"])
    zones: dict[str, Zone] = {}
    for k, z in enumerate(d["zones"], start=1):
        if z["kind"] not in KINDS:
            raise ModelIntegrityError(f"unknown kind {z['kind']!r}", path=p, field=f"{prefix}zones.{k - 1}.kind")
        if z["name"] in zones or z["name"] == OFF_SURFACE:
            raise ModelIntegrityError("duplicate or reserved zone name", path=p, field=f"{prefix}zones.{k - 1}.name")
        rings = tuple(np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in z["boundary_mm"])
        buffer = z.get("buffer_mm", 0.0)
        if not (isinstance(buffer, (int, float)) and 0.0 <= buffer <= 50.0):
            raise ModelIntegrityError("buffer_mm must be 0..50 mm", path=p, field=f"{prefix}zones.{k - 1}.buffer_mm")
        zones[z["name"]] = Zone(z["name"], z["clinical_name"], z["kind"], z["surface"], rings, k,
                                tuple(z.get("carried_on", [z["surface"]])), float(buffer))
    labels = rasterise(zones, grid, source=str(p))
    dist = np.zeros(labels.shape, np.float32)
    for z in zones.values():
        m = labels == z.label
        inside = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        dist[m] = (inside[m] - 1.0) * grid.cell_mm
    none = labels == 0
    out = cv2.distanceTransform(none.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dist[none] = -out[none] * grid.cell_mm
    labels.setflags(write=False)
    dist.setflags(write=False)
    return Atlas(d["atlas_version"], d.get("chart_version", ""), grid, zones, labels, dist, source=str(p), name=name)
