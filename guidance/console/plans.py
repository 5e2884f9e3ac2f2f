"""The plan editor's side: the face chart as SVG from the atlas, and saving a plan as a versioned file.

A plan is written in the schema of `guidance/zones/plan.py` and validated by its
own `parse_plan` before it is saved, so the editor can never save a plan that
`guidance run` would refuse. Each save is a file `PLANS/<client>/<name>/v<N>.yaml`
and a database row with its sha256. A version that a session used is never
rewritten: saving it again makes version N+1 (the recordings keep their own
snapshot too). A version no session used yet is rewritten in place.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from sqlalchemy import func, select

from guidance.console.db import Client, Plan, Session
from guidance.errors import UserError
from guidance.resources import verified_path
from guidance.zones.atlas import Atlas, load_atlas
from guidance.zones.plan import AREAS, TreatmentPlan, parse_plan

DEFAULT_TARGET, DEFAULT_MAX = 2, 3


def default_handpiece() -> Path:
    return verified_path("handpiece_default", kind="profiles")


def _label_points(atlas: Atlas) -> dict[str, tuple[float, float]]:
    """Each zone's innermost point (chart mm): where its label goes."""
    g = atlas.grid
    out: dict[str, tuple[float, float]] = {}
    for z in atlas.zones.values():
        d = np.where(atlas.labels == z.label, atlas.distance_mm, -np.inf)
        i, j = np.unravel_index(int(np.argmax(d)), d.shape)
        out[z.name] = (float(g.u0_mm + j * g.cell_mm), float(g.v0_mm + i * g.cell_mm))
    return out


def chart_svg(atlas: Atlas | None = None, *, element_id: str = "chart") -> str:
    """The atlas as an SVG: one `<path>` per zone (data-zone, data-kind, data-surface) in chart mm, labels on top.

    Client's right on the left, as on `guidance atlas`. Atlas exclusions (eyes, lips) are drawn and cannot be
    selected; every treatable zone can be tapped.
    """
    atlas = atlas or load_atlas()
    rings = [r for z in atlas.zones.values() for r in z.boundary_mm]
    pts = np.vstack(rings)
    lo, hi = pts.min(axis=0) - 4, pts.max(axis=0) + 4
    parts = [f'<svg id="{element_id}" xmlns="http://www.w3.org/2000/svg" viewBox="{lo[0]:.1f} {lo[1]:.1f} '
             f'{hi[0] - lo[0]:.1f} {hi[1] - lo[1]:.1f}" role="img" aria-label="face chart">']
    labels = _label_points(atlas)
    for z in atlas.zones.values():
        d = " ".join("M" + " L".join(f"{u:.1f},{v:.1f}" for u, v in np.asarray(r)) + " Z" for r in z.boundary_mm)
        cls = "zone atlas-exclusion" if z.kind == "exclusion" else "zone"
        parts.append(f'<path class="{cls}" id="zone-{z.name}" data-zone="{z.name}" data-kind="{z.kind}" '
                     f'data-surface="{z.surface}" d="{d}" fill-rule="evenodd">'
                     f'<title>{html.escape(z.clinical_name or z.name)}</title></path>')
    for z in atlas.zones.values():
        u, v = labels[z.name]
        parts.append(f'<text class="zlabel" x="{u:.1f}" y="{v:.1f}" text-anchor="middle" '
                     f'dominant-baseline="middle">{html.escape(z.name.replace("_", " "))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def zone_table(atlas: Atlas | None = None) -> list[dict]:
    atlas = atlas or load_atlas()
    return [{"zone": z.name, "clinical_name": z.clinical_name, "kind": z.kind, "surface": z.surface}
            for z in atlas.zones.values()]


def area_for(zones: list[str], atlas: Atlas) -> str:
    """The plan's area from the surfaces of its zones (the narrowest one `parse_plan` accepts)."""
    surfaces = {atlas.zones[z].surface for z in zones if z in atlas.zones}
    for area, allowed in AREAS.items():
        if surfaces and surfaces <= set(allowed):
            return area
    return "mixed"


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:40] or "plan"


