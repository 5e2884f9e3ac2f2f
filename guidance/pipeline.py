"""The live guidance pipeline: one frame in, one permit out, everything else off the hot path.

Hot path, on the capture thread (the handpiece tracker on a stage thread of its own, in parallel):
    frame → face tracker ∥ handpiece tracker → zone lookup → gate → permit published
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

import concurrent.futures
import dataclasses
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from guidance.gate import GateDecision, GateInput, GatePolicy, LatencyTracker, Reason, ZoneKind, decide, deny
from guidance.vision.capture.camera import CameraModel
from guidance.session import records
from guidance.session.records import FrameRecord, frame_record
from guidance.vision.face.smoothing import OneEuroConfig
from guidance.vision.face.head_pose import load_canonical_face
from guidance.vision.face.mapping_sigma import EYE_CORNERS, MappingSigmaModel
from guidance.vision.face.skin_memory import FillReport, SkinMemory
from guidance.vision.face.tracker import FaceObservation, FaceTracker, TrackerConfig
from guidance.vision.handpiece.tracker import CONFIDENCE_HALF_SIGMA_MM, HandpieceTracker, TipObservation
from guidance.vision.body.patch import PatchObservation, PatchTracker
from guidance.vision.body.shoulders import ShoulderObservation, ShoulderTracker
from guidance.vision.face.head_band import (BandHead, HeadBandRegistration, HeadPoseSample, HeadReferenceTracker,
                                            Registration)
from guidance.vision.handpiece.profiles import HandpieceProfile, load_head_band
from guidance.vision.face.touch_registration import TouchRegistration, neck_targets, scalp_targets
from guidance.vision.handpiece.silhouette import PosePredictor, Silhouette, pose_of
from guidance.vision.capture.sources import Frame
from guidance.zones.atlas import Atlas
from guidance.zones.body_atlas import load_body_area
from guidance.zones.body_mapper import BodyLookup, PatchMapper
from guidance.zones.coverage import CoverageMap
from guidance.zones.mapper import ZoneLookup, ZoneMapper
from guidance.vision.rigid import RigidPose
from guidance.zones.face_pose_bias import face_pose_sigma_mm
from guidance.zones.neck_twist import TorsoReferenceBuilder, TorsoState, notch_point, twist_sigma_mm
from guidance.zones.skin_speed import SkinSpeed
from guidance.zones.plan import TreatmentPlan

# Scalp sessions: a band-carried skin point's sigma grows as 1 / cos(incidence), up to this many times.
MIN_INCIDENCE_COS = 0.25
# A planned zone counts as complete (for stop_at_target) at this share of cells at target.
ZONE_COMPLETE_FRACTION = 0.98


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that shapes the pipeline's decisions besides the plan, the profile and the camera.

    Written whole into each recording's info (`to_json`), read back by re-processing (`from_json`).
    """

    policy: GatePolicy = GatePolicy()
    tracker: TrackerConfig = TrackerConfig()
    face_lost_disarm_s: float = 1.0
    shoulder_tracking: bool = True
    # Show the landmark model the skin last seen where the handpiece is (vision/face/skin_memory.py).
    skin_memory: bool = True
    silhouette_pad_px: float = 4.0
    mapping_sigma: MappingSigmaModel = MappingSigmaModel()
    # Scalp sessions (a plan with a zone on the scalp surface): the head band carries the head (docs/scalp.md).
    head_band: str = "head_band_default"  # band profile, a file or a bundled name
    # Face poses within this yaw of the camera register the band and check it has not slipped; beyond it the
    # face tracker's pose is too coarse to compare with (tens of mm at 60 degrees).
    band_face_max_yaw_deg: float = 12.0
    band_registration_frames: int = 15  # simultaneous band and face poses averaged into the registration
    # The band counts as slipped (re-registered) after this many consecutive frames in which a near-frontal
    # face pose disagrees with it by more than 8 mm; each such frame is denied band_moved meanwhile.
    band_slip_frames: int = 10
    # 1-sigma (mm) of a scalp point carried by the band where the camera sees the skin square on: the face
    # pose's own bias (mostly depth), which averaging the registration does not remove (3-7 mm at the head,
    # up to 17 mm on the skin at the back in the rendered session, docs/scalp.md). The registration's spread
    # adds to it; the lookup divides it by the cosine of the ray's incidence on the scalp.
    band_sigma_mm: float = 8.0
    # How the band is tied to the head: "touch" (the practitioner touches four face landmarks with the tip, after
    # the face pose's registration; the head pose then comes from the touches, docs/scalp.md) or "face" (the face
    # pose's registration alone: no touching, but its bias, 11 mm median on the rendered client, is every scalp
    # point's). A touch registration's sigma is its own (TouchRegistration.sigma_mm: the fit's expected error at
    # the scalp for the touches' localization error, with the band's own).
    band_registration: str = "touch"
    # Plans with neck zones: the head band carries the head too (registered as above, `--head-band` given), and the
    # neck twists on the torso at rest under the band's head (docs/neck.md); off: the face pose carries it.
    neck_on_band: bool = False

    @classmethod
    def for_plan(cls, plan: TreatmentPlan, **kw: Any) -> "PipelineConfig":
        """The default configuration with the plan's permit TTL and safety margin."""
        return cls(policy=GatePolicy(ttl_ms=plan.ttl_ms, margin_mm=plan.margin_mm), **kw)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PipelineConfig":
        """From `to_json` output; unknown keys (from a newer writer) are left out, missing ones default."""
        def pick(kind: type, src: Any) -> dict[str, Any]:
            names = {f.name for f in dataclasses.fields(kind)}
            return {k: v for k, v in (src or {}).items() if k in names}

        tr = pick(TrackerConfig, d.get("tracker"))
        ms = MappingSigmaModel(**pick(MappingSigmaModel, d.get("mapping_sigma")))
        if isinstance(tr.get("one_euro"), dict):
            tr["one_euro"] = OneEuroConfig(**pick(OneEuroConfig, tr["one_euro"]))
        if d.get("landmark_model") and "landmark_model" not in tr:
            tr["landmark_model"] = d["landmark_model"]
        top = {k: v for k, v in pick(cls, d).items() if k not in ("policy", "tracker", "mapping_sigma")}
        return cls(policy=GatePolicy(**pick(GatePolicy, d.get("policy"))), tracker=TrackerConfig(**tr),
                   mapping_sigma=ms, **top)


