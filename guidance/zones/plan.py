"""The treatment plan file: which zones to treat, how many passes, and the safety margins.

YAML, validated with jsonschema for structure and then against the atlas for
meaning. A bad plan is refused with one line naming the file and the field
(``UserError``, exit code 2): a plan is what the gate enforces, so it is never
"mostly" loaded.

    plan_version: 1
    plan_id: FF-0001
    area: face                      # face | neck-decolletage | scalp | mixed | body
    body_area: abdomen              # area: body only: which body area of the body atlas (zones/body_atlas.py)
    handpiece_profile: ../calibration/handpiece_default.yaml   # relative to the plan file
    margin_mm: 2.0
    ttl_ms: 60
    stop_at_target: true
    zones:
      - {zone: forehead_central, target_passes: 2, max_passes: 3}
    exclusions: [glabella]          # extra no-go zones on top of the atlas exclusions
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from guidance.errors import UserError
from guidance.resources import expand_user, is_file, user_or_bundled
from guidance.yamlfile import read_yaml, validate
from guidance.zones.atlas import Atlas, load_atlas

PLAN_VERSION = 1
AREAS = {"face": ("face",), "neck-decolletage": ("neck", "decolletage"), "scalp": ("scalp",),
         "mixed": ("face", "neck", "decolletage", "scalp"), "body": ("body",)}

PLAN_SCHEMA = {
    "type": "object",
    "required": ["plan_version", "plan_id", "area", "handpiece_profile", "margin_mm", "ttl_ms", "zones"],
    "properties": {
        "plan_version": {"const": PLAN_VERSION},
        "plan_id": {"type": "string", "minLength": 1, "maxLength": 100},
        "area": {"enum": list(AREAS)},
        "body_area": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "handpiece_profile": {"type": "string", "minLength": 1},
        "margin_mm": {"type": "number", "minimum": 0, "maximum": 20},
        # a permit is about one frame: a few frame intervals, well under 100 ms
        "ttl_ms": {"type": "integer", "minimum": 1, "maximum": 100},
        "stop_at_target": {"type": "boolean"},
        "zones": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object",
                "required": ["zone", "target_passes", "max_passes"],
                "properties": {
                    "zone": {"type": "string"},
                    "target_passes": {"type": "integer", "minimum": 1, "maximum": 50},
                    "max_passes": {"type": "integer", "minimum": 1, "maximum": 50},
                },
                "additionalProperties": False,
            },
        },
        "exclusions": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class ZoneTarget:
    zone: str
    target_passes: int
    max_passes: int


@dataclass(frozen=True)
class TreatmentPlan:
    plan_id: str
    area: str
    zones: dict[str, ZoneTarget]  # planned treatable zones
    exclusions: tuple[str, ...]  # plan's extra exclusions (atlas exclusions always apply too)
    handpiece_profile: Path  # resolved path, checked to exist
    margin_mm: float
    ttl_ms: int
    stop_at_target: bool
    source: str
    description: str = ""
    body_area: str = ""  # area "body": the body area (its patch chart and atlas: zones/body_atlas.py)

    def is_planned(self, zone: str | None) -> bool:
        return zone in self.zones

    def is_excluded(self, zone: str | None, atlas: Atlas | None = None) -> bool:
        """Plan exclusions plus every atlas zone of kind 'exclusion'."""
        if zone in self.exclusions:
            return True
        if atlas is None:
            from guidance.zones.body_atlas import plan_atlas
            atlas = plan_atlas(self)
        z = atlas.zones.get(zone) if zone else None
        return z is not None and z.kind == "exclusion"

    def summary(self) -> str:
        area = f"body: {self.body_area}" if self.area == "body" else self.area
        lines = [f"plan {self.plan_id} ({area}) from {self.source}",
                 f"  handpiece profile: {self.handpiece_profile}",
                 f"  margin {self.margin_mm:g} mm, permit ttl {self.ttl_ms} ms, stop at target: "
                 f"{'yes' if self.stop_at_target else 'no'}",
                 f"  {len(self.zones)} zone(s) to treat:"]
        for t in self.zones.values():
            lines.append(f"    {t.zone:<24} target {t.target_passes} pass(es), max {t.max_passes}")
        lines.append(f"  extra exclusions: {', '.join(self.exclusions) if self.exclusions else 'none'}")
        return "\n".join(lines)


def parse_plan(data: object, path: str | Path, atlas: Atlas | None = None) -> TreatmentPlan:
    """Validate a loaded YAML document and build the plan; UserError names the field."""
    path = Path(path)
    validate(data, PLAN_SCHEMA, path)
    assert isinstance(data, dict), "validate() refuses anything but a mapping"

    body_area = data.get("body_area")
    if data["area"] == "body":
        from guidance.zones.body_atlas import body_area_names, load_body_area
        if body_area is None:
            raise UserError(f"a body plan names its body area ({', '.join(body_area_names())})", path=path,
                            field="body_area")
        if body_area not in body_area_names():
            raise UserError(f"unknown body area {body_area!r} (known: {', '.join(body_area_names())})", path=path,
                            field="body_area")
        atlas = load_body_area(body_area).atlas  # the body area's patch chart, whatever atlas was passed
    elif body_area is not None:
        raise UserError(f"body_area goes only with area 'body' (this plan's area is {data['area']!r})", path=path,
                        field="body_area")
    atlas = atlas or load_atlas()
    allowed_surfaces = AREAS[data["area"]]
    zones: dict[str, ZoneTarget] = {}
    for i, z in enumerate(data["zones"]):
        f = f"zones.{i}"
        name = z["zone"]
        az = atlas.zones.get(name)
        if az is None:
            see = f"--body {body_area} --list" if data["area"] == "body" else "--list"
            raise UserError(f"unknown zone {name!r} (see `guidance atlas {see}`)", path=path, field=f"{f}.zone")
        if az.kind == "exclusion":
            raise UserError(f"zone {name!r} is an exclusion zone in the atlas and cannot be treated", path=path,
                            field=f"{f}.zone")
        if az.surface not in allowed_surfaces:
            raise UserError(f"zone {name!r} ({az.surface}) is outside the plan area {data['area']!r}", path=path,
                            field=f"{f}.zone")
        if name in zones:
            raise UserError(f"zone {name!r} listed twice", path=path, field=f"{f}.zone")
        if z["target_passes"] > z["max_passes"]:
            raise UserError(f"target_passes {z['target_passes']} is above max_passes {z['max_passes']}", path=path,
                            field=f"{f}.target_passes")
        zones[name] = ZoneTarget(name, int(z["target_passes"]), int(z["max_passes"]))
    exclusions = tuple(data.get("exclusions", []))
    for i, name in enumerate(exclusions):
        if name not in atlas.zones:
            raise UserError(f"unknown zone {name!r}", path=path, field=f"exclusions.{i}")
        if name in zones:
            raise UserError(f"zone {name!r} is both treated and excluded", path=path, field=f"exclusions.{i}")
    ref = expand_user(data["handpiece_profile"])
    resolved = ref if ref.is_absolute() else (path.parent / ref)
    if not is_file(resolved):
        raise UserError(f"handpiece profile {data['handpiece_profile']!r} not found (resolved to {resolved})",
                        path=path, field="handpiece_profile")
    return TreatmentPlan(
        plan_id=data["plan_id"], area=data["area"], zones=zones, exclusions=exclusions,
        handpiece_profile=resolved.resolve(), margin_mm=float(data["margin_mm"]), ttl_ms=int(data["ttl_ms"]),
        stop_at_target=bool(data.get("stop_at_target", True)), source=str(path),
        description=str(data.get("description", "")), body_area=str(body_area or ""),
    )


def load_plan(path: str | Path, atlas: Atlas | None = None) -> TreatmentPlan:
    """A plan file, or a bundled example plan by name (`full_face`)."""
    path = user_or_bundled(path, "plans", what="plan file")
    return parse_plan(read_yaml(path, "plan file"), path, atlas)
