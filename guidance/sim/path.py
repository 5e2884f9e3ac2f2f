"""The simulation path file: a scripted handpiece path on the face chart, and the trajectory it describes.

Scripting in chart millimetres (not pixels) makes the truth exact: the zone
under the tip is an atlas lookup of the scripted point, whatever the face
does in the video. The file is YAML, versioned and schema-checked; a bad file
is refused with one line naming the file and field (exit code 2), like a plan.
Format and semantics: docs/simulate.md.

The trajectory is a list of pieces, each a straight chart-space motion at
constant speed, either in contact with the skin or lifted. Consecutive lifted
pieces form one lifted phase whose height ramps up and down smoothly
(`lift_ramp_s`), so the handpiece leaves and lands on the skin as a hand does;
`contact` is true only on contact pieces (height exactly 0).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from guidance.errors import UserError
from guidance.resources import expand_user, is_file, user_or_bundled
from guidance.yamlfile import read_yaml, validate
from guidance.zones.atlas import Atlas
from guidance.zones.plan import TreatmentPlan, load_plan

PATH_VERSION = 1
SEGMENT_TYPES = ("sweep", "line", "move", "lift", "dwell")

_POINT2 = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
_SPEED = {"type": "number", "exclusiveMinimum": 0, "maximum": 500}
_DURATION = {"type": "number", "exclusiveMinimum": 0, "maximum": 60}

PATH_SCHEMA = {
    "type": "object",
    "required": ["path_version", "segments"],
    "properties": {
        "path_version": {"const": PATH_VERSION},
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "description": {"type": "string"},
        "plan": {"type": "string", "minLength": 1},
        "speed_mm_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 200},
        "reposition_speed_mm_s": _SPEED,
        "lift_height_mm": {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
        "lift_ramp_s": {"type": "number", "minimum": 0, "maximum": 2},
        "lead_in_s": {"type": "number", "minimum": 0, "maximum": 10},
        "lead_out_s": {"type": "number", "minimum": 0, "maximum": 10},
        "start": _POINT2,
        "render": {
            "type": "object",
            "properties": {
                "exposure_s": {"type": "number", "minimum": 0, "maximum": 0.05},
                "noise_sigma": {"type": "number", "minimum": 0, "maximum": 10},
                "seed": {"type": "integer", "minimum": 0},
                "tilt_deg": {"type": "number", "minimum": 0, "maximum": 60},
                # body paths (a body plan): the skin's radius across the body (0: flat) and its breathing motion
                "curvature_radius_mm": {"type": "number", "minimum": 0, "maximum": 5000},
                "body_motion_mm": {"type": "number", "minimum": 0, "maximum": 10},
            },
            "additionalProperties": False,
        },
        "segments": {
            "type": "array", "minItems": 1,
            "items": {"type": "object", "required": ["type"], "properties": {"type": {"enum": list(SEGMENT_TYPES)}}},
        },
    },
    "additionalProperties": False,
}

_TARGET = {"to": _POINT2, "toward": {"type": "string", "minLength": 1},
           "depth_mm": {"type": "number", "minimum": -50, "maximum": 50}, "speed_mm_s": _SPEED}
SEGMENT_SCHEMAS: dict[str, dict[str, Any]] = {
    "sweep": {"required": ["zone"], "properties": {
        "zone": {"type": "string", "minLength": 1},
        "spacing_mm": {"type": "number", "minimum": 1, "maximum": 50},
        "inset_mm": {"type": "number", "minimum": 0, "maximum": 30},
        "direction": {"enum": ["horizontal", "vertical"]},
        "max_lines": {"type": "integer", "minimum": 1},
        "reverse": {"type": "boolean"},
        "speed_mm_s": _SPEED}},
    "line": {"required": [], "properties": dict(_TARGET)},
    "move": {"required": [], "properties": dict(_TARGET)},
    "lift": {"required": ["duration_s"], "properties": {"duration_s": _DURATION}},
    "dwell": {"required": ["duration_s"], "properties": {"duration_s": _DURATION}},
}

DEFAULTS = {"speed_mm_s": 25.0, "reposition_speed_mm_s": 80.0, "lift_height_mm": 15.0, "lift_ramp_s": 0.15,
            "lead_in_s": 0.5, "lead_out_s": 0.5}
RENDER_DEFAULTS = {"exposure_s": 0.012, "noise_sigma": 1.5, "seed": 0, "tilt_deg": 35.0}
SWEEP_DEFAULTS = {"spacing_mm": 6.0, "inset_mm": 3.0, "direction": "horizontal"}
_STEP_MM = 0.5  # chart sampling step when checking a motion stays on the mesh / in a zone


@dataclass(frozen=True)
class SimPath:
    """A validated path file."""

    source: str
    data: dict  # the file content with defaults filled in
    plan: TreatmentPlan | None
    atlas: Atlas | None = None  # the chart it is scripted on (a body plan's patch chart; else the face atlas)

    @property
    def is_body(self) -> bool:
        """Scripted on a body area's patch chart (its plan has `area: body`): simulated on a rendered body."""
        return self.plan is not None and self.plan.area == "body"

    @property
    def name(self) -> str:
        return str(self.data.get("name") or Path(self.source).stem)

    @property
    def render(self) -> dict:
        return {**RENDER_DEFAULTS, **self.data.get("render", {})}