@dataclass
class PipelineState:
    armed: bool = False
    paused: bool = False
    face_lost_since_ns: int | None = None
    # The last frame in which the client's face was not found but another face was (the gate's client_settle_ms)
    t_other_face_ns: int | None = None
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
    head_band: BandHead | None = None  # scalp sessions: the head from the band (None: a face session)
    patch: PatchObservation | None = None  # body plans: the skin patch the zone lookup went through
    torso: TorsoState | None = None  # face sessions with neck zones: the torso the neck stands on

    @property
    def latency_ms(self) -> float:
        return (self.t_published_ns - self.frame.t_capture_ns) / 1e6

    def record(self) -> FrameRecord:
        """The frames.jsonl record (guidance/session/records.py)."""
        return frame_record(self, gate_confidence(self.tip))


class GuidancePipeline:
    """Owns the trackers, the mapper and the gate; `process(frame)` is the hot path."""

    def __init__(self, plan: TreatmentPlan, profile: HandpieceProfile, *, config: PipelineConfig | None = None,
                 camera: CameraModel | None = None, atlas: Atlas | None = None,
                 publish: Callable[[GateDecision], Any] | None = None, clock: Callable[[], int] = time.monotonic_ns,
                 vision: bool = True):
        """`vision=False`: no face tracker or pose model is loaded (re-processing judges recorded observations).

        A plan with `area: body` tracks the skin reference patch instead of the face (`_process_body`)."""
        self.plan = plan
        self.profile = profile
        self.config = config or PipelineConfig.for_plan(plan)
        self.camera = camera
        self.clock = clock
        # body plans: the body area (its patch chart and atlas), the patch tracker (made with the handpiece
        # tracker, on the first frame) and the patch mapper; no face tracker, skin memory or pose model
        self.body_area = load_body_area(plan.body_area) if plan.area == "body" else None
        self.patch_tracker: PatchTracker | None = None
        self.patch_mapper = PatchMapper(self.body_area) if self.body_area is not None else None
        body = self.body_area is not None
        self.face = FaceTracker(self.config.tracker, camera) if vision and not body else None
        self.mapper = ZoneMapper(atlas=None if body else atlas)  # body plans keep it for the overlay's face chart
        self.atlas = self.body_area.atlas if self.body_area is not None else self.mapper.atlas
        self.hand: HandpieceTracker | None = None
        # The gate judges the tip by its uncertainty *across the line of sight* (what moves its pixel,
        # and so the skin point a lookup finds): confidence 1 / (1 + (sigma_lateral / 1.5 mm)^2) must
        # reach 0.5, and sigma_lateral is added to the distance required to the plan's edge.
        self.policy = self.config.policy
        self.latency = LatencyTracker()
        # the skin under the handpiece, as last seen (see _unoccluded)
        self.skin = SkinMemory() if vision and self.config.skin_memory and not body else None
        self.silhouette: Silhouette | None = None
        self.pose_predictor = PosePredictor()
        self.fill: FillReport | None = None
        self._last_landmarks: np.ndarray | None = None
        canonical = load_canonical_face()
        self._eye_mm = float(np.linalg.norm(canonical[EYE_CORNERS[0], :2] - canonical[EYE_CORNERS[1], :2]))
        # the handpiece stage's own thread (face tracking runs on the caller's)
        self._stage = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="handpiece-stage")
        self.skin_speed = SkinSpeed()
        self.publish_fn = publish
        self.face_lost_disarm_ns = int(self.config.face_lost_disarm_s * 1e9)
        self.state = PipelineState()
        self.coverage = CoverageMap.for_plan(plan, self.atlas)
        self.planned = tuple(sorted(plan.zones))
        self.excluded = set(plan.exclusions)
        self._complete: dict[str, bool] = {z: False for z in plan.zones}
        self.events: deque[records.Event] = deque()  # for the recorder / UI; drained by the owner
        self.last_seq: int | None = None
        # Scalp sessions: the head band, registered to the face's head frame while the face is near frontal,
        # carries the head (and the scalp zones) when the face turns away; the gate judges the band instead
        # of the face (reasons band_unregistered, band_lost, band_moved).
        # A band session: the head band carries the head (scalp zones; or neck zones with `neck_on_band`).
        neck_planned = any(self.atlas.zones[z].surface == "neck" for z in plan.zones if z in self.atlas.zones)
        self.neck_planned = neck_planned and self.body_area is None
        self.scalp = (any(self.atlas.zones[z].surface == "scalp" for z in plan.zones)
                      or (self.neck_planned and self.config.neck_on_band))
        self.band_body = load_head_band(self.config.head_band) if self.scalp and vision else None
        # The pose model (the shoulder line: the décolletage's and the neck's lower edge) runs only for face
        # sessions that treat the neck or décolletage, on its own thread at a reduced rate; the hot path reads its
        # latest result. A band session does not use it (the band and the notch touch place the neck, the sternum
        # patch the torso): running it there took about 6 ms a frame of the two cores for nothing (a 60 ms run
        # every 10th frame), and stalled the camera.
        self.shoulders: ShoulderTracker | None = None
        if (vision and self.config.shoulder_tracking and not self.scalp
                and any(self.atlas.zones[z].surface in ("neck", "decolletage") for z in plan.zones)):
            self.shoulders = ShoulderTracker()
        # Plans with neck zones: the neck stands on the torso (the head frame at rest) and twists under the head
        # (zones/neck_twist.py); the rest pose is made from the first near-frontal head poses after arming (the
        # face's, or in a band session the band's once registered).
        # A band session registered by touches also has the sternal notch touched: it places the neck's lower end.
        notch = self.scalp and self.config.band_registration == "touch"
        # A face session's décolletage stands on the torso too: a head turn does not swing it.
        dec_planned = (any(self.atlas.zones[z].surface == "decolletage" for z in plan.zones if z in self.atlas.zones)
                       and self.body_area is None and not self.scalp)
        self.torso_builder = (TorsoReferenceBuilder(neck=self.mapper.chart.surfaces["neck"], notch_required=notch)
                              if self.neck_planned or dec_planned else None)
        self.head_ref: HeadReferenceTracker | None = None

    # -- commands --------------------------------------------------------------
    def set_armed(self, armed: bool, cause: str) -> None:
        if armed and self.face is not None:
            self.face.lock_client()  # the face tracked when the session is armed is the client's, kept
        if armed and not self.state.armed and self.torso_builder is not None:
            self.torso_builder.reset()  # the client may have moved since: a new rest pose
        if armed != self.state.armed:
            self.state.armed = armed
            self.events.append((records.Arm if armed else records.Disarm)(self.clock(), cause=cause))

    def set_paused(self, paused: bool) -> None:
        if paused != self.state.paused:
            self.state.paused = paused
            self.events.append((records.Pause if paused else records.Resume)(self.clock()))

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
            if self.band_body is not None:
                touch = None
                if self.config.band_registration == "touch":
                    surfaces = self.mapper.chart.surfaces
                    targets = scalp_targets(surfaces["scalp"])
                    if self.neck_planned:  # the band carries the neck too: the sigma must hold there as well
                        targets = np.vstack([targets, neck_targets(surfaces["neck"])])
                    touch = TouchRegistration(load_canonical_face(), targets=targets,
                                              notch=notch_point(surfaces["neck"]) if self.neck_planned else None)
                self.head_ref = HeadReferenceTracker(
                    self.band_body, cam, HeadBandRegistration(min_samples=self.config.band_registration_frames),
                    moved_after=self.config.band_slip_frames, touch=touch)
            if self.scalp and self.neck_planned:  # a neck carried by the band: a sternum patch, when worn, carries
                self.patch_tracker = PatchTracker(cam)  # the torso (zones/neck_twist.py)
            if self.config.skin_memory and self.body_area is None:
                self.silhouette = Silhouette(self.profile, cam)
            if self.body_area is not None:
                self.patch_tracker = PatchTracker(cam)
        return self.hand

    def _gate_input(self, frame: Frame, face: FaceObservation, tip: TipObservation | None,
                    z: ZoneLookup | None, armed: bool, lookahead_ms: float, skin_speed: float | None,
                    mapping_sigma: float | None) -> GateInput:
        zone = z.zone if z is not None else None
        kind = None
        boundary = None
        clearance: tuple[float, str] | None = None
        u = v = None
        local = 0
        max_passes = None
        if z is not None and z.face_found and zone is not None:
            kind = {"treat": ZoneKind.TREAT, "exclusion": ZoneKind.EXCLUSION}.get(z.kind or "", ZoneKind.OFF_SURFACE)
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
                # every atlas exclusion keeps its clinical buffer, whatever the plan's margin
                c = self.atlas.exclusion_clearance_mm(u, v, z.surface or "face")
                if c is not None:
                    clearance = (c[0] * scale, c[1])
                # the most-treated cell under the footprint, so no cell is pushed over the maximum
                local = int(np.ceil(self.coverage.max_passes_in_disc(u, v, self.profile.electrode_diameter_mm)))
                if zone in self.plan.zones:
                    max_passes = self.plan.zones[zone].max_passes
        return GateInput(
            armed=armed,
            t_capture_ns=frame.t_capture_ns,
            face_found=face.found, t_face_ns=face.t_capture_ns if face.found else None,
            presence=float(face.presence), other_face=face.someone_elses,
            t_other_face_ns=self.state.t_other_face_ns,
            tip_valid=tip is not None and tip.valid,
            tip_confidence=gate_confidence(tip),
            zone=zone, zone_kind=kind, zone_planned=zone in self.plan.zones,
            boundary_mm=boundary, speed_mm_s=skin_speed,
            pipeline_latency_ms=lookahead_ms,
            local_passes=local, max_passes=max_passes,
            zone_complete=self._complete.get(zone, False) if zone else False,
            stop_at_target=self.plan.stop_at_target,
            tip_u=u, tip_v=v,
            tip_sigma_mm=tip.tip_sigma_lateral_mm if tip is not None and tip.valid else None,
            mapping_sigma_mm=mapping_sigma,
            exclusion_clearance_mm=None if clearance is None else clearance[0],
            exclusion=None if clearance is None else clearance[1],
        )

    def judge(self, frame: Frame, face: FaceObservation, tip: TipObservation | None, now_ns: int, *,
              armed: bool, lookahead_ms: float, camera: CameraModel | None = None,
              shoulders: ShoulderObservation | None = None, mapping_sigma_mm: float | None = None,
              head_band: BandHead | None = None, patch: PatchObservation | None = None,
              torso: TorsoState | None = None) -> tuple[ZoneLookup | None, GateDecision, int]:
        """Zone lookup and gate decision for observations of one frame (also used by re-processing).

        `armed`: the gate's armed input (armed and not paused); `lookahead_ms`: the pipeline latency the
        look-ahead uses; `mapping_sigma_mm`: the face mapping's 1-sigma (vision/face/mapping_sigma.py); a scalp
        session ignores it and takes the band's (`head_band.sigma_mm`, over the cosine of the ray's incidence
        on the scalp); `head_band`: a scalp session's head from the band (None there: the band is lost).
        Returns the lookup, the decision and the time the lookup finished. Body plans judge through
        `patch` instead of `face` (`judge_body`).
        """
        if self.body_area is not None:
            return self.judge_body(frame, patch, tip, now_ns, armed=armed, lookahead_ms=lookahead_ms, camera=camera,
                                   mapping_sigma_mm=mapping_sigma_mm)
        lookup = None
        if self.scalp:
            mapping_sigma_mm = head_band.sigma_mm if head_band is not None else None
            band_state = head_band.state if head_band is not None else "lost"
            if tip is not None and tip.valid and head_band is not None and band_state == "ok":
                assert head_band.pose is not None and tip.tip_px is not None, "an ok band has a pose, a tip its pixel"
                cam = camera or (self.hand.camera if self.hand else CameraModel.default(*frame.size))
                cam = cam.scaled_to(*frame.size)
                face_frame = self.mapper.prepare(face, frame.size, cam) if face.found else None
                lookup, cos = self.mapper.locate_on_band(head_band.pose.R, head_band.pose.t_mm, tip.tip_px[0],
                                                         tip.tip_px[1], cam, face_frame, neck=self.neck_planned,
                                                         torso=torso.reference if torso is not None else None)
                # the band's head error, mostly along the line of sight, moves a grazing skin point the most
                if head_band.sigma_mm is not None and lookup.surface == "scalp":
                    mapping_sigma_mm = head_band.sigma_mm / max(cos, MIN_INCIDENCE_COS)
        elif tip is not None and tip.valid and face.found:
            cam = camera or (self.hand.camera if self.hand else CameraModel.default(*frame.size))
            assert tip.tip_px is not None, "a valid tip has its pixel"
            lookup = self.mapper.locate(face, tip.tip_px[0], tip.tip_px[1], frame.size, cam, shoulders=shoulders,
                                        torso=torso.reference if torso is not None else None)
        t_zone = self.clock()
        # the tip's speed over the skin: from its chart track (the head's own motion taken out)
        on_chart = lookup is not None and lookup.chart_mm is not None
        speed = self.skin_speed.update(frame.t_capture_ns, lookup.chart_mm if on_chart else None)  # type: ignore[union-attr]
        if face.someone_elses:
            self.state.t_other_face_ns = frame.t_capture_ns  # another face had the client's place
        g = self._gate_input(frame, face, tip, lookup, armed, lookahead_ms, speed, mapping_sigma_mm)
        if self.scalp:
            g = dataclasses.replace(g, head_band=head_band.state if head_band is not None else "lost")
        if not self.scalp and lookup is not None and face_pose_sigma_mm(lookup.surface) is not None:
            g = dataclasses.replace(g, pose_sigma_mm=face_pose_sigma_mm(lookup.surface))  # the face pose's bias there
        if torso is not None and lookup is not None and lookup.surface in ("neck", "decolletage"):
            ref = torso.reference  # a neck or décolletage point is judged on the torso: none yet, denied
            g = dataclasses.replace(g, neck_torso="ok" if ref is not None else "unreferenced",
                                    twist_sigma_mm=twist_sigma_mm(ref, self.mapper.chart.surfaces["neck"])
                                    if ref is not None and lookup.surface == "neck" else None)
        decision = decide(self.policy, g, now_ns)
        return lookup, decision, t_zone

    def process(self, frame: Frame) -> FrameResult:
        if self.body_area is not None:
            return self._process_body(frame)
        assert self.face is not None, "a pipeline made with vision=False only judges recorded observations"
        face = tip = lookup = shoulders = band_head = torso = patch = None
        armed = self.state.armed and not self.state.paused
        lookahead = self.latency.value_ms()
        t_face = t_tip = t_zone = self.clock()
        try:
            # Face and handpiece share only the frame: the handpiece runs on the stage thread while the face
            # runs here, on the two cores (onnxruntime and OpenCV release the GIL). Each is the same
            # computation as one after the other, so every decision is unchanged.
            hand = self._tracker_for(frame)
            pending = self._stage.submit(self._timed, hand.process, frame.image, frame.t_capture_ns, frame.index)
            band_pending = patch_pending = None
            if self.head_ref is not None:  # the band's markers, on the stage thread after the handpiece's
                band_pending = self._stage.submit(self.head_ref.track, frame.image, frame.t_capture_ns)
            if self.patch_tracker is not None:  # a neck session's sternum patch, after the band's
                patch_pending = self._stage.submit(self.patch_tracker.process, frame.image, frame.t_capture_ns,
                                                   frame.index)
            try:
                face = self.face.process(self._unoccluded(frame))
                t_face = self.clock()
            finally:
                tip, t_tip = pending.result()  # never leave the stage thread working on a frame we moved past
                band = band_pending.result() if band_pending is not None else None
                patch = patch_pending.result() if patch_pending is not None else None
            if band is not None:
                band_head = self._band_head(band, face, tip)
            self._remember_skin(frame, face, tip)
            self._watch_face(face, frame, band_head)
            mapping_sigma = self._mapping_sigma(face, tip)
            if self.scalp:  # the skin point's mapping uncertainty is the band's (judge scales it by incidence)
                mapping_sigma = None
            if self.shoulders is not None:
                self.shoulders.submit(frame.image, frame.t_capture_ns, frame.index)
                shoulders = self.shoulders.latest(frame.t_capture_ns)
            torso = self._torso(face, band_head, patch)
            lookup, decision, t_zone = self.judge(frame, face, tip, self.clock(), armed=armed, lookahead_ms=lookahead,
                                                  shoulders=shoulders, mapping_sigma_mm=mapping_sigma,
                                                  head_band=band_head, torso=torso, patch=patch)
        except Exception as exc:  # any fault on the hot path: deny, disarm, record it
            decision = deny(self.policy, Reason.INTERNAL_ERROR, t_capture_ns=frame.t_capture_ns, now_ns=self.clock())
            self.set_armed(False, f"fault: {type(exc).__name__}: {exc}")
            self.events.append(records.Fault(self.clock(), where="hot_path", error=f"{type(exc).__name__}: {exc}"))
            if face is None:
                face = _no_face(frame, self.clock())
        return self._publish(frame, face, tip, lookup, decision, t_face, t_tip, t_zone, armed, lookahead, shoulders,
                             head_band=band_head, torso=torso, patch=patch)

    def _torso(self, face: FaceObservation, band_head: BandHead | None = None,
               patch: PatchObservation | None = None) -> TorsoState | None:
        """Plans with neck zones: this frame's torso (the rest pose once made, moved with the sternum patch when one
        was seen at rest, and the head's turn relative to it): from the face pose, or in a band session from the
        band's head (registered, carried this frame)."""
        if self.torso_builder is None:
            return None
        head: RigidPose | None = None
        notch = None
        if self.scalp:
            if band_head is not None and band_head.state == "ok" and band_head.pose is not None:
                head = band_head.pose
            if band_head is not None and band_head.registration is not None:
                notch = band_head.registration.notch_cam_mm
        else:
            pose = face.head_pose if face.found else None
            if pose is not None and pose.valid and face.presence >= self.config.tracker.min_presence:
                head = RigidPose(pose.R, np.asarray(pose.tvec_mm, float))
        yaw = None if head is None else float(np.degrees(np.arcsin(-np.clip(head.R[2, 0], -1.0, 1.0))))
        sternum = None
        if patch is not None and patch.found and patch.rvec is not None and patch.tvec_mm is not None:
            sternum = RigidPose.from_rvec(np.asarray(patch.rvec, float), np.asarray(patch.tvec_mm, float))
        return TorsoState(self.torso_builder.add(head, yaw, sternum, notch))

    def _band_head(self, band: Any, face: FaceObservation, tip: TipObservation | None = None) -> BandHead:
        """This frame's head from the band: the face pose is given to it (registration, slip check) only when
        the face is found, its pose valid and within `band_face_max_yaw_deg` of facing the camera; the tip (a
        touch registration's pointer) when tracked."""
        assert self.head_ref is not None
        sample = None
        pose = face.head_pose if face.found else None
        max_yaw = self.config.band_face_max_yaw_deg
        if (pose is not None and pose.valid and face.presence >= self.config.tracker.min_presence
                and abs(pose.euler_deg()[0]) <= max_yaw):
            # Once registered, the band's own head pose (far the better one off frontal) must say frontal too:
            # a face pose turned to the side can read frontal, and tens of mm off.
            reg = self.head_ref.registration.result
            if reg.registered and band.valid and band.pose is not None and reg.band_to_head is not None:
                R = band.pose.R @ reg.band_to_head.R
                frontal = abs(float(np.degrees(np.arcsin(-np.clip(R[2, 0], -1.0, 1.0))))) <= max_yaw
            else:
                frontal = not reg.registered
            if frontal:
                sample = HeadPoseSample(pose.R, np.asarray(pose.tvec_mm, float), face.t_capture_ns)
        tip_mm = np.asarray(tip.tip_mm, float) if tip is not None and tip.valid and tip.tip_mm is not None else None
        obs = self.head_ref.combine(band, sample, tip_mm)
        reg = self.head_ref.carrier()
        return BandHead.of(obs, reg, sample is not None, self._band_sigma(reg))

    def _band_sigma(self, reg: Registration) -> float | None:
        """1-sigma (mm) of a scalp point carried by the band: the floor, and the registration's mean error
        (its RMS spread, the rotation at a 120 mm lever to the scalp, over the square root of its samples);
        a touch registration's own (its floor and residual)."""
        if not reg.registered or reg.samples < 1:
            return None
        if reg.method == "touch":
            assert self.head_ref is not None and self.head_ref.touch is not None
            return self.head_ref.touch.sigma_mm()
        random = float(np.hypot(reg.spread_mm, np.radians(reg.spread_deg) * 120.0)) / float(np.sqrt(reg.samples))
        return float(np.hypot(self.config.band_sigma_mm, random))

    # -- body plans: the skin reference patch instead of the face --------------------------------------------
    def judge_body(self, frame: Frame, patch: PatchObservation | None, tip: TipObservation | None, now_ns: int, *,
                   armed: bool, lookahead_ms: float, camera: CameraModel | None = None,
                   mapping_sigma_mm: float | None = None) -> tuple[BodyLookup | None, GateDecision, int]:
        """`judge` for a body plan: the tip's pixel through the patch plane onto the body area's chart.

        `mapping_sigma_mm`: None computes it from the lookup (live); re-processing passes the recorded one.
        """
        assert self.patch_mapper is not None, "a body plan has its patch mapper"
        lookup = None
        if tip is not None and tip.valid and patch is not None and patch.found:
            cam = camera or (self.hand.camera if self.hand else CameraModel.default(*frame.size))
            assert tip.tip_px is not None, "a valid tip has its pixel"
            lookup = self.patch_mapper.locate(patch, tip.tip_px[0], tip.tip_px[1], cam)
            if mapping_sigma_mm is None:
                mapping_sigma_mm = lookup.mapping_sigma_mm
        t_zone = self.clock()
        on_chart = lookup is not None and lookup.chart_mm is not None and lookup.in_range
        speed = self.skin_speed.update(frame.t_capture_ns, lookup.chart_mm if on_chart else None)  # type: ignore[union-attr]
        no_face = _no_face(frame, self.clock())
        g = self._gate_input(frame, no_face, tip, lookup, armed, lookahead_ms, speed, mapping_sigma_mm)
        g = dataclasses.replace(g, reference="patch", patch_found=patch is not None and patch.found,
                                t_patch_ns=patch.t_capture_ns if patch is not None and patch.found else None,
                                patch_in_range=lookup is not None and lookup.in_range)
        return lookup, decide(self.policy, g, now_ns), t_zone

    def _process_body(self, frame: Frame) -> FrameResult:
        """The hot path of a body plan: patch ∥ handpiece → patch mapping → gate → publish."""
        face = _no_face(frame, self.clock())
        tip = lookup = patch = None
        armed = self.state.armed and not self.state.paused
        lookahead = self.latency.value_ms()
        t_face = t_tip = t_zone = self.clock()
        try:
            hand = self._tracker_for(frame)
            assert self.patch_tracker is not None, "made with the handpiece tracker"
            pending = self._stage.submit(self._timed, hand.process, frame.image, frame.t_capture_ns, frame.index)
            try:
                patch = self.patch_tracker.process(frame.image, frame.t_capture_ns, frame.index)
                t_face = self.clock()
            finally:
                tip, t_tip = pending.result()
            self._watch_reference(patch.found, frame, "patch lost")
            lookup, decision, t_zone = self.judge_body(frame, patch, tip, self.clock(), armed=armed,
                                                       lookahead_ms=lookahead)
        except Exception as exc:  # any fault on the hot path: deny, disarm, record it
            decision = deny(self.policy, Reason.INTERNAL_ERROR, t_capture_ns=frame.t_capture_ns, now_ns=self.clock())
            self.set_armed(False, f"fault: {type(exc).__name__}: {exc}")
            self.events.append(records.Fault(self.clock(), where="hot_path", error=f"{type(exc).__name__}: {exc}"))
        return self._publish(frame, face, tip, lookup, decision, t_face, t_tip, t_zone, armed, lookahead, None, patch)

    def _publish(self, frame: Frame, face: FaceObservation, tip: TipObservation | None, lookup: ZoneLookup | None,
                 decision: GateDecision, t_face: int, t_tip: int, t_zone: int, armed: bool, lookahead: float,
                 shoulders: ShoulderObservation | None, patch: PatchObservation | None = None,
                 head_band: BandHead | None = None, torso: TorsoState | None = None) -> FrameResult:
        """Publish the decision and account for it: the tail of every frame's hot path (face, scalp or body)."""
        t_decided = decision.t_decided_ns  # the "now" the gate judged freshness against
        seq = None
        if self.publish_fn is not None:
            permit = self.publish_fn(decision)
            seq = getattr(permit, "seq", None)
        t_pub = self.clock()
        self.last_seq = seq
        self.latency.add((t_pub - frame.t_capture_ns) / 1e6, t_pub)
        self.count(decision)
        return FrameResult(frame, face, tip, lookup, decision, seq, t_face, t_tip, t_zone, t_decided, t_pub,
                           armed, lookahead, shoulders, head_band=head_band, patch=patch, torso=torso)

    def _watch_reference(self, found: bool, frame: Frame, cause: str) -> None:
        """Disarm once the skin reference (face or patch) has been lost for longer than face_lost_disarm_s."""
        if found:
            self.state.face_lost_since_ns = None
            return
        if self.state.face_lost_since_ns is None:
            self.state.face_lost_since_ns = frame.t_capture_ns
        elif self.state.armed and frame.t_capture_ns - self.state.face_lost_since_ns > self.face_lost_disarm_ns:
            self.set_armed(False, cause)

    def _unoccluded(self, frame: Frame) -> Frame:
        """The frame with the handpiece's predicted silhouette filled with the skin last seen there.

        The landmark model then sees the face, not the handpiece (guidance/vision/face/skin_memory.py). The
        prediction is from the last two handpiece poses, since this frame's pose is being found in parallel.
        """
        self.fill = None
        if self.skin is None or self.silhouette is None:
            return frame
        pose = self.pose_predictor.predict(frame.t_capture_ns)
        if pose is None:
            return frame
        mask = self.silhouette.mask(pose, frame.size, self.config.silhouette_pad_px)
        image, self.fill = self.skin.fill(frame.image, mask, frame.t_capture_ns, self.silhouette.tip_px(pose))
        return frame if image is frame.image else Frame(frame.index, frame.t_capture_ns, image)

    def _remember_skin(self, frame: Frame, face: FaceObservation, tip: TipObservation | None) -> None:
        """Learn the skin seen clear of this frame's handpiece (its own pose, now known)."""
        if self.skin is None or self.silhouette is None:
            return
        pose = pose_of(tip)
        self.pose_predictor.observe(pose)
        mask = None if pose is None else self.silhouette.mask(pose, frame.size, self.config.silhouette_pad_px)
        self.skin.refresh(frame.image, face.landmarks if face.found else None, mask, frame.t_capture_ns)

    def _mapping_sigma(self, face: FaceObservation, tip: TipObservation | None) -> float | None:
        """The face mapping's 1-sigma at the tip this frame; the landmarks are kept for the next frame's motion."""
        lm = face.landmarks if face.found else None
        covered = tip is not None and tip.valid  # the tip is under its own handpiece whenever it is seen
        filled = self.fill is not None and self.fill.age_ns is not None
        sigma = self.config.mapping_sigma.sigma_mm(lm, self._last_landmarks, self._eye_mm, covered, filled)
        self._last_landmarks = None if lm is None else lm.copy()
        return sigma

    def _timed(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
        out = fn(*args)
        return out, self.clock()

    def close(self) -> None:
        """Stop the stage thread and the pose model (the run loop calls this at the end)."""
        self._stage.shutdown(wait=True)
        if self.shoulders is not None:
            self.shoulders.close()

    def count(self, decision: GateDecision) -> None:
        st = self.state
        st.frames += 1
        if decision.permit:
            st.permits += 1
        else:
            st.denies[decision.reason.value] = st.denies.get(decision.reason.value, 0) + 1

    def _watch_face(self, face: FaceObservation, frame: Frame, band_head: BandHead | None = None) -> None:
        """Disarm after `face_lost_disarm_s` without the head: the face, or in a scalp session the band
        (before it is registered the band is 'found' whenever the face is, so registration can happen armed)."""
        if self.scalp:
            found = band_head is not None and (band_head.state == "ok"
                                               or (band_head.state == "unregistered" and face.found))
            self._watch_reference(found, frame, "head band lost")
        else:
            self._watch_reference(face.found, frame, "face lost")


def _no_face(frame: Frame, now_ns: int) -> FaceObservation:
    """The face observation of a frame no face tracker looked at (body plans)."""
    return FaceObservation(frame.index, frame.t_capture_ns, now_ns, False, 0.0, None, None, None, None, False, {})
