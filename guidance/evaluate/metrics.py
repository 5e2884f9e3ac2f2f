"""The evaluation's figures, each a pure function of a recording's frame records and the ground truth.

Frames are matched to the ground truth by their index (a `VideoFileSource`
numbers frames as the video does, also when a realtime run skips some);
pulses by time, as the demo does (`guidance.sim.demo.verify`). What each
figure means and why it is computed this way: docs/evaluate.md.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from guidance.evaluate.truth import FrameTruth
from guidance.gate import Reason
from guidance.session.records import FrameRecord
from guidance.sim.ground_truth import GTFrame

DOSE_REASONS = frozenset({Reason.PASSES_EXCEEDED.value, Reason.ZONE_COMPLETE.value})
SIGMA_FACTOR = 3.0  # "true lateral error beyond 3 sigma"


def stats(values: Iterable[float]) -> dict[str, float]:
    """n, median, p90, max of the finite values ({"n": 0} when there are none)."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "max": float(a.max())}


def _pairs(frames: Sequence[FrameRecord], gt: Sequence[GTFrame]):
    for r in frames:
        if 0 <= r.index < len(gt):
            yield r, gt[r.index]


# --------------------------------------------------------------------------------------------- safety

@dataclass
class SafetyCount:
    """How many permits (or pulses) had the true tip on an exclusion / outside the plan beyond the margin."""

    exclusion_contact: int = 0
    exclusion_lifted: int = 0
    outside_contact: int = 0
    outside_lifted: int = 0
    examples: list[dict] = field(default_factory=list)  # the first few, for looking them up

    MAX_EXAMPLES = 20

    def add(self, contact: bool, on_exclusion: bool, outside: bool, where: dict) -> None:
        if on_exclusion:
            if contact:
                self.exclusion_contact += 1
            else:
                self.exclusion_lifted += 1
        if outside:
            if contact:
                self.outside_contact += 1
            else:
                self.outside_lifted += 1
        if (on_exclusion or outside) and len(self.examples) < self.MAX_EXAMPLES:
            self.examples.append(where)

    def merged(self, other: "SafetyCount") -> "SafetyCount":
        out = SafetyCount(self.exclusion_contact + other.exclusion_contact, self.exclusion_lifted + other.exclusion_lifted,
                          self.outside_contact + other.outside_contact, self.outside_lifted + other.outside_lifted)
        return out

    def to_json(self, with_examples: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"exclusion": {"contact": self.exclusion_contact, "lifted": self.exclusion_lifted},
             "outside_plan_beyond_margin": {"contact": self.outside_contact, "lifted": self.outside_lifted}}
        if with_examples:
            d["examples"] = self.examples
        return d


def truth_exposure(frames: Sequence[FrameRecord], truths: Sequence[FrameTruth]) -> dict[str, Any]:
    """How often the true tip was on an exclusion / beyond the margin (the chances the gate had to fail):
    in the simulation, and among the frames the run judged."""
    def count(ts: Iterable[FrameTruth]) -> dict[str, dict[str, int]]:
        c = SafetyCount()
        for t in ts:
            c.add(t.contact, t.on_exclusion, t.outside_plan, {})
        return {k: v for k, v in c.to_json(False).items()}
    judged = [truths[r.index] for r in frames if 0 <= r.index < len(truths)]
    return {"simulated": count(truths), "judged": count(judged)}


def permit_safety(frames: Sequence[FrameRecord], truths: Sequence[FrameTruth]) -> SafetyCount:
    """Frames whose permit is true while the true tip is on an exclusion / outside the plan beyond the margin."""
    out = SafetyCount()
    for r in frames:
        if not r.gate.permit or not 0 <= r.index < len(truths):
            continue
        t = truths[r.index]
        out.add(t.contact, t.on_exclusion, t.outside_plan,
                {"frame": r.index, "zone_service": r.zone.zone if r.zone else None,
                 "plan_distance_mm": round(t.plan_distance_mm, 2), "contact": t.contact})
    return out


@dataclass(frozen=True)
class PlacedPulse:
    """A pulse the controller fired, placed on the ground truth between frames `a` and `a + 1`."""

    t_ns: int
    key: tuple | None  # (controller boot, pulse_seq) as the controller logged it
    a: int
    w: float  # weight of frame a + 1
    u_mm: float
    v_mm: float