@dataclass(frozen=True)
class Piece:
    """A straight chart motion at constant speed, in contact or lifted."""

    t0_s: float
    t1_s: float
    uv0_mm: np.ndarray
    uv1_mm: np.ndarray
    contact: bool
    segment: int  # index into the file's segments; -1 for lead-in / lead-out
    kind: str  # segment type, or "lead_in", "lead_out", "reposition"


@dataclass(frozen=True)
class PathSample:
    t_s: float
    uv_mm: np.ndarray
    height_mm: float  # tip above the skin along the normal (0 in contact)
    contact: bool
    segment: int
    kind: str
    chart_speed_mm_s: float


@dataclass
class Trajectory:
    pieces: list[Piece]
    lift_height_mm: float
    lift_ramp_s: float
    _t0: list[float] = field(default_factory=list, repr=False)
    _phases: list[tuple[float, float, bool, bool]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._t0 = [p.t0_s for p in self.pieces]
        # Lifted phases: runs of consecutive lifted pieces; ramps except at the very start / end.
        phases, start = [], None
        for k, p in enumerate(self.pieces + [None]):
            lifted = p is not None and not p.contact
            if lifted and start is None:
                start = k
            if not lifted and start is not None:
                a, b = self.pieces[start].t0_s, self.pieces[k - 1].t1_s
                phases.append((a, b, start > 0, k < len(self.pieces)))
                start = None
        self._phases = phases

    @property
    def duration_s(self) -> float:
        return self.pieces[-1].t1_s if self.pieces else 0.0

    def sample(self, t_s: float) -> PathSample:
        t = min(max(t_s, 0.0), self.duration_s)
        k = max(0, min(bisect.bisect_right(self._t0, t) - 1, len(self.pieces) - 1))
        p = self.pieces[k]
        span = p.t1_s - p.t0_s
        f = 0.0 if span <= 0 else (t - p.t0_s) / span
        uv = p.uv0_mm + (p.uv1_mm - p.uv0_mm) * f
        speed = float(np.linalg.norm(p.uv1_mm - p.uv0_mm) / span) if span > 0 else 0.0
        height = 0.0 if p.contact else self._height(t)
        return PathSample(t_s, uv, height, p.contact, p.segment, p.kind, speed)

    def _height(self, t: float) -> float:
        for a, b, ramp_up, ramp_down in self._phases:
            if a <= t <= b:
                r = self.lift_ramp_s
                f = 1.0
                if r > 0 and ramp_up:
                    f = min(f, (t - a) / r)
                if r > 0 and ramp_down:
                    f = min(f, (b - t) / r)
                f = max(f, 0.0)
                return self.lift_height_mm * (0.5 - 0.5 * np.cos(np.pi * f))  # smooth take-off and landing
        return self.lift_height_mm


# -- loading -------------------------------------------------------------------------------


def parse_path(data: object, path: str | Path, atlas: Atlas) -> SimPath:
    """Validate a loaded path document (structure, then meaning against the atlas and plan)."""
    path = Path(path)
    if not isinstance(data, dict):
        raise UserError("expected a mapping at the top level", path=path)
    validate(data, PATH_SCHEMA, path)
    plan = None
    if "plan" in data:
        ref = expand_user(data["plan"])
        resolved = ref if ref.is_absolute() else path.parent / ref
        if not is_file(resolved):
            raise UserError(f"plan {data['plan']!r} not found (resolved to {resolved})", path=path, field="plan")
        plan = load_plan(resolved, atlas)
        if plan.area == "body":  # scripted on the body area's patch chart
            from guidance.zones.body_atlas import plan_atlas
            atlas = plan_atlas(plan)
    for i, seg in enumerate(data["segments"]):
        kind = seg["type"]
        spec = SEGMENT_SCHEMAS[kind]
        schema = {"type": "object", "required": ["type", *spec["required"]],
                  "properties": {"type": {"const": kind}, **spec["properties"]}, "additionalProperties": False}
        validate(seg, schema, path, f"segments.{i}")
        f = f"segments.{i}"
        if kind in ("line", "move") and ("to" in seg) == ("toward" in seg):
            raise UserError("give exactly one of 'to' (a chart point) or 'toward' (a zone name)", path=path, field=f)
        if kind in ("line", "move") and "depth_mm" in seg and "toward" not in seg:
            raise UserError("depth_mm only goes with 'toward'", path=path, field=f"{f}.depth_mm")
        for key in ("zone", "toward"):
            if key in seg and seg[key] not in atlas.zones:
                raise UserError(f"unknown zone {seg[key]!r} (see `guidance atlas --list`)", path=path,
                                field=f"{f}.{key}")
    if plan is not None:
        for i, seg in enumerate(data["segments"]):
            if seg["type"] == "sweep" and not plan.is_planned(seg["zone"]):
                raise UserError(f"sweep over {seg['zone']!r}, which the plan does not treat", path=path,
                                field=f"segments.{i}.zone")
    filled = {**DEFAULTS, **data}
    return SimPath(str(path), filled, plan, atlas)


def load_path(path: str | Path, atlas: Atlas) -> SimPath:
    """A path file, or a bundled path by name (`demo_full_face`)."""
    path = user_or_bundled(path, "paths", what="path file")
    return parse_path(read_yaml(path, "path file"), path, atlas)


# -- trajectory ----------------------------------------------------------------------------


def sweep_strokes(atlas: Atlas, zone: str, mesh_cells: np.ndarray, *, spacing_mm: float, inset_mm: float,
                  direction: str, max_lines: int | None = None, reverse: bool = False,
                  min_stroke_mm: float = 4.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raster strokes (start, end in chart mm) covering `zone`, `inset_mm` inside its edge, boustrophedon order.

    Lines run at constant v (horizontal) or u (vertical), `spacing_mm` apart,
    centred on the zone; from low to high v (or u) unless `reverse`. A line
    the zone cuts into several runs gives several strokes; runs shorter than
    `min_stroke_mm` are skipped (a practitioner would not dab them).
    """
    g = atlas.grid
    z = atlas.zones[zone]
    inner = (atlas.labels == z.label) & (atlas.distance_mm >= inset_mm) & mesh_cells
    if direction == "vertical":
        inner = inner.T
        a0, b0 = g.u0_mm, g.v0_mm  # lines at constant u, running along v
    else:
        a0, b0 = g.v0_mm, g.u0_mm  # lines at constant v, running along u
    rows = np.flatnonzero(inner.any(axis=1))
    if rows.size == 0:
        return []
    lo, hi = a0 + rows[0] * g.cell_mm, a0 + rows[-1] * g.cell_mm
    n = int(np.floor((hi - lo) / spacing_mm)) + 1
    first = lo + ((hi - lo) - (n - 1) * spacing_mm) / 2
    strokes: list[tuple[np.ndarray, np.ndarray]] = []
    order = list(range(n))[::-1] if reverse else list(range(n))
    for k, line in enumerate(order[:max_lines]):
        a = first + line * spacing_mm
        r = int(round((a - a0) / g.cell_mm))
        row = inner[r].astype(np.int8)
        edges = np.flatnonzero(np.diff(np.r_[0, row, 0]))
        runs = [(s, e - 1) for s, e in zip(edges[::2], edges[1::2]) if (e - 1 - s) * g.cell_mm >= min_stroke_mm]
        if k % 2:
            runs = [(e, s) for s, e in reversed(runs)]
        for s, e in runs:
            p0, p1 = (b0 + s * g.cell_mm, a), (b0 + e * g.cell_mm, a)
            if direction == "vertical":
                p0, p1 = (a, p0[0]), (a, p1[0])
            strokes.append((np.array(p0, float), np.array(p1, float)))
    return strokes


def _samples(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = max(2, int(np.ceil(np.linalg.norm(b - a) / _STEP_MM)) + 1)
    return a + (b - a) * np.linspace(0.0, 1.0, n)[:, None]


def _within(atlas: Atlas, zone: str, pts: np.ndarray, min_depth_mm: float) -> bool:
    for u, v in pts:
        z, d = atlas.zone_at(float(u), float(v))
        if z is None or z.name != zone or d < min_depth_mm:
            return False
    return True


def _toward(atlas: Atlas, zone: str, current: np.ndarray, depth_mm: float, path: str, fld: str) -> np.ndarray:
    g = atlas.grid
    ii, jj = np.nonzero(atlas.labels == atlas.zones[zone].label)
    cells = np.c_[g.u0_mm + jj * g.cell_mm, g.v0_mm + ii * g.cell_mm]
    d = np.linalg.norm(cells - current, axis=1)
    k = int(np.argmin(d))
    if d[k] < 1e-6:
        raise UserError(f"already inside {zone!r}: 'toward' needs a start outside the zone", path=path, field=fld)
    direction = (cells[k] - current) / d[k]
    return cells[k] + direction * depth_mm


def build_trajectory(sim: SimPath, atlas: Atlas, on_mesh: Callable[[np.ndarray], np.ndarray],
                     mesh_cells: np.ndarray,
                     off_mesh: str = "goes off the face chart at ({u:.1f}, {v:.1f}) mm (only the face mesh can be "
                                     "simulated)") -> Trajectory:
    """The chart trajectory of a path; every point it visits is checked to lie on the face mesh (`on_mesh`;
    a body path: inside the body area's range around the patch)."""
    d = sim.data
    src = sim.source
    speed = float(d["speed_mm_s"])
    rep_speed = float(d["reposition_speed_mm_s"])
    ramp = float(d["lift_ramp_s"])
    pieces: list[Piece] = []
    fields: list[str] = []  # the file field each piece comes from, for error messages
    t = 0.0

    def add(a, b, duration, contact, seg, kind, fld):
        nonlocal t
        pieces.append(Piece(t, t + duration, np.asarray(a, float), np.asarray(b, float), contact, seg, kind))
        fields.append(fld)
        t += duration

    def travel(a, b, contact, seg, kind, v, fld):
        dist = float(np.linalg.norm(b - a))
        duration = dist / v
        if not contact:
            duration = max(duration, 2 * ramp)  # off and back onto the skin takes time
        if duration > 0:
            add(a, b, duration, contact, seg, kind, fld)

    segs = d["segments"]
    start = np.asarray(d["start"], float) if "start" in d else None
    cur = start
    # First pass: resolve each segment's motions (sweeps and 'toward' need the current point).
    resolved: list[list[tuple[np.ndarray, np.ndarray, bool, float]]] = []
    for i, seg in enumerate(segs):
        f = f"segments.{i}"
        kind = seg["type"]
        moves: list[tuple[np.ndarray, np.ndarray, bool, float]] = []  # (from, to, contact, speed)
        if kind == "sweep":
            spacing = float(seg.get("spacing_mm", SWEEP_DEFAULTS["spacing_mm"]))
            inset = float(seg.get("inset_mm", SWEEP_DEFAULTS["inset_mm"]))
            strokes = sweep_strokes(atlas, seg["zone"], mesh_cells, spacing_mm=spacing, inset_mm=inset,
                                    direction=seg.get("direction", SWEEP_DEFAULTS["direction"]),
                                    max_lines=seg.get("max_lines"), reverse=bool(seg.get("reverse", False)))
            if not strokes:
                raise UserError(f"zone {seg['zone']!r} has no room for a sweep {inset:g} mm inside its edge",
                                path=src, field=f"{f}.inset_mm")
            v = float(seg.get("speed_mm_s", speed))
            if cur is None:
                cur = strokes[0][0]
                start = cur
            for k, (a, b) in enumerate(strokes):
                if k > 0:
                    prev = strokes[k - 1][1]
                    inside = _within(atlas, seg["zone"], _samples(prev, a), inset / 2)
                    moves.append((prev, a, inside, v if inside else rep_speed))
                moves.append((a, b, True, v))
        elif kind in ("line", "move"):
            if cur is None:
                raise UserError("the path starts with a line or move: give a 'start' point", path=src, field="start")
            if "to" in seg:
                target = np.asarray(seg["to"], float)
            else:
                target = _toward(atlas, seg["toward"], cur, float(seg.get("depth_mm", 0.0)), src, f"{f}.toward")
            contact = kind == "line"
            moves.append((cur, target, contact, float(seg.get("speed_mm_s", speed if contact else rep_speed))))
        else:  # lift / dwell: stay put
            if cur is None:
                raise UserError(f"the path starts with a {kind}: give a 'start' point", path=src, field="start")
            moves.append((cur, cur, kind == "dwell", -float(seg["duration_s"])))
        cur = moves[-1][1]
        resolved.append(moves)

    cur = start
    if float(d["lead_in_s"]) > 0:
        add(cur, cur, float(d["lead_in_s"]), False, -1, "lead_in", "start")
    for i, moves in enumerate(resolved):
        f = f"segments.{i}"
        kind = segs[i]["type"]
        first = moves[0][0]
        if np.linalg.norm(first - cur) > 1e-6:
            travel(cur, first, False, i, "reposition", rep_speed, f)
        for a, b, contact, v in moves:
            if v < 0:
                add(a, b, -v, contact, i, kind, f)
            else:
                travel(a, b, contact, i, kind if (contact or kind == "move") else "reposition", v, f)
        cur = moves[-1][1]
    if float(d["lead_out_s"]) > 0:
        add(cur, cur, float(d["lead_out_s"]), False, -1, "lead_out", f"segments.{len(segs) - 1}")
    if not pieces:
        raise UserError("the path has no motion", path=src, field="segments")
    for p, fld in zip(pieces, fields):
        pts = _samples(p.uv0_mm, p.uv1_mm)
        ok = on_mesh(pts)
        if not ok.all():
            u, v = pts[int(np.argmin(ok))]
            raise UserError(off_mesh.format(u=u, v=v), path=src, field=fld)
    return Trajectory(pieces, float(d["lift_height_mm"]), ramp)
