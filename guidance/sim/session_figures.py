"""Per-frame figures of a recorded session against its simulation's ground truth (face or body).

What `demo.verify` does for pulses, this does for frames, with the definitions
`guidance evaluate` uses (docs/evaluate.md once it is merged): frames of the
recording are matched to the ground truth by index; "contact" is the true
tip's; "outside the plan beyond the margin" is the true chart point's signed
distance to the planned region below -margin; a frame is *usable* when the
true tip is in contact in a planned, non-excluded zone at least margin + 3 mm
inside the planned region and margin + 3 mm clear of every exclusion's buffer,
with the reference (face or patch) drawn; the usable-frame permit share is over
usable frames judged while armed, leaving out frames denied only for dose limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from guidance.session.reader import Session
from guidance.sim.ground_truth import GTFrame
from guidance.zones.atlas import Atlas

DOSE_LIMITS = {"passes_exceeded", "zone_complete"}
USABLE_EXTRA_MM = 3.0


@dataclass
class FrameFigures:
    frames: int = 0
    permits_contact_outside: list[int] = field(default_factory=list)  # permitted, true tip in contact beyond margin
    permits_contact_exclusion: list[int] = field(default_factory=list)  # permitted, true tip in contact on an exclusion
    permits_lifted_outside: int = 0  # the same with the tip lifted (no pulse can land: informational)
    chart_errors_mm: list[float] = field(default_factory=list)  # contact frames with a mapped tip
    usable: int = 0
    usable_permitted: int = 0
    usable_denied: dict[str, int] = field(default_factory=dict)

    @property
    def usable_share(self) -> float:
        return self.usable_permitted / self.usable if self.usable else math.nan

    def chart_error(self) -> dict[str, float]:
        e = np.asarray(self.chart_errors_mm)
        if not e.size:
            return {"n": 0}
        return {"n": int(e.size), "median": float(np.median(e)), "p90": float(np.percentile(e, 90)),
                "max": float(e.max())}

    def to_json(self) -> dict[str, Any]:
        return {"frames": self.frames, "permits_contact_outside": len(self.permits_contact_outside),
                "permits_contact_exclusion": len(self.permits_contact_exclusion),
                "permits_lifted_outside": self.permits_lifted_outside, "chart_error_mm": self.chart_error(),
                "usable_frames": self.usable, "usable_permitted": self.usable_permitted,
                "usable_permit_share": self.usable_share, "usable_denied": dict(self.usable_denied)}


def _exclusion_clear(atlas: Atlas, plan: Any, u: float, v: float) -> float:
    """Chart distance from (u, v) to the nearest exclusion (atlas ones less their buffer, and the plan's own)."""
    best = math.inf
    for z in atlas.zones.values():
        if z.kind == "exclusion" or z.name in plan.exclusions:
            d = -atlas.region_distance_mm((z.name,), u, v) - (z.buffer_mm if z.kind == "exclusion" else 0.0)
            best = min(best, d)
    return best


def frame_figures(session: Session, gt: list[GTFrame], plan: Any, atlas: Atlas) -> FrameFigures:
    fig = FrameFigures()
    by_index = {g.frame_index: g for g in gt}
    for r in session.frames:
        g = by_index.get(r.index)
        if g is None:
            continue
        fig.frames += 1
        outside = g.plan_distance_mm < -plan.margin_mm
        if r.gate.permit and outside:
            if g.contact:
                fig.permits_contact_outside.append(r.index)
            else:
                fig.permits_lifted_outside += 1
        if r.gate.permit and g.contact and g.true_kind == "exclusion":
            fig.permits_contact_exclusion.append(r.index)
        if g.contact and r.zone is not None and r.zone.chart_mm is not None and r.tip is not None and r.tip.valid:
            fig.chart_errors_mm.append(math.hypot(r.zone.chart_mm[0] - g.chart_u_mm, r.zone.chart_mm[1] - g.chart_v_mm))
        usable = (g.contact and g.face_found and bool(g.in_plan)
                  and g.plan_distance_mm >= plan.margin_mm + USABLE_EXTRA_MM
                  and _exclusion_clear(atlas, plan, g.chart_u_mm, g.chart_v_mm) >= plan.margin_mm + USABLE_EXTRA_MM)
        if not usable or not r.armed or (not r.gate.permit and set(r.gate.reasons) <= DOSE_LIMITS):
            continue
        fig.usable += 1
        if r.gate.permit:
            fig.usable_permitted += 1
        else:
            fig.usable_denied[r.gate.reason] = fig.usable_denied.get(r.gate.reason, 0) + 1
    return fig
