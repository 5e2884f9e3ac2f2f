"""The live guidance pipeline: one frame in, one permit out, everything else off the hot path.

Hot path, in this order, on the capture thread:
    frame → face tracker → handpiece tracker → zone lookup → gate → permit published
Off it:
    pulse reports → attribution → coverage (polled once per frame after publishing);
    recording (background writer thread, bounded image backlog);
    overlay rendering and display (its own thread, latest-frame-wins queue).
Neither the recorder nor the overlay can hold up a permit: when they fall
behind they drop or batch, and the record says so.

State is explicit (`PipelineState`): armed, paused, face-lost timer, counters,
and it is what the overlay shows and the recording keeps.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from guidance.gate import GateDecision, GateInput, GatePolicy, LatencyTracker, Reason, ZoneKind, decide, deny
from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.tracker import FaceObservation, FaceTracker, TrackerConfig
from guidance.vision.handpiece.tracker import CONFIDENCE_HALF_SIGMA_MM, HandpieceTracker, TipObservation
from guidance.vision.body.shoulders import ShoulderObservation, ShoulderTracker
from guidance.vision.handpiece.profiles import HandpieceProfile
from guidance.vision.capture.sources import Frame
from guidance.zones.atlas import Atlas
from guidance.zones.coverage import CoverageMap
from guidance.zones.mapper import ZoneLookup, ZoneMapper
from guidance.zones.plan import TreatmentPlan

# A planned zone counts as complete (for stop_at_target) at this share of cells at target.
ZONE_COMPLETE_FRACTION = 0.98


@dataclass
class PipelineState:
    armed: bool = False
    paused: bool = False
    face_lost_since_ns: int | None = None
    frames: int = 0
    permits: int = 0
    denies: dict[str, int] = field(default_factory=dict)
    pulses: int = 0
    violations: int = 0
    link: str = "no controller"


def gate_confidence(tip: TipObservation | None) -> float:
    """The tip confidence the gate uses: from the lateral uncertainty (see GuidancePipeline.policy)."""
    if tip is None or not tip.valid or tip.tip_sigma_lateral_mm is None or not np.isfinite(tip.tip_sigma_lateral_mm):
        return 0.0
    return 1.0 / (1.0 + (tip.tip_sigma_lateral_mm / CONFIDENCE_HALF_SIGMA_MM) ** 2)


def shoulders_record(sh: ShoulderObservation) -> dict:
    """What the décolletage limit depends on, kept so re-processing can rebuild it exactly."""
    lm = sh.landmarks
    return {"valid": sh.valid, "reason": sh.reason, "t_capture_ns": sh.t_capture_ns,
            "left_px": None if sh.left_px is None else [float(v) for v in sh.left_px],
            "right_px": None if sh.right_px is None else [float(v) for v in sh.right_px],
            "visibility": [float(v) for v in sh.visibility],
            "nose_px": None if lm is None else [float(lm[0][0]), float(lm[0][1])]}


def shoulders_from_record(d: dict | None) -> ShoulderObservation | None:
    if d is None:
        return None
    lm = None
    if d.get("nose_px") is not None:
        lm = np.zeros((33, 3))
        lm[0, :2] = d["nose_px"]
    return ShoulderObservation(-1, int(d["t_capture_ns"]), int(d["t_capture_ns"]), bool(d["valid"]), d["reason"],
                               tuple(d["left_px"]) if d.get("left_px") else None,
                               tuple(d["right_px"]) if d.get("right_px") else None,
                               tuple(d.get("visibility") or (0.0, 0.0)), landmarks=lm)


@dataclass
class FrameResult:
    """Everything the hot path produced for one frame (recorded, drawn, tested)."""

    frame: Frame
    face: FaceObservation
    tip: TipObservation | None
    lookup: ZoneLookup | None
    decision: GateDecision
    seq: int | None
    t_face_ns: int
    t_tip_ns: int
    t_zone_ns: int
    t_decided_ns: int
    t_published_ns: int
    armed: bool
    lookahead_latency_ms: float  # the pipeline latency the look-ahead used for this frame
    shoulders: ShoulderObservation | None = None  # what the zone lookup used (None: no pose model running)

    @property
    def latency_ms(self) -> float:
        return (self.t_published_ns - self.frame.t_capture_ns) / 1e6

    def record(self) -> dict[str, Any]:
        """The frames.jsonl record (see docs/recording.md)."""
        f, t, z, d = self.face, self.tip, self.lookup, self.decision
        pose = f.head_pose
        rec: dict[str, Any] = {
            "index": self.frame.index,
            "size": list(self.frame.size),
            "t_capture_ns": self.frame.t_capture_ns,
            "t_face_ns": self.t_face_ns, "t_tip_ns": self.t_tip_ns, "t_zone_ns": self.t_zone_ns,
            "t_decided_ns": self.t_decided_ns, "t_published_ns": self.t_published_ns,
            "armed": self.armed,
            "shoulders": None if self.shoulders is None else shoulders_record(self.shoulders),
            "face": {"found": f.found, "presence": float(f.presence), "redetected": f.redetected,
                     "pose": None if pose is None else {"rvec": [float(x) for x in pose.rvec],
                                                        "tvec_mm": [float(x) for x in pose.tvec_mm],
                                                        "reprojection_px": float(pose.reprojection_px),
                                                        "valid": pose.valid}},
            # Gate inputs are kept at full precision (JSON floats round-trip exactly), so a
            # re-processing of the recording reproduces every decision bit for bit.
            "tip": None if t is None else {
                "valid": t.valid, "reason": t.reason,
                "px": None if t.tip_px is None else [float(v) for v in t.tip_px],
                "mm": None if t.tip_mm is None else [float(v) for v in t.tip_mm],
                "speed_mm_s": None if t.speed_mm_s is None else float(t.speed_mm_s),
                "confidence": float(t.confidence),
                "sigma_mm": None if t.tip_sigma_mm is None else float(t.tip_sigma_mm),
                "sigma_lateral_mm": None if t.tip_sigma_lateral_mm is None else float(t.tip_sigma_lateral_mm),
                "gate_confidence": gate_confidence(t)},
            "zone": None if z is None else {
                "zone": z.zone, "kind": z.kind, "surface": z.surface,
                "chart_mm": None if z.chart_mm is None else [round(float(v), 3) for v in z.chart_mm],
                "boundary_mm": None if z.boundary_mm is None or not math.isfinite(z.boundary_mm) else round(float(z.boundary_mm), 3)},
            "gate": {"permit": d.permit, "reason": d.reason.value, "reasons": [r.value for r in d.reasons],
                     "seq": self.seq, "ttl_ms": d.ttl_ms,
                     "boundary_mm": None if d.boundary_mm is None or not math.isfinite(d.boundary_mm) else round(float(d.boundary_mm), 3),
                     "required_mm": None if d.required_mm is None else round(float(d.required_mm), 3),
                     "latency_ms": None if d.latency_ms is None else round(float(d.latency_ms), 3),
                     "lookahead_latency_ms": self.lookahead_latency_ms},
        }
        return rec


class GuidancePipeline:
    """Owns the trackers, the mapper and the gate; `process(frame)` is the hot path."""

    def __init__(self, plan: TreatmentPlan, profile: HandpieceProfile, *, camera: CameraModel | None = None,
                 atlas: Atlas | None = None, publish: Callable[[GateDecision], Any] | None = None,
                 face_lost_disarm_s: float = 1.0, clock: Callable[[], int] = time.monotonic_ns,
                 tracker_config: TrackerConfig = TrackerConfig(), shoulder_tracking: bool = True):
        self.plan = plan
        self.profile = profile
        self.camera = camera
        self.clock = clock
        self.face = FaceTracker(tracker_config, camera)
        self.mapper = ZoneMapper(atlas=atlas)
        self.atlas = self.mapper.atlas
        self.hand: HandpieceTracker | None = None
        # The gate judges the tip by its uncertainty *across the line of sight* (what moves its pixel,
        # and so the skin point a lookup finds): confidence 1 / (1 + (sigma_lateral / 1.5 mm)^2) must
        # reach 0.5, and sigma_lateral is added to the distance required to the plan's edge.
        self.policy = GatePolicy(ttl_ms=plan.ttl_ms, margin_mm=plan.margin_mm)
        self.latency = LatencyTracker()
        self.publish_fn = publish
        self.face_lost_disarm_ns = int(face_lost_disarm_s * 1e9)
        self.state = PipelineState()
        self.coverage = CoverageMap.for_plan(plan, self.atlas)
        self.planned = tuple(sorted(plan.zones))
        self.excluded = set(plan.exclusions)
        self._complete: dict[str, bool] = {z: False for z in plan.zones}
        self.events: deque[dict] = deque()  # for the recorder / UI; drained by the owner
        self.last_seq: int | None = None
        # The pose model (for the décolletage's lower edge) runs only for plans that treat the neck or
        # décolletage, on its own thread at a reduced rate; the hot path reads its latest result.
        self.shoulders: ShoulderTracker | None = None
        if shoulder_tracking and any(self.atlas.zones[z].surface in ("neck", "decolletage") for z in plan.zones):
            self.shoulders = ShoulderTracker()
        self._shoulders_used: ShoulderObservation | None = None
        self._armed_input = False
        self._lookahead_ms = self.latency.value_ms()

    # -- commands --------------------------------------------------------------
    def set_armed(self, armed: bool, cause: str) -> None:
        if armed != self.state.armed:
            self.state.armed = armed
            self.events.append({"kind": "arm" if armed else "disarm", "t_ns": self.clock(), "cause": cause})

    def set_paused(self, paused: bool) -> None:
        if paused != self.state.paused:
            self.state.paused = paused
            self.events.append({"kind": "pause" if paused else "resume", "t_ns": self.clock()})

    def refresh_completion(self) -> None:
        """Recompute per-zone completion after pulses landed (off the hot path)."""
        for z in self._complete:
            self._complete[z] = self.coverage.zone(z).fraction_at_target >= ZONE_COMPLETE_FRACTION

    # -- hot path --------------------------------------------------------------
    def _tracker_for(self, frame: Frame) -> HandpieceTracker:
        if self.hand is None:
            w, h = frame.size
            cam = self.camera.scaled_to(w, h) if self.camera else CameraModel.default(w, h)
            self.hand = HandpieceTracker(self.profile, cam)
        return self.hand

    def _gate_input(self, frame: Frame, face: FaceObservation, tip: TipObservation | None,
                    z: ZoneLookup | None) -> GateInput:
        zone = z.zone if z is not None else None
        kind = None
        boundary = None
        u = v = None
        local = 0
        max_passes = None
        if z is not None and z.face_found and zone is not None:
            kind = {"treat": ZoneKind.TREAT, "exclusion": ZoneKind.EXCLUSION}.get(z.kind, ZoneKind.OFF_SURFACE)
            if zone in self.excluded:
                kind = ZoneKind.EXCLUSION
            if z.chart_mm is not None:
                u, v = z.chart_mm
                # distance to leaving the *planned region*, not just this zone: crossing from one
                # planned zone into another is fine, leaving the plan is not
                scale = 1.0
                if z.triangle is not None:
                    scale = min(1.0, float(self.mapper.chart.triangle_sigma[z.triangle, 0]))
                if zone in self.plan.zones:
                    boundary = self.atlas.region_distance_mm(self.planned, u, v) * scale
                    if z.limit_mm is not None:  # the shoulder line bounds the décolletage too
                        boundary = min(boundary, z.limit_mm)
                else:
                    boundary = z.boundary_mm
                # the most-treated cell under the footprint, so no cell is pushed over the maximum
                local = int(np.ceil(self.coverage.max_passes_in_disc(u, v, self.profile.electrode_diameter_mm)))
                if zone in self.plan.zones:
                    max_passes = self.plan.zones[zone].max_passes
        return GateInput(
            armed=self._armed_input,
            t_capture_ns=frame.t_capture_ns,
            face_found=face.found, t_face_ns=face.t_capture_ns if face.found else None,
            presence=float(face.presence),
            tip_valid=tip is not None and tip.valid,
            tip_confidence=gate_confidence(tip),
            zone=zone, zone_kind=kind, zone_planned=zone in self.plan.zones,
            boundary_mm=boundary, speed_mm_s=tip.speed_mm_s if tip is not None else None,
            pipeline_latency_ms=self._lookahead_ms,
            local_passes=local, max_passes=max_passes,
            zone_complete=self._complete.get(zone, False) if zone else False,
            stop_at_target=self.plan.stop_at_target,
            tip_u=u, tip_v=v,
            tip_sigma_mm=tip.tip_sigma_lateral_mm if tip is not None and tip.valid else None,
        )

    def judge(self, frame: Frame, face: FaceObservation, tip: TipObservation | None, now_ns: int,
              camera: CameraModel | None = None, shoulders: ShoulderObservation | None = None,
              ) -> tuple[ZoneLookup | None, GateDecision, int]:
        """Zone lookup and gate decision for observations of one frame (also used by re-processing).

        Returns the lookup, the decision and the time the lookup finished.
        """
        lookup = None
        self._shoulders_used = shoulders
        if tip is not None and tip.valid and face.found:
            cam = camera or (self.hand.camera if self.hand else CameraModel.default(*frame.size))
            lookup = self.mapper.locate(face, tip.tip_px[0], tip.tip_px[1], frame.size, cam, shoulders=shoulders)
        t_zone = self.clock()
        decision = decide(self.policy, self._gate_input(frame, face, tip, lookup), now_ns)
        return lookup, decision, t_zone

    def process(self, frame: Frame) -> FrameResult:
        face = tip = lookup = None
        self._armed_input = self.state.armed and not self.state.paused
        self._lookahead_ms = self.latency.value_ms()
        t_face = t_tip = t_zone = self.clock()
        try:
            face = self.face.process(frame)
            t_face = self.clock()
            tip = self._tracker_for(frame).process(frame.image, frame.t_capture_ns, frame.index)
            t_tip = self.clock()
            self._watch_face(face, frame)
            shoulders = None
            if self.shoulders is not None:
                self.shoulders.submit(frame.image, frame.t_capture_ns, frame.index)
                shoulders = self.shoulders.latest(frame.t_capture_ns)
            lookup, decision, t_zone = self.judge(frame, face, tip, self.clock(), shoulders=shoulders)
        except Exception as exc:  # any fault on the hot path: deny, disarm, record it
            decision = deny(self.policy, Reason.INTERNAL_ERROR, t_capture_ns=frame.t_capture_ns, now_ns=self.clock())
            self.set_armed(False, f"fault: {type(exc).__name__}: {exc}")
            self.events.append({"kind": "fault", "t_ns": self.clock(), "where": "hot_path",
                                "error": f"{type(exc).__name__}: {exc}"})
            if face is None:
                face = FaceObservation(frame.index, frame.t_capture_ns, self.clock(), False, 0.0, None, None, None,
                                       None, False, {})
        t_decided = decision.t_decided_ns  # the "now" the gate judged freshness against
        seq = None
        if self.publish_fn is not None:
            permit = self.publish_fn(decision)
            seq = getattr(permit, "seq", None)
        t_pub = self.clock()
        self.last_seq = seq
        lookahead = self._lookahead_ms
        self.latency.add((t_pub - frame.t_capture_ns) / 1e6)
        self.count(decision)
        return FrameResult(frame, face, tip, lookup, decision, seq, t_face, t_tip, t_zone, t_decided, t_pub,
                           self._armed_input, lookahead, self._shoulders_used)

    def count(self, decision: GateDecision) -> None:
        st = self.state
        st.frames += 1
        if decision.permit:
            st.permits += 1
        else:
            st.denies[decision.reason.value] = st.denies.get(decision.reason.value, 0) + 1

    def _watch_face(self, face: FaceObservation, frame: Frame) -> None:
        if face.found:
            self.state.face_lost_since_ns = None
            return
        if self.state.face_lost_since_ns is None:
            self.state.face_lost_since_ns = frame.t_capture_ns
        elif self.state.armed and frame.t_capture_ns - self.state.face_lost_since_ns > self.face_lost_disarm_ns:
            self.set_armed(False, "face lost")
