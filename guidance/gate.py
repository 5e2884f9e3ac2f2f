"""The pulse gate policy: may a pulse fired during the next `ttl_ms` land inside the plan?

Permit only when every condition holds; otherwise deny with the reason code of
the first failing check (in the documented order) and list all failing ones,
so the overlay shows the most basic problem first and the record keeps the rest.
Every comparison is written as "permit if <condition>", so a NaN anywhere fails
the condition and denies. Any exception inside the policy is a deny with
`internal_error`, never a permit.

Inputs are a plain dataclass rather than tracker objects so the zones and
tracking issues can fill it however they compute things.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class Reason(str, Enum):
    """Stable reason codes (the wire carries `.value`; docs/protocol.md lists them)."""

    OK = "ok"
    NOT_ARMED = "not_armed"
    CAMERA_STALLED = "camera_stalled"
    NO_FACE = "no_face"
    OTHER_FACE = "other_face"
    FACE_STALE = "face_stale"
    LOW_PRESENCE = "low_presence"
    BAND_UNREGISTERED = "band_unregistered"
    BAND_LOST = "band_lost"
    BAND_MOVED = "band_moved"
    PATCH_LOST = "patch_lost"
    PATCH_STALE = "patch_stale"
    TIP_LOST = "tip_lost"
    TIP_LOW_CONFIDENCE = "tip_low_confidence"
    CALIBRATION_MISSING = "calibration_missing"
    NECK_UNREFERENCED = "neck_unreferenced"
    PATCH_FAR = "patch_far"
    OFF_SURFACE = "off_surface"
    ZONE_EXCLUDED = "zone_excluded"
    ZONE_NOT_PLANNED = "zone_not_planned"
    NEAR_BOUNDARY = "near_boundary"
    NEAR_EXCLUSION = "near_exclusion"
    PASSES_EXCEEDED = "passes_exceeded"
    ZONE_COMPLETE = "zone_complete"
    INTERNAL_ERROR = "internal_error"
    SERVICE_STOPPING = "service_stopping"


class ZoneKind(str, Enum):
    TREAT = "treat"
    EXCLUSION = "exclusion"
    OFF_SURFACE = "off_surface"


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds; defaults suit 30–60 fps tracking. `ttl_ms` is what permits carry."""

    ttl_ms: int = 50
    margin_mm: float = 2.0
    max_frame_age_ms: float = 50.0  # newest frame older than this: camera stalled
    max_face_age_ms: float = 40.0  # face track older than the frame by more than this
    max_patch_age_ms: float = 40.0  # body plans: the skin patch's pose older than the frame by more than this
    # Face plans with the client's face locked: after a frame in which another face had the client's place (denied
    # other_face), the client's face found again is still denied other_face for this long. Where the other face
    # overlaps the client's, the tracker can find the client's face for a frame or two between two frames that
    # are someone else's, with the mesh half on the other face: 8-12 mm off on an evaluation face's two-face
    # session (docs/face_tracking.md, "The two-face session"). The client's track must hold, checked against the
    # client's look every frame, this long (15 checks at 30 fps) before it is trusted again.
    client_settle_ms: float = 500.0
    min_presence: float = 0.5
    min_tip_confidence: float = 0.5
    # The skin point's 1-sigma uncertainty (tip and face mapping together, mm) is added to the required
    # distance this many times.
    tip_sigma_factor: float = 1.0