def place_pulses(fired: Sequence[tuple[int, Any]], gt: Sequence[GTFrame], t_first_ns: int, first_index: int,
                 fps: float) -> list[PlacedPulse]:
    """Each fired pulse (time on the service's clock, key) at the true chart point of its moment.

    Frame i of the video was captured at t_first + (i - first_index) / fps (the source stamps frames with
    the video's timestamps from its start), so a pulse at t lies between frames floor(x) and floor(x) + 1,
    x = (t - t_first) * fps + first_index. Pulses outside the simulated video are left out.
    """
    out = []
    for t, key in fired:
        x = (t - t_first_ns) * fps / 1e9 + first_index
        i = int(math.floor(x))
        if i < 0 or i + 1 >= len(gt):
            continue
        a, b, w = gt[i], gt[i + 1], x - i
        out.append(PlacedPulse(int(t), key, i, w, a.chart_u_mm + w * (b.chart_u_mm - a.chart_u_mm),
                               a.chart_v_mm + w * (b.chart_v_mm - a.chart_v_mm)))
    return out


def pulse_safety(placed: Sequence[PlacedPulse], truths: Sequence[FrameTruth]) -> SafetyCount:
    """Pulses with the true tip on an exclusion / beyond the margin in either frame around them; in contact
    when the tip touched the skin in both (as `demo.verify` counts them)."""
    out = SafetyCount()
    for p in placed:
        ta, tb = truths[p.a], truths[p.a + 1]
        out.add(ta.contact and tb.contact, ta.on_exclusion or tb.on_exclusion, ta.outside_plan or tb.outside_plan,
                {"t_ns": p.t_ns, "frames": [p.a, p.a + 1], "chart_mm": [round(p.u_mm, 2), round(p.v_mm, 2)],
                 "plan_distance_mm": [round(ta.plan_distance_mm, 2), round(tb.plan_distance_mm, 2)]})
    return out


def pulse_chart_errors(placed: Sequence[PlacedPulse], truths: Sequence[FrameTruth],
                       service_chart: dict[tuple, tuple[float | None, float | None]]) -> list[float]:
    """Per pulse fired in contact: |where the service put it on the chart - the true tip| (mm).

    `service_chart`: (controller boot, pulse_seq) -> the recorded pulse's (tip_u, tip_v). Lifted pulses are
    left out, as the demo does: a hovering tip maps through the skin at an angle, several mm off.
    """
    out = []
    for p in placed:
        if not (truths[p.a].contact and truths[p.a + 1].contact):
            continue
        su, sv = service_chart.get(p.key, (None, None)) if p.key is not None else (None, None)
        if su is not None and sv is not None:
            out.append(math.hypot(su - p.u_mm, sv - p.v_mm))
    return out


# ---------------------------------------------------------------------------------------- tip on chart

def tip_chart_errors(frames: Sequence[FrameRecord], gt: Sequence[GTFrame]) -> list[float]:
    """Per contact frame where the service mapped the tip: |service chart point - true chart point| (mm)."""
    return [e for errors in tip_chart_errors_by_zone(frames, gt).values() for e in errors]


def tip_chart_errors_by_zone(frames: Sequence[FrameRecord], gt: Sequence[GTFrame]) -> dict[str, list[float]]:
    """The same, by the true zone under the tip (the chart's stretch differs: the face's edge maps a pixel to
    more chart millimetres than its middle)."""
    out: dict[str, list[float]] = {}
    for r, g in _pairs(frames, gt):
        if g.contact and g.face_found and r.zone is not None and r.zone.chart_mm is not None:
            out.setdefault(g.true_zone or "none", []).append(
                math.hypot(r.zone.chart_mm[0] - g.chart_u_mm, r.zone.chart_mm[1] - g.chart_v_mm))
    return out


# ------------------------------------------------------------------------------------ usable frames

