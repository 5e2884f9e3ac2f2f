"""What the ground truth says about one simulated frame under a given plan: exclusion, outside, usable.

The simulation's ground truth (`guidance/sim/ground_truth.py`) carries the
true chart point of the tip in every frame; the plan's fields there
(`in_plan`, `plan_distance_mm`) are about the path's own plan. An evaluation
may judge a session under another plan, so everything plan-dependent is
recomputed here from the chart point with the atlas, the same way the
simulator computes it (`Atlas.region_distance_mm`, chart millimetres).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guidance.sim.ground_truth import GTFrame
from guidance.zones.atlas import Atlas, load_atlas
from guidance.zones.plan import TreatmentPlan

# A usable frame is at least the margin plus this much inside the plan and away from every exclusion: far
# enough that a correct service with its stated uncertainty should permit it (issue 12).
USABLE_EXTRA_MM = 3.0


@dataclass(frozen=True)
class FrameTruth:
    contact: bool
    on_exclusion: bool  # the true tip's zone is an atlas exclusion or one of the plan's exclusions
    outside_plan: bool  # outside the planned region by more than the plan's margin
    in_plan: bool  # the true zone is planned and not excluded
    plan_distance_mm: float  # signed chart distance to the planned region's edge, + inside
    exclusion_distance_mm: float  # signed chart distance to the nearest exclusion's edge, + inside one
    usable: bool  # in contact, face in the picture, deep inside the plan and far from every exclusion


class PlanTruth:
    """Judges ground-truth frames under one plan (cached per chart point set by the atlas)."""

    def __init__(self, plan: TreatmentPlan, atlas: Atlas | None = None):
        self.plan = plan
        self.atlas = atlas or load_atlas()
        self.margin_mm = float(plan.margin_mm)
        self.planned = tuple(sorted(plan.zones))
        self.exclusions = tuple(sorted(set(self.atlas.zone_names(kind="exclusion")) | set(plan.exclusions)))

    def excluded(self, zone: str) -> bool:
        return bool(zone) and self.plan.is_excluded(zone, self.atlas)

    def judge(self, g: GTFrame) -> FrameTruth:
        u, v = g.chart_u_mm, g.chart_v_mm
        if not (math.isfinite(u) and math.isfinite(v)):
            nan = float("nan")
            return FrameTruth(bool(g.contact), False, False, False, nan, nan, False)
        plan_d = self.atlas.region_distance_mm(self.planned, u, v)
        excl_d = self.atlas.region_distance_mm(self.exclusions, u, v) if self.exclusions else -math.inf
        on_excl = self.excluded(g.true_zone)
        in_plan = bool(g.true_zone) and self.plan.is_planned(g.true_zone) and not on_excl
        deep = self.margin_mm + USABLE_EXTRA_MM
        usable = (bool(g.contact) and bool(g.face_found) and in_plan and plan_d >= deep and excl_d <= -deep)
        return FrameTruth(bool(g.contact), on_excl, plan_d < -self.margin_mm, in_plan, plan_d, excl_d, usable)

    def judge_all(self, gt: list[GTFrame]) -> list[FrameTruth]:
        return [self.judge(g) for g in gt]