@dataclass(frozen=True)
class GateInput:
    """Everything the gate needs about one frame, in the service's monotonic clock."""

    armed: bool
    t_capture_ns: int  # capture time of the frame this decision is about
    face_found: bool
    t_face_ns: int | None  # capture time of the frame the face track comes from
    presence: float
    tip_valid: bool
    tip_confidence: float
    zone: str | None
    zone_kind: ZoneKind | None
    zone_planned: bool
    boundary_mm: float | None  # signed; >0 inside the zone, <0 outside
    speed_mm_s: float | None
    pipeline_latency_ms: float  # measured capture → publish latency (e.g. running p99)
    local_passes: int = 0
    max_passes: int | None = None
    zone_complete: bool = False
    stop_at_target: bool = False
    calibration_required: bool = False
    calibration_ok: bool = True
    tip_u: float | None = None
    tip_v: float | None = None
    tip_sigma_mm: float | None = None  # 1-sigma tip uncertainty from the tracker; widens the look-ahead
    # 1-sigma uncertainty of mapping the tip's pixel onto the skin (the face under the handpiece); combined
    # with the tip's as sqrt(tip² + mapping²). None: not estimated (recordings before it existed), taken as 0.
    mapping_sigma_mm: float | None = None
    # Skin distance to the nearest atlas exclusion minus that exclusion's clinical buffer (+ clear of it);
    # None when no exclusion applies (another surface). Must reach the required distance too.
    exclusion_clearance_mm: float | None = None
    exclusion: str | None = None  # which exclusion that is
    # Scalp sessions carry the head by the head band, not the face: None for a face session (the face checks
    # apply), else the band's state this frame: "ok", "unregistered", "lost" or "moved" (anything else: lost).
    head_band: str | None = None
    # What the skin point is mapped through: "face" (the face, neck, décolletage and scalp surfaces) or "patch"
    # (a body area's skin reference patch). With "patch" the face checks give way to patch checks: the patch's
    # pose found (patch_found), measured on a frame at most max_patch_age_ms before this one (t_patch_ns), and
    # the skin point inside the area's ellipse where the patch plane is trusted (patch_in_range).
    reference: str = "face"
    # Face plans with the client's face locked: the client's face is not found but another face is (face_found
    # is then False): denied other_face rather than no_face.
    other_face: bool = False
    # Capture time of the last frame in which the client's face was not found but another face was (None: none
    # yet). A found face is denied other_face until `client_settle_ms` after it.
    t_other_face_ns: int | None = None
    patch_found: bool = False
    t_patch_ns: int | None = None
    patch_in_range: bool = False
    # Plans with neck (or, in face sessions, décolletage) zones: the neck and décolletage stand on the torso, the neck
    # twisting under the head (zones/neck_twist.py). None: not such a point (or none planned); "ok": the torso's
    # rest pose is made; anything else (not yet): denied neck_unreferenced. `twist_sigma_mm`: the twist model's 1-sigma at
    # this point, in quadrature with the tip's and the mapping's (None: 0).
    neck_torso: str | None = None
    twist_sigma_mm: float | None = None
    # Face sessions, on the neck or the décolletage: the face pose's placement error there, a 1-sigma in quadrature
    # with the others (zones/face_pose_bias.py). None elsewhere (0).
    pose_sigma_mm: float | None = None


@dataclass(frozen=True)
class GateDecision:
    permit: bool
    reason: Reason
    reasons: tuple[Reason, ...]  # every failing check, first = `reason`
    t_capture_ns: int
    t_decided_ns: int
    ttl_ms: int
    zone: str | None
    boundary_mm: float | None
    required_mm: float | None  # margin + speed × (latency + ttl); None if not computed
    speed_mm_s: float | None
    tip_u: float | None = None
    tip_v: float | None = None
    latency_ms: float | None = None
    sigma_mm: float | None = None  # the combined skin-point uncertainty the look-ahead used
    mapping_sigma_mm: float | None = None  # the face-mapping part of it (an input, kept for the record)
    exclusion_clearance_mm: float | None = None
    twist_sigma_mm: float | None = None  # the neck twist model's part of it (an input, kept for the record)
    pose_sigma_mm: float | None = None  # a face session's face-pose placement part off the mesh (an input, kept)


def _true(x: object) -> bool:
    """Only a real boolean True (Python or numpy) counts; 1, "yes" or None do not."""
    return x is True or (type(x).__name__ == "bool_" and bool(x))


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def required_distance_mm(policy: GatePolicy, speed_mm_s: float, latency_ms: float, tip_sigma_mm: float = 0.0) -> float:
    """Look-ahead: how far the tip can travel before this permit is gone, plus the margin,
    plus the tip's own uncertainty (so a shaky estimate needs more room, not less)."""
    return (policy.margin_mm + abs(speed_mm_s) * (latency_ms + policy.ttl_ms) / 1000.0
            + policy.tip_sigma_factor * tip_sigma_mm)


