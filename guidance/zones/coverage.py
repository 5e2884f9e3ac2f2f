"""Coverage: how many passes each part of each zone has received, on the chart.

A pulse deposits the handpiece footprint (a disc of the electrode diameter,
from the handpiece profile) at its chart position: every chart cell whose
centre lies within the disc gets one more pass. Cells belong to the zone the
atlas gives them, so a pulse near an edge counts towards both zones' cells; the
pulse itself is counted once, in the zone under its centre.

Without pulse feedback from the controller, contact dwell time can stand in:
``deposit_dwell`` adds ``dwell_s × pulse_rate_hz`` (fractional) passes, the
number of pulses the device would have fired at its nominal rate while the
tip was in contact there. Those are estimates and are kept apart
(``dwell_s`` per zone) so a report can say which coverage was measured.

Serialises to JSON (sparse: only touched cells) and reloads bit for bit.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guidance.errors import UserError
from guidance.zones.atlas import Atlas, load_atlas

FORMAT = "guidance-coverage"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ZoneCoverage:
    zone: str
    cells: int
    target_passes: int | None
    max_passes: int | None
    cells_at_target: int  # cells with passes >= target (0 without a target)
    fraction_at_target: float  # cells_at_target / cells
    cells_over_max: int  # cells with passes > max (over-treatment)
    pulses: int  # pulses whose centre fell in this zone
    dwell_s: float  # contact time credited as dwell-based passes
    mean_passes: float


class CoverageMap:
    """Passes per chart cell (<= 1 mm cells) and pulse counts per zone."""

    def __init__(self, atlas: Atlas | None = None, *, cell_mm: float = 0.5,
                 targets: dict[str, tuple[int, int]] | None = None):
        if not (0 < cell_mm <= 1.0):
            raise ValueError("coverage cells must be at most 1 mm")
        self.atlas = atlas or load_atlas()
        g = self.atlas.grid
        self.cell_mm = float(cell_mm)
        self.u0_mm, self.v0_mm = g.u0_mm, g.v0_mm
        self.width = int(np.floor((g.width - 1) * g.cell_mm / cell_mm)) + 1
        self.height = int(np.floor((g.height - 1) * g.cell_mm / cell_mm)) + 1
        # zone label of each coverage cell = atlas label at the cell centre
        ai = np.clip(np.round(np.arange(self.height) * cell_mm / g.cell_mm).astype(int), 0, g.height - 1)
        aj = np.clip(np.round(np.arange(self.width) * cell_mm / g.cell_mm).astype(int), 0, g.width - 1)
        self.labels = self.atlas.labels[np.ix_(ai, aj)]
        self.passes = np.zeros((self.height, self.width), np.float64)
        self.targets = dict(targets or {})
        self.pulses = {name: 0 for name in self.atlas.zones}
        self.dwell_s = {name: 0.0 for name in self.atlas.zones}
        self.unplaced_pulses = 0  # pulses off every zone: still accounted for
        self.lifted_pulses = 0  # pulses fired without skin contact: counted, never deposited
        self.contact_unknown_pulses = 0  # pulses from a controller that does not report contact: never deposited
        self._name_of = {z.label: z.name for z in self.atlas.zones.values()}
        self._cells: dict[str, np.ndarray] = {}

    @classmethod
    def for_plan(cls, plan, atlas: Atlas | None = None, *, cell_mm: float = 0.5) -> "CoverageMap":
        """Coverage of a plan's zones; a body plan's is always on its body area's patch chart."""
        if getattr(plan, "area", None) == "body":
            from guidance.zones.body_atlas import plan_atlas
            atlas = plan_atlas(plan)
        return cls(atlas, cell_mm=cell_mm,
                   targets={z.zone: (z.target_passes, z.max_passes) for z in plan.zones.values()})

    def _disc(self, u_mm: float, v_mm: float, diameter_mm: float) -> tuple[slice, slice, np.ndarray]:
        r = diameter_mm / 2.0
        j0 = max(int(np.floor((u_mm - r - self.u0_mm) / self.cell_mm)), 0)
        j1 = min(int(np.ceil((u_mm + r - self.u0_mm) / self.cell_mm)) + 1, self.width)
        i0 = max(int(np.floor((v_mm - r - self.v0_mm) / self.cell_mm)), 0)
        i1 = min(int(np.ceil((v_mm + r - self.v0_mm) / self.cell_mm)) + 1, self.height)
        if j0 >= j1 or i0 >= i1:
            return slice(0, 0), slice(0, 0), np.zeros((0, 0), bool)
        uc = self.u0_mm + np.arange(j0, j1) * self.cell_mm
        vc = self.v0_mm + np.arange(i0, i1) * self.cell_mm
        inside = (uc[None, :] - u_mm) ** 2 + (vc[:, None] - v_mm) ** 2 <= r * r
        return slice(i0, i1), slice(j0, j1), inside

    def zone_at(self, u_mm: float, v_mm: float) -> str | None:
        z, _ = self.atlas.zone_at(u_mm, v_mm)
        return z.name if z else None

    def _deposit(self, u_mm: float, v_mm: float, diameter_mm: float, passes: float) -> None:
        if not diameter_mm > 0:
            raise ValueError("footprint diameter must be positive")
        rs, cs, inside = self._disc(u_mm, v_mm, diameter_mm)
        window = self.passes[rs, cs]
        window[inside & (self.labels[rs, cs] > 0)] += passes

    def deposit_pulse(self, u_mm: float, v_mm: float, diameter_mm: float) -> str | None:
        """One pulse at chart (u, v) with the electrode footprint; returns the zone credited (None: off-zone)."""
        self._deposit(u_mm, v_mm, diameter_mm, 1.0)
        zone = self.zone_at(u_mm, v_mm)
        if zone is None:
            self.unplaced_pulses += 1
        else:
            self.pulses[zone] += 1
        return zone

    def deposit_dwell(self, u_mm: float, v_mm: float, diameter_mm: float, dwell_s: float,
                      pulse_rate_hz: float) -> str | None:
        """Stand-in without pulse feedback: contact time × nominal pulse rate as fractional passes."""
        if dwell_s < 0 or pulse_rate_hz <= 0:
            raise ValueError("dwell must be >= 0 and pulse rate > 0")
        self._deposit(u_mm, v_mm, diameter_mm, dwell_s * pulse_rate_hz)
        zone = self.zone_at(u_mm, v_mm)
        if zone is not None:
            self.dwell_s[zone] += dwell_s
        return zone

    def max_passes_in_disc(self, u_mm: float, v_mm: float, diameter_mm: float) -> float:
        """Most passes any zone cell under a footprint at (u, v) already has: what the next pulse would add to."""
        rs, cs, inside = self._disc(u_mm, v_mm, diameter_mm)
        window = self.passes[rs, cs]
        cells = window[inside & (self.labels[rs, cs] > 0)]
        return float(cells.max()) if cells.size else 0.0

    def passes_at(self, u_mm: float, v_mm: float) -> float:
        j = int(round((u_mm - self.u0_mm) / self.cell_mm))
        i = int(round((v_mm - self.v0_mm) / self.cell_mm))
        return float(self.passes[i, j]) if 0 <= i < self.height and 0 <= j < self.width else 0.0

    def _zone_cells(self, name: str) -> np.ndarray:
        """Flat indices of the zone's cells, found once: the labels never change, the passes do."""
        cells = self._cells.get(name)
        if cells is None:
            cells = np.flatnonzero(self.labels == self.atlas.zones[name].label)
            self._cells[name] = cells
        return cells

    def zone(self, name: str) -> ZoneCoverage:
        p = self.passes.ravel()[self._zone_cells(name)]
        target, maximum = self.targets.get(name, (None, None))
        at = int((p >= target).sum()) if target is not None else 0
        over = int((p > maximum).sum()) if maximum is not None else 0
        n = int(p.size)
        return ZoneCoverage(name, n, target, maximum, at, at / n if n else 0.0, over, self.pulses[name],
                            self.dwell_s[name], float(p.mean()) if n else 0.0)

    def summary(self) -> dict[str, ZoneCoverage]:
        return {name: self.zone(name) for name in self.atlas.zones}

    # ---------------------------------------------------------------- files

    def to_dict(self) -> dict:
        idx = np.flatnonzero(self.passes)
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "atlas_version": self.atlas.atlas_version,
            **({} if self.atlas.name == "face" else {"atlas": self.atlas.name}),
            "cell_mm": self.cell_mm, "u0_mm": self.u0_mm, "v0_mm": self.v0_mm,
            "width": self.width, "height": self.height,
            "targets": {k: list(v) for k, v in self.targets.items()},
            "pulses": {k: v for k, v in self.pulses.items() if v},
            "dwell_s": {k: v for k, v in self.dwell_s.items() if v},
            "unplaced_pulses": self.unplaced_pulses,
            "lifted_pulses": self.lifted_pulses,
            "contact_unknown_pulses": self.contact_unknown_pulses,
            "cells": {"index": idx.tolist(), "passes": self.passes.ravel()[idx].tolist()},
        }

    @classmethod
    def from_dict(cls, d: dict, atlas: Atlas | None = None, *, source: str = "") -> "CoverageMap":
        if d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
            raise UserError("not a coverage file of a known version", path=source, field="format")
        name = d.get("atlas", "face")  # a body area's coverage names its patch chart ("body/abdomen")
        if atlas is None or atlas.name != name:
            from guidance.zones.body_atlas import atlas_named
            atlas = atlas_named(str(name))
        # Minor atlas versions keep the zone geometry (1.1 added exclusion buffers): same major, same raster.
        if str(d["atlas_version"]).split(".")[0] != atlas.atlas_version.split(".")[0]:
            raise UserError(f"made with atlas {d['atlas_version']}, this is atlas {atlas.atlas_version}",
                            path=source, field="atlas_version")
        cov = cls(atlas, cell_mm=d["cell_mm"], targets={k: tuple(v) for k, v in d["targets"].items()})
        if (cov.width, cov.height) != (d["width"], d["height"]):
            raise UserError("grid does not match the atlas", path=source, field="width")
        flat = cov.passes.ravel()
        flat[np.asarray(d["cells"]["index"], dtype=np.int64)] = np.asarray(d["cells"]["passes"], dtype=np.float64)
        for k, v in d["pulses"].items():
            cov.pulses[k] = int(v)
        for k, v in d["dwell_s"].items():
            cov.dwell_s[k] = float(v)
        cov.unplaced_pulses = int(d.get("unplaced_pulses", 0))
        cov.lifted_pulses = int(d.get("lifted_pulses", 0))
        cov.contact_unknown_pulses = int(d.get("contact_unknown_pulses", 0))
        return cov

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, atlas: Atlas | None = None) -> "CoverageMap":
        path = Path(path)
        if not path.is_file():
            raise UserError("coverage file not found", path=path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"not valid JSON (line {exc.lineno})", path=path) from None
        return cls.from_dict(d, atlas, source=str(path))