@dataclass
class UsableShare:
    usable: int = 0  # ground-truth usable frames (contact, deep inside the plan, far from exclusions)
    recorded: int = 0  # ... of which the run judged (a realtime run may skip frames)
    not_armed: int = 0  # ... judged while the session was not armed (left out)
    dose_only: int = 0  # ... denied only for dose limits (passes_exceeded, zone_complete; left out)
    counted: int = 0  # the denominator
    permitted: int = 0
    denied_by_first_reason: dict[str, int] = field(default_factory=dict)
    # Usable frames denied first for near_boundary: what the look-ahead asked for and why (lists, for pooling).
    near_boundary: dict[str, list[float]] = field(default_factory=dict)

    NEAR_BOUNDARY_FIELDS = ("gate_boundary_mm", "required_mm", "latency_ms", "true_plan_distance_mm")

    @property
    def share(self) -> float | None:
        return self.permitted / self.counted if self.counted else None

    def to_json(self) -> dict[str, Any]:
        n = self.counted
        return {"share": self.share, "permitted": self.permitted, "counted": n, "usable_truth": self.usable,
                "recorded": self.recorded, "not_armed": self.not_armed, "dose_only_denied": self.dose_only,
                "denied": {k: {"n": v, "share": v / n if n else None}
                           for k, v in sorted(self.denied_by_first_reason.items(), key=lambda kv: -kv[1])},
                "near_boundary_medians": {k: stats(v).get("median") for k, v in self.near_boundary.items()}}

    def merged(self, other: "UsableShare") -> "UsableShare":
        reasons = Counter(self.denied_by_first_reason)
        reasons.update(other.denied_by_first_reason)
        nb = {k: self.near_boundary.get(k, []) + other.near_boundary.get(k, []) for k in self.NEAR_BOUNDARY_FIELDS}
        return UsableShare(self.usable + other.usable, self.recorded + other.recorded, self.not_armed + other.not_armed,
                           self.dose_only + other.dose_only, self.counted + other.counted,
                           self.permitted + other.permitted, dict(reasons), nb)


def usable_permit_share(frames: Sequence[FrameRecord], truths: Sequence[FrameTruth]) -> UsableShare:
    """Among usable frames (ground truth) the run judged while armed, the share permitted, leaving out
    frames denied only for dose limits; and the first deny reason of the others."""
    out = UsableShare(usable=sum(t.usable for t in truths))
    reasons: Counter[str] = Counter()
    nb: dict[str, list[float]] = {k: [] for k in UsableShare.NEAR_BOUNDARY_FIELDS}
    for r in frames:
        if not 0 <= r.index < len(truths) or not truths[r.index].usable:
            continue
        out.recorded += 1
        if not r.armed:
            out.not_armed += 1
            continue
        if not r.gate.permit and r.gate.reasons and set(r.gate.reasons) <= DOSE_REASONS:
            out.dose_only += 1
            continue
        out.counted += 1
        if r.gate.permit:
            out.permitted += 1
        else:
            reasons[r.gate.reason] += 1
            if r.gate.reason == Reason.NEAR_BOUNDARY.value:
                for k, v in zip(UsableShare.NEAR_BOUNDARY_FIELDS, (r.gate.boundary_mm, r.gate.required_mm,
                                                                    r.gate.latency_ms,
                                                                    truths[r.index].plan_distance_mm)):
                    nb[k].append(float("nan") if v is None else float(v))
    out.denied_by_first_reason = dict(reasons)
    out.near_boundary = nb
    return out


# ------------------------------------------------------------------------------ calibration of sigma

def gate_sigma(r: FrameRecord) -> tuple[float | None, str, str]:
    """(sigma in mm, where it was read, what error it describes: "chart" or "tip_lateral").

    The gate's total sigma (tip and face mapping together, recorded since format 2) is about the skin point, so
    it is compared with the chart error; without it (a frame the gate judged before a sigma existed, or an older
    recording) the tip's own lateral sigma is about the tip across the line of sight, so it is compared with the
    tip's pixel error at the tip's depth.
    """
    v = r.gate.sigma_mm
    if v is not None and math.isfinite(v):
        return float(v), "gate.sigma_mm", "chart"
    tip_sigma = r.tip.sigma_lateral_mm if r.tip is not None and r.tip.valid else None
    if tip_sigma is not None and math.isfinite(tip_sigma):
        return float(tip_sigma), "tip.sigma_lateral_mm", "tip_lateral"
    return None, "", ""