def combined_sigma_mm(g: GateInput) -> float:
    """The skin point's 1-sigma uncertainty: the tip's, the face mapping's, (on the neck) the twist model's and (a
    face session's neck and décolletage) the face pose's placement, independent, in quadrature.

    A missing term counts as 0 (a recording made before the term existed re-judges as it was); a NaN or a
    negative term stays NaN and denies.
    """
    tip = g.tip_sigma_mm if g.tip_sigma_mm is not None else 0.0
    mapping = g.mapping_sigma_mm if g.mapping_sigma_mm is not None else 0.0
    twist = g.twist_sigma_mm if g.twist_sigma_mm is not None else 0.0
    pose = g.pose_sigma_mm if g.pose_sigma_mm is not None else 0.0
    terms = (tip, mapping, twist, pose)
    if not all(_finite(x) and x >= 0 for x in terms):
        return math.nan
    return math.sqrt(sum(x * x for x in terms))


def _failures(p: GatePolicy, g: GateInput, now_ns: int) -> tuple[list[Reason], float | None, float]:
    fails: list[Reason] = []
    frame_age_ms = (now_ns - g.t_capture_ns) / 1e6
    latency_ms = max(g.pipeline_latency_ms, frame_age_ms) if _finite(g.pipeline_latency_ms) else math.nan
    if not _true(g.armed):
        fails.append(Reason.NOT_ARMED)
    if not (0 <= frame_age_ms <= p.max_frame_age_ms):
        fails.append(Reason.CAMERA_STALLED)
    patch = g.reference != "face"  # anything but the face reference is judged by the patch checks (fail closed)
    if patch:
        if not _true(g.patch_found):
            fails.append(Reason.PATCH_LOST)
        elif g.t_patch_ns is None or not (0 <= (g.t_capture_ns - g.t_patch_ns) / 1e6 <= p.max_patch_age_ms):
            fails.append(Reason.PATCH_STALE)
    elif g.head_band is not None:  # a scalp session: the band, registered to the face, carries the head
        if g.head_band != "ok":
            fails.append({"unregistered": Reason.BAND_UNREGISTERED, "moved": Reason.BAND_MOVED}.get(
                g.head_band, Reason.BAND_LOST))
    elif not _true(g.face_found):
        fails.append(Reason.OTHER_FACE if _true(g.other_face) else Reason.NO_FACE)
    else:
        if g.t_other_face_ns is not None and (g.t_capture_ns - g.t_other_face_ns) / 1e6 < p.client_settle_ms:
            fails.append(Reason.OTHER_FACE)  # found again just after another face had its place: not yet trusted
        if g.t_face_ns is None or not (0 <= (g.t_capture_ns - g.t_face_ns) / 1e6 <= p.max_face_age_ms):
            fails.append(Reason.FACE_STALE)
        if not (_finite(g.presence) and g.presence >= p.min_presence):
            fails.append(Reason.LOW_PRESENCE)
    if not _true(g.tip_valid):
        fails.append(Reason.TIP_LOST)
    elif not (_finite(g.tip_confidence) and g.tip_confidence >= p.min_tip_confidence):
        fails.append(Reason.TIP_LOW_CONFIDENCE)
    if g.calibration_required and not _true(g.calibration_ok):
        fails.append(Reason.CALIBRATION_MISSING)
    if g.neck_torso is not None and g.neck_torso != "ok":
        fails.append(Reason.NECK_UNREFERENCED)
    if patch and _true(g.patch_found) and g.zone is not None and not _true(g.patch_in_range):
        fails.append(Reason.PATCH_FAR)
    if g.zone is None or g.zone_kind is None or g.zone_kind == ZoneKind.OFF_SURFACE:
        fails.append(Reason.OFF_SURFACE)
    elif g.zone_kind == ZoneKind.EXCLUSION:
        fails.append(Reason.ZONE_EXCLUDED)
    elif not (g.zone_kind == ZoneKind.TREAT and _true(g.zone_planned)):
        fails.append(Reason.ZONE_NOT_PLANNED)
    required: float | None = None
    sigma = combined_sigma_mm(g)
    if _finite(g.speed_mm_s) and math.isfinite(latency_ms) and _finite(sigma) and sigma >= 0:
        required = required_distance_mm(p, g.speed_mm_s, latency_ms, sigma)  # type: ignore[arg-type]
    if not (required is not None and _finite(g.boundary_mm) and g.boundary_mm >= required):  # type: ignore[operator]
        fails.append(Reason.NEAR_BOUNDARY)
    if g.exclusion_clearance_mm is not None and not (required is not None and _finite(g.exclusion_clearance_mm)
                                                     and g.exclusion_clearance_mm >= required):
        fails.append(Reason.NEAR_EXCLUSION)
    if g.max_passes is not None and not (g.local_passes < g.max_passes):
        fails.append(Reason.PASSES_EXCEEDED)
    if g.stop_at_target and g.zone_complete:
        fails.append(Reason.ZONE_COMPLETE)
    return fails, required, latency_ms