@dataclass
class PlanDraft:
    """What the editor sends: zone → (target, max), extra exclusions, margin, TTL, stop at target."""

    name: str
    zones: dict[str, tuple[int, int]]
    exclusions: list[str]
    margin_mm: float = 2.0
    ttl_ms: int = 60
    stop_at_target: bool = True
    description: str = ""
    body_area: str = ""  # a body plan on the skin reference patch (zones of that body area); "" for the face chart

    @classmethod
    def from_json(cls, d: dict) -> "PlanDraft":
        if not isinstance(d, dict):
            raise UserError("expected a JSON object", field="plan")
        try:
            zones = {str(k): (int(v["target_passes"]), int(v["max_passes"])) for k, v in (d.get("zones") or {}).items()}
            return cls(name=str(d.get("name") or "").strip(), zones=zones,
                       exclusions=[str(x) for x in d.get("exclusions") or []], margin_mm=float(d.get("margin_mm", 2.0)),
                       ttl_ms=int(d.get("ttl_ms", 60)), stop_at_target=bool(d.get("stop_at_target", True)),
                       description=str(d.get("description") or ""), body_area=str(d.get("body_area") or ""))
        except (TypeError, ValueError, KeyError) as exc:
            raise UserError(f"malformed plan from the editor ({type(exc).__name__}: {exc})", field="plan") from None

    def document(self, plan_id: str, handpiece: Path, atlas: Atlas) -> dict:
        where = {"area": "body", "body_area": self.body_area} if self.body_area else {
            "area": area_for(list(self.zones), atlas)}
        return {
            "plan_version": 1, "plan_id": plan_id, **where,
            "description": self.description or f"{self.name} (guidance console)",
            "handpiece_profile": str(handpiece), "margin_mm": self.margin_mm, "ttl_ms": self.ttl_ms,
            "stop_at_target": self.stop_at_target,
            "zones": [{"zone": z, "target_passes": t, "max_passes": m} for z, (t, m) in self.zones.items()],
            "exclusions": list(self.exclusions),
        }


def plan_used(db, plan: Plan) -> bool:
    return bool(db.scalar(select(func.count()).select_from(Session).where(Session.plan_id == plan.id)))


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def save_plan(db, client: Client, draft: PlanDraft, plans_dir: Path, *, handpiece: Path | None = None,
              atlas: Atlas | None = None) -> tuple[Plan, str]:
    """Validate and save; returns the plan row and what happened ("new", "new version", "updated", "unchanged")."""
    atlas = atlas or load_atlas()
    if not draft.name:
        raise UserError("give the plan a name", field="name")
    if not draft.zones:
        raise UserError("tap at least one zone to treat", field="zones")
    handpiece = Path(handpiece or default_handpiece()).resolve()
    latest = db.scalars(select(Plan).where(Plan.client_id == client.id, Plan.name == draft.name)
                        .order_by(Plan.version.desc())).first()
    reuse = latest is not None and not plan_used(db, latest)
    version = 1 if latest is None else (latest.version if reuse else latest.version + 1)
    plan_id = f"{client.reference}-{slug(draft.name)}-v{version}"
    path = plans_dir / slug(client.reference) / slug(draft.name) / f"v{version}.yaml"
    doc = draft.document(plan_id, handpiece, atlas)
    parse_plan(doc, path, atlas)  # the same schema and atlas checks as `guidance run`: UserError names the field
    text = (f"# Plan '{draft.name}' for client {client.reference}, version {version} (written by guidance console).\n"
            "# A version a session used is never rewritten: the console saves the next version instead.\n"
            + yaml.safe_dump(doc, sort_keys=False))
    data = text.encode()
    if reuse and latest is not None and latest.sha256 == sha256_bytes(data):
        return latest, "unchanged"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    if reuse and latest is not None:
        latest.sha256, latest.path = sha256_bytes(data), str(path)
        db.commit()
        return latest, "updated"
    row = Plan(client_id=client.id, name=draft.name, version=version, path=str(path), sha256=sha256_bytes(data))
    db.add(row)
    db.commit()
    return row, ("new version" if latest else "new")


def load_saved(plan: Plan, atlas: Atlas | None = None) -> TreatmentPlan:
    """A saved plan, refused if its file changed since the console wrote it."""
    p = Path(plan.path)
    if not p.is_file():
        raise UserError("plan file missing", path=p)
    if sha256_bytes(p.read_bytes()) != plan.sha256:
        raise UserError("plan file changed outside the console (sha256 differs); save it again in the editor", path=p)
    return parse_plan(yaml.safe_load(p.read_text()), p, atlas)


def draft_of(plan: Plan) -> dict:
    """The editor's JSON for a saved plan (to edit it further)."""
    d = yaml.safe_load(Path(plan.path).read_text())
    return {"name": plan.name, "zones": {z["zone"]: {"target_passes": z["target_passes"], "max_passes": z["max_passes"]}
                                         for z in d["zones"]},
            "exclusions": d.get("exclusions", []), "margin_mm": d["margin_mm"], "ttl_ms": d["ttl_ms"],
            "stop_at_target": d.get("stop_at_target", True), "description": d.get("description", ""),
            "body_area": d.get("body_area", "") if d.get("area") == "body" else ""}


def editor_atlas(body_area: str) -> Atlas:
    """The chart the editor shows: the face chart, or a body area's patch chart (an unknown area: UserError)."""
    if not body_area:
        return load_atlas()
    from guidance.zones.body_atlas import load_body_area
    return load_body_area(body_area).atlas


def editor_areas() -> list[tuple[str, str]]:
    """(body_area or "" for the face, label) for the editor's chart choice."""
    from guidance.zones.body_atlas import body_area_names, load_body_area
    return [("", "Face, neck, scalp")] + [(a, load_body_area(a).clinical_name) for a in body_area_names()]