@dataclass
class Calibration:
    contact_frames: int = 0  # contact frames where the gate had a sigma and both errors are known
    beyond: int = 0  # true error (of the kind the sigma describes) > 3 sigma
    beyond_chart: int = 0  # the chart error > 3 sigma (for comparison, whatever the sigma describes)
    sigma_sources: dict[str, int] = field(default_factory=dict)
    ratio: list[float] = field(default_factory=list)  # error / sigma per frame, for pooling

    @property
    def share(self) -> float | None:
        return self.beyond / self.contact_frames if self.contact_frames else None

    def to_json(self) -> dict[str, Any]:
        n = self.contact_frames
        return {"contact_frames": n, "beyond_3_sigma": self.beyond, "share": self.share,
                "beyond_3_sigma_chart_error": self.beyond_chart,
                "share_chart_error": self.beyond_chart / n if n else None,
                "sigma_sources": self.sigma_sources, "error_over_sigma": stats(self.ratio)}

    def merged(self, other: "Calibration") -> "Calibration":
        src = Counter(self.sigma_sources)
        src.update(other.sigma_sources)
        return Calibration(self.contact_frames + other.contact_frames, self.beyond + other.beyond,
                           self.beyond_chart + other.beyond_chart, dict(src), self.ratio + other.ratio)


def calibration(frames: Sequence[FrameRecord], gt: Sequence[GTFrame], focal_px: float) -> Calibration:
    """Share of contact frames whose true error exceeds 3 x the sigma the gate used.

    The error compared is the one the sigma describes (`gate_sigma`): for the tip's lateral sigma, the tip
    pixel's distance from the true tip pixel times the true depth over the focal length (mm across the
    line of sight); for a total sigma, the chart distance between the service's and the true skin point.
    """
    out = Calibration()
    src: Counter[str] = Counter()
    for r, g in _pairs(frames, gt):
        if not (g.contact and g.face_found) or r.tip is None or not r.tip.valid or r.tip.px is None:
            continue
        sigma, source, kind = gate_sigma(r)
        if sigma is None or not math.isfinite(g.tip_x_px) or not math.isfinite(g.tip_z_mm):
            continue
        lateral = math.hypot(r.tip.px[0] - g.tip_x_px, r.tip.px[1] - g.tip_y_px) * g.tip_z_mm / focal_px
        chart = (math.hypot(r.zone.chart_mm[0] - g.chart_u_mm, r.zone.chart_mm[1] - g.chart_v_mm)
                 if r.zone is not None and r.zone.chart_mm is not None else None)
        err = lateral if kind == "tip_lateral" else chart
        if err is None:
            continue
        out.contact_frames += 1
        src[source] += 1
        out.beyond += err > SIGMA_FACTOR * sigma
        out.beyond_chart += chart is not None and chart > SIGMA_FACTOR * sigma
        out.ratio.append(err / sigma if sigma > 0 else math.inf)
    out.sigma_sources = dict(src)
    return out


# ------------------------------------------------------------------------------------ the run itself

# A realtime run that skipped or judged stale more than this share of its frames did not get its core: its
# permit share says more about the machine's load than about the service.
STARVED_SHARE = 0.10


def run_health(frames: Sequence[FrameRecord], simulated_frames: int) -> dict[str, Any]:
    """Did the realtime run keep up? Frames judged, frames skipped, latency, camera_stalled denials."""
    lat = [r.latency_ms for r in frames]
    stalled = sum(1 for r in frames if Reason.CAMERA_STALLED.value in r.gate.reasons)
    judged = len(frames)
    skipped = max(0, simulated_frames - judged)
    starved = (simulated_frames > 0 and skipped / simulated_frames > STARVED_SHARE) or \
        (judged > 0 and stalled / judged > STARVED_SHARE)
    return {"starved": bool(starved), "frames_simulated": simulated_frames, "frames_judged": judged,
            "frames_skipped": skipped, "skipped_share": skipped / simulated_frames if simulated_frames else None,
            "camera_stalled_frames": stalled, "camera_stalled_share": stalled / judged if judged else None,
            "latency_ms": {"median": float(np.median(lat)) if lat else None,
                           "p99": float(np.percentile(lat, 99)) if lat else None}}