def decide(policy: GatePolicy, g: GateInput, now_ns: int) -> GateDecision:
    """One frame's permit or deny. Pure: same inputs, same decision."""
    try:
        fails, required, latency_ms = _failures(policy, g, now_ns)
        permit = not fails
        sigma = combined_sigma_mm(g)
        return GateDecision(
            permit=permit, reason=Reason.OK if permit else fails[0], reasons=tuple(fails),
            t_capture_ns=g.t_capture_ns, t_decided_ns=now_ns, ttl_ms=policy.ttl_ms, zone=g.zone,
            boundary_mm=g.boundary_mm, required_mm=required, speed_mm_s=g.speed_mm_s,
            tip_u=g.tip_u, tip_v=g.tip_v, latency_ms=latency_ms if math.isfinite(latency_ms) else None,
            sigma_mm=sigma if math.isfinite(sigma) else None, exclusion_clearance_mm=g.exclusion_clearance_mm,
            mapping_sigma_mm=g.mapping_sigma_mm, twist_sigma_mm=g.twist_sigma_mm, pose_sigma_mm=g.pose_sigma_mm,
        )
    except Exception:  # a bug in the policy must never become a permit
        return deny(policy, Reason.INTERNAL_ERROR, t_capture_ns=getattr(g, "t_capture_ns", now_ns), now_ns=now_ns)


def deny(policy: GatePolicy, reason: Reason, *, t_capture_ns: int, now_ns: int) -> GateDecision:
    """A deny that needs no inputs (startup, shutdown, errors)."""
    t_cap = t_capture_ns if isinstance(t_capture_ns, int) and t_capture_ns >= 0 else now_ns
    return GateDecision(
        permit=False, reason=reason, reasons=(reason,), t_capture_ns=t_cap, t_decided_ns=now_ns,
        ttl_ms=policy.ttl_ms, zone=None, boundary_mm=None, required_mm=None, speed_mm_s=None,
    )


@dataclass
class LatencyTracker:
    """The pipeline latency the look-ahead uses: a high percentile of the last second's capture→publish latencies.

    A high percentile rather than the mean because the look-ahead must cover the slow frames; of the last
    `window_s` only, so one hiccup (a 538 ms stall was seen) widens the look-ahead for about a second, not for
    the next 120 frames. A stalled frame itself is denied `camera_stalled` by its age, and the gate also takes
    the frame's own age when that is larger (`_failures`).
    """

    window_s: float = 1.0
    percentile: float = 90.0
    max_samples: int = 512
    _samples: deque = field(default_factory=deque)  # (t_ns, latency_ms)

    def add(self, latency_ms: float, t_ns: int) -> None:
        if math.isfinite(latency_ms) and latency_ms >= 0:
            self._samples.append((t_ns, latency_ms))
        cutoff = t_ns - int(self.window_s * 1e9)
        while self._samples and (self._samples[0][0] < cutoff or len(self._samples) > self.max_samples):
            self._samples.popleft()

    def value_ms(self, default_ms: float = 33.0) -> float:
        if not self._samples:
            return default_ms
        return float(np.percentile([s[1] for s in self._samples], self.percentile))
