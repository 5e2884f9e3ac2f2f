"""The typed records of a session recording: one frame, one event, the session info; each writes and reads itself.

This module is the one owner of the recording's record format (docs/recording.md
is checked against it by tests/session/test_records.py). A record is a frozen
dataclass; `to_json()` gives the JSON object written to the file and
`from_json()` reads it back, both derived from the field annotations, so a new
field is one line here (plus where its value comes from, in `from_result`, and
where re-processing uses it, in `observations`) and one row in the doc.

Numbers are written at full precision (JSON floats round-trip exactly), so
re-processing a recording reproduces every decision bit for bit.

Version history (`FORMAT_VERSION`):
- 1: untyped dicts written by the live app (zone and gate distances rounded to 3 decimals; `shoulders`,
  `tip.sigma_lateral_mm` and `tip.gate_confidence` written but not documented).
- 2: these records. Read by `reader.open_session`, which reads version 1 too (`upgrade_v1_frame`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

FORMAT = "guidance-session"
FORMAT_VERSION = 2
LANDMARK_BYTES = 468 * 3 * 4

R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A JSON object that is not a valid record of its kind (the reader turns it into a warning)."""


class Record:
    """Mixin for frozen dataclasses that write and read themselves as JSON objects."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls: type[R], d: Any) -> R:
        if not isinstance(d, dict):
            raise RecordError(f"{cls.__name__}: expected an object, got {type(d).__name__}")
        klass: type = cls  # as plain `type`: mypy does not see type[R] as Hashable for the cache (python/mypy#11470)
        hints = _hints(klass)
        kw = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in d:
                kw[f.name] = _load(hints[f.name], d[f.name], f"{cls.__name__}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(f"{cls.__name__}: missing field {f.name!r}")
        out = cls(**kw)
        out.check()
        return out

    def check(self) -> None:
        """Fields that only make sense together (a record read from a file); raise RecordError naming the field."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dump(x: Any) -> Any:
    if isinstance(x, Record):
        return x.to_json()
    if isinstance(x, (tuple, list)):
        return [_dump(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _dump(v) for k, v in x.items()}
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN; a non-finite number reads back as None ("not known")
    return x


def _load(tp: Any, v: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _load(a, v, where)
            except RecordError as exc:
                errors.append(str(exc))
        raise RecordError(errors[0] if errors else f"{where}: unexpected value")
    if tp is Any:
        return v
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(v, list):
            raise RecordError(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_load(args[0], x, where) for x in v)
        if len(v) != len(args):
            raise RecordError(f"{where}: expected {len(args)} values, got {len(v)}")
        return tuple(_load(a, x, where) for a, x in zip(args, v))
    if origin is dict:
        if not isinstance(v, dict):
            raise RecordError(f"{where}: expected an object")
        return dict(v)
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_json(v)
    if tp is bool:
        if not isinstance(v, bool):
            raise RecordError(f"{where}: expected true or false")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise RecordError(f"{where}: expected an integer")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RecordError(f"{where}: expected a number")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise RecordError(f"{where}: expected text")
        return v
    raise RecordError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover - a bug in this module


# ----------------------------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class PoseRecord(Record):
    """Head pose from the landmarks (solvePnP against the canonical face)."""

    rvec: tuple[float, float, float]
    tvec_mm: tuple[float, float, float]
    reprojection_px: float
    valid: bool


@dataclass(frozen=True)
class FaceRecord(Record):
    """The face tracker's answer for the frame (landmarks themselves go to landmarks.f32)."""

    found: bool
    presence: float
    redetected: bool = False
    pose: PoseRecord | None = None
    other_faces: int = 0  # the client's face is locked and these faces seen this frame are not the client's
    client: bool = False  # a client's face is locked (then `found` is about the client's face)


@dataclass(frozen=True)
class TipRecord(Record):
    """The handpiece tip as the tracker saw it (every value the gate used, at full precision)."""

    valid: bool
    reason: str = ""
    px: tuple[float, float] | None = None  # tip pixel (what the zone lookup maps)
    mm: tuple[float, float, float] | None = None  # tip in camera millimetres
    speed_mm_s: float | None = None  # speed in the camera frame
    confidence: float = 0.0  # the tracker's own confidence
    sigma_mm: float | None = None  # 1-sigma 3D tip uncertainty
    sigma_lateral_mm: float | None = None  # 1-sigma across the line of sight: what moves the pixel
    gate_confidence: float = 0.0  # 1 / (1 + (sigma_lateral / 1.5 mm)^2), what the gate compares with 0.5
    measured_px: tuple[float, float] | None = None  # this frame's tip alone, before the tip filter
    measured_sigma_lateral_mm: float | None = None  # its lateral 1-sigma from this frame's pose fit alone
    filter_frames: int = 0  # measurements the tip filter fused, this one included (1: this frame alone)

    def check(self) -> None:
        if self.valid and self.px is None:
            raise RecordError("TipRecord.px: a valid tip needs its pixel")


@dataclass(frozen=True)
class ShoulderRecord(Record):
    """The shoulder line the décolletage's lower edge used (pose model, off the hot path)."""

    valid: bool
    reason: str
    t_capture_ns: int
    left_px: tuple[float, float] | None = None
    right_px: tuple[float, float] | None = None
    visibility: tuple[float, float] = (0.0, 0.0)
    nose_px: tuple[float, float] | None = None


@dataclass(frozen=True)
class HeadBandRecord(Record):
    """Scalp sessions: the head as the head band carried it (what the lookup and the gate used)."""

    state: str  # ok | unregistered | lost | moved: the gate's band input
    band_valid: bool = False  # the band's own pose was found this frame
    band_reason: str = ""  # why not
    registered: bool = False
    samples: int = 0  # face/band pose pairs the registration averaged ("face"), landmarks touched ("touch")
    spread_mm: float | None = None  # their RMS spread in translation ("face"), the touch fit's RMS residual ("touch")
    spread_deg: float | None = None  # and in rotation ("face")
    rvec: tuple[float, float, float] | None = None  # head -> camera from the band (state ok)
    tvec_mm: tuple[float, float, float] | None = None
    sigma_mm: float | None = None  # 1-sigma of a scalp point carried by the band
    face_used: bool = False  # a near-frontal face pose was given to the band this frame
    disagreement_mm: float | None = None  # band head vs face head, translation, when both were there
    method: str = "face"  # how the band is registered: face (the face pose) | touch (landmarks touched by the tip)
    prompt: str = ""  # while unregistered: why, or what the practitioner is asked to do (the touch to make)


@dataclass(frozen=True)
class PatchRecord(Record):
    """Body plans: the skin reference patch pose the zone lookup went through (vision/body/patch.py)."""

    found: bool
    reason: str = ""  # why there is no pose measured on this frame ("held": an earlier frame's pose, kept)
    t_capture_ns: int = 0  # capture time of the frame the pose was measured on (the gate's patch age)
    rvec: tuple[float, float, float] | None = None  # patch frame -> camera (Rodrigues)
    tvec_mm: tuple[float, float, float] | None = None
    rms_px: float | None = None
    markers: tuple[int, ...] = ()  # marker ids the pose was fitted to


@dataclass(frozen=True)
class ZoneRecord(Record):
    """Where the tip's pixel landed on the skin."""

    zone: str | None
    kind: str | None
    surface: str | None
    chart_mm: tuple[float, float] | None = None
    boundary_mm: float | None = None  # signed distance to this zone's edge; > 0 inside
    patch_distance_mm: float | None = None  # body plans: the skin point's chart distance from the patch centre
    curvature_mm: float | None = None  # body plans: the curvature part of the mapping sigma at that point


@dataclass(frozen=True)
class GateRecord(Record):
    """The gate's decision and the numbers it judged by."""

    permit: bool
    reason: str
    reasons: tuple[str, ...] = ()
    seq: int | None = None  # permit sequence number on the wire (None: nothing published)
    ttl_ms: int = 0
    boundary_mm: float | None = None  # distance to leaving the planned region (> 0 inside)
    required_mm: float | None = None  # margin + speed × (latency + ttl) + uncertainty
    latency_ms: float | None = None  # the latency the look-ahead used for this frame
    lookahead_latency_ms: float = 33.0  # the pipeline's running latency estimate at this frame
    speed_mm_s: float | None = None  # the tip's speed over the skin (chart mm/s) the look-ahead used
    sigma_mm: float | None = None  # the skin point's 1-sigma uncertainty (tip and mapping) the look-ahead used
    mapping_sigma_mm: float | None = None  # the face mapping's part of it (a gate input: re-processing reads it)
    exclusion_clearance_mm: float | None = None  # distance to the nearest exclusion beyond its buffer
    twist_sigma_mm: float | None = None  # on the neck: the twist model's part of the uncertainty
    pose_sigma_mm: float | None = None  # a face session's neck or décolletage: the face pose's placement part


@dataclass(frozen=True)
class TorsoRecord(Record):
    """Face sessions with neck zones: the torso the neck stands on (zones/neck_twist.py; re-processing reads it)."""

    ready: bool  # the rest pose is made (else a neck point is denied neck_unreferenced)
    rest_rvec: tuple[float, float, float] | None = None  # rest head frame -> camera (Rodrigues)
    rest_tvec_mm: tuple[float, float, float] | None = None
    psi_deg: float | None = None  # the head's turn since rest, about the neck's axis (this frame's face pose)
    notch_offset_mm: tuple[float, float, float] | None = None  # the touched sternal notch minus the model's (rest frame)


@dataclass(frozen=True)
class FrameRecord(Record):
    """One line of frames.jsonl: everything the hot path produced for one frame."""

    index: int
    size: tuple[int, int]
    t_capture_ns: int
    t_face_ns: int
    t_tip_ns: int
    t_zone_ns: int
    t_decided_ns: int  # the "now" the gate judged freshness against
    t_published_ns: int
    armed: bool  # the gate's armed input: armed and not paused
    face: FaceRecord
    gate: GateRecord
    tip: TipRecord | None = None
    zone: ZoneRecord | None = None
    shoulders: ShoulderRecord | None = None
    video: tuple[int, int] | None = None  # byte offset and length of the frame's JPEG in video.mjpeg
    video_skipped: bool = False  # the writer was too far behind to encode this frame's image
    landmarks: int | None = None  # record index in landmarks.f32
    recorded_gate: GateRecord | None = None  # re-processed recordings: the decision as first recorded
    head_band: HeadBandRecord | None = None  # scalp sessions only: the head as the head band carried it
    patch: PatchRecord | None = None  # body plans: the skin patch pose the lookup used
    torso: TorsoRecord | None = None  # face sessions with neck zones: the torso the neck stands on

    @property
    def latency_ms(self) -> float:
        return (self.t_published_ns - self.t_capture_ns) / 1e6


def _floats(x: Any, n: int | None = None) -> tuple | None:
    if x is None:
        return None
    out = tuple(float(v) for v in x)
    return out[:n] if n else out


def _finite_or_none(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def shoulder_record(sh: Any) -> ShoulderRecord:
    """What the décolletage limit depends on, kept so re-processing can rebuild it exactly."""
    lm = sh.landmarks
    return ShoulderRecord(valid=bool(sh.valid), reason=str(sh.reason), t_capture_ns=int(sh.t_capture_ns),
                          left_px=_floats(sh.left_px), right_px=_floats(sh.right_px),
                          visibility=_floats(sh.visibility) or (0.0, 0.0),
                          nose_px=None if lm is None else (float(lm[0][0]), float(lm[0][1])))


def head_band_record(b: Any) -> HeadBandRecord:
    """The record of a vision.face.head_band.BandHead."""
    reg = b.registration
    return HeadBandRecord(
        state=str(b.state), band_valid=bool(b.band_valid), band_reason=str(b.band_reason),
        registered=bool(reg is not None and reg.registered), samples=int(reg.samples) if reg is not None else 0,
        spread_mm=_finite_or_none(reg.spread_mm) if reg is not None else None,
        spread_deg=_finite_or_none(reg.spread_deg) if reg is not None else None,
        rvec=None if b.pose is None else _floats(b.pose.rvec),
        tvec_mm=None if b.pose is None else _floats(b.pose.t_mm),
        sigma_mm=_finite_or_none(b.sigma_mm), face_used=bool(b.face_used),
        disagreement_mm=_finite_or_none(b.disagreement_mm),
        method=str(reg.method) if reg is not None else "face",
        prompt=str(reg.reason) if reg is not None and not reg.registered else "")


def band_head(r: FrameRecord) -> Any:
    """A scalp session's head from the band as recorded, for re-processing (None: a face session)."""
    from guidance.vision.face.head_band import BandHead, Registration
    from guidance.vision.rigid import RigidPose

    b = r.head_band
    if b is None:
        return None
    pose = None if b.rvec is None or b.tvec_mm is None else RigidPose.from_rvec(np.asarray(b.rvec), np.asarray(b.tvec_mm))
    nan = float("nan")
    reg = Registration(b.registered, b.prompt, None, b.samples, nan if b.spread_mm is None else b.spread_mm,
                       nan if b.spread_deg is None else b.spread_deg, b.method)
    return BandHead(b.state, pose, b.band_valid, b.band_reason, reg, b.face_used, b.disagreement_mm, b.sigma_mm)


def zone_record(z: Any) -> ZoneRecord | None:
    """The record of a zones.mapper.ZoneLookup (None: no lookup was made)."""
    if z is None:
        return None
    return ZoneRecord(zone=z.zone, kind=z.kind, surface=z.surface, chart_mm=_floats(z.chart_mm),
                      boundary_mm=_finite_or_none(z.boundary_mm),
                      patch_distance_mm=_finite_or_none(getattr(z, "patch_distance_mm", None)),
                      curvature_mm=_finite_or_none(getattr(z, "curvature_mm", None)))


def patch_record(p: Any) -> PatchRecord:
    """The record of a vision.body.patch.PatchObservation: what re-processing needs to map through it again."""
    return PatchRecord(found=bool(p.found), reason=str(p.reason), t_capture_ns=int(p.t_capture_ns),
                       rvec=_floats(p.rvec), tvec_mm=_floats(p.tvec_mm),
                       rms_px=_finite_or_none(p.rms_px), markers=tuple(int(i) for i in p.marker_ids))


def patch_observation(r: "FrameRecord") -> Any:
    """The PatchObservation the live gate used at this frame, rebuilt from its record (None: not a body plan)."""
    from guidance.vision.body.patch import PatchObservation

    p = r.patch
    if p is None:
        return None
    return PatchObservation(r.index, p.t_capture_ns, p.found, p.reason, p.rvec, p.tvec_mm, p.rms_px, p.markers, None,
                            p.reason == "held")


def gate_record(d: Any, seq: int | None, lookahead_latency_ms: float) -> GateRecord:
    """The record of a gate.GateDecision, with the permit's wire sequence number and the look-ahead latency used."""
    return GateRecord(permit=bool(d.permit), reason=d.reason.value, reasons=tuple(r.value for r in d.reasons), seq=seq,
                      ttl_ms=int(d.ttl_ms), boundary_mm=_finite_or_none(d.boundary_mm),
                      required_mm=_finite_or_none(d.required_mm), latency_ms=_finite_or_none(d.latency_ms),
                      lookahead_latency_ms=float(lookahead_latency_ms), speed_mm_s=_finite_or_none(d.speed_mm_s),
                      sigma_mm=_finite_or_none(d.sigma_mm),
                      exclusion_clearance_mm=_finite_or_none(d.exclusion_clearance_mm),
                      mapping_sigma_mm=None if d.mapping_sigma_mm is None else float(d.mapping_sigma_mm),
                      twist_sigma_mm=_finite_or_none(getattr(d, "twist_sigma_mm", None)),
                      pose_sigma_mm=_finite_or_none(getattr(d, "pose_sigma_mm", None)))


def frame_record(result: Any, gate_confidence: float) -> FrameRecord:
    """The record of one pipeline.FrameResult (the live writer's side of the format)."""
    f, t, z, d = result.face, result.tip, result.lookup, result.decision
    pose = f.head_pose
    return FrameRecord(
        index=int(result.frame.index), size=tuple(int(v) for v in result.frame.size),  # type: ignore[arg-type]
        t_capture_ns=int(result.frame.t_capture_ns), t_face_ns=int(result.t_face_ns), t_tip_ns=int(result.t_tip_ns),
        t_zone_ns=int(result.t_zone_ns), t_decided_ns=int(result.t_decided_ns),
        t_published_ns=int(result.t_published_ns), armed=bool(result.armed),
        face=FaceRecord(found=bool(f.found), presence=float(f.presence), redetected=bool(f.redetected),
                        pose=None if pose is None else PoseRecord(
                            _floats(pose.rvec), _floats(pose.tvec_mm),  # type: ignore[arg-type]
                            float(pose.reprojection_px), bool(pose.valid)),
                        other_faces=int(getattr(f, "other_faces", 0)), client=bool(getattr(f, "client", False))),
        tip=None if t is None else TipRecord(
            valid=bool(t.valid), reason=str(t.reason), px=_floats(t.tip_px), mm=_floats(t.tip_mm),
            speed_mm_s=_finite_or_none(t.speed_mm_s), confidence=float(t.confidence),
            sigma_mm=_finite_or_none(t.tip_sigma_mm), sigma_lateral_mm=_finite_or_none(t.tip_sigma_lateral_mm),
            gate_confidence=float(gate_confidence), measured_px=_floats(getattr(t, "measured_tip_px", None)),
            measured_sigma_lateral_mm=_finite_or_none(getattr(t, "measured_sigma_lateral_mm", None)),
            filter_frames=int(getattr(t, "filter_frames", 0))),
        zone=zone_record(z),
        gate=gate_record(d, result.seq, result.lookahead_latency_ms),
        shoulders=None if result.shoulders is None else shoulder_record(result.shoulders),
        head_band=None if getattr(result, "head_band", None) is None else head_band_record(result.head_band),
        patch=None if getattr(result, "patch", None) is None else patch_record(result.patch),
        torso=None if getattr(result, "torso", None) is None else torso_record(result.torso),
    )


def torso_record(t: Any) -> TorsoRecord:
    """The record of a pipeline `TorsoState` (zones/neck_twist.py's reference, or its absence yet)."""
    ref = t.reference
    if ref is None:
        return TorsoRecord(ready=False)
    return TorsoRecord(ready=True, rest_rvec=_floats(ref.rest.rvec), rest_tvec_mm=_floats(ref.rest.t_mm),
                       psi_deg=float(np.degrees(ref.psi_rad)), notch_offset_mm=_floats(ref.notch_offset_mm))


def torso_state(r: FrameRecord) -> Any:
    """A frame's torso as recorded, for re-processing (None: the session had no neck zones)."""
    from guidance.vision.rigid import RigidPose
    from guidance.zones.neck_twist import TorsoReference, TorsoState

    t = r.torso
    if t is None:
        return None
    if not t.ready or t.rest_rvec is None or t.rest_tvec_mm is None or t.psi_deg is None:
        return TorsoState(None)
    rest = RigidPose.from_rvec(np.asarray(t.rest_rvec, float), np.asarray(t.rest_tvec_mm, float))
    return TorsoState(TorsoReference(rest, float(np.radians(t.psi_deg)), t.notch_offset_mm))


def observations(r: FrameRecord, landmarks: np.ndarray | None) -> tuple[Any, Any, Any, Any]:
    """What the live gate saw at this frame, rebuilt for re-processing: (Frame, FaceObservation,
    TipObservation or None, ShoulderObservation or None). `landmarks`: the frame's landmarks.f32 entry."""
    from guidance.vision.body.shoulders import ShoulderObservation
    from guidance.vision.capture.sources import Frame
    from guidance.vision.face.head_pose import HeadPose
    from guidance.vision.face.tracker import FaceObservation
    from guidance.vision.handpiece.tracker import TipObservation

    w, h = r.size
    frame = Frame(r.index, r.t_capture_ns, np.zeros((h, w, 3), np.uint8))
    pose = None
    if r.face.pose is not None:
        p = r.face.pose
        pose = HeadPose(np.asarray(p.rvec, float), np.asarray(p.tvec_mm, float), p.reprojection_px, False, p.valid,
                        r.t_capture_ns)
    found = r.face.found and landmarks is not None
    face = FaceObservation(r.index, r.t_capture_ns, r.t_face_ns, found, r.face.presence,
                           landmarks if found else None, landmarks if found else None, None, pose, r.face.redetected, {},
                           r.face.other_faces, r.face.client)
    tip = None
    if r.tip is not None:
        t = r.tip
        tip = TipObservation(r.index, r.t_capture_ns, t.valid, t.reason, t.px, t.mm, None, t.speed_mm_s, t.confidence,
                             t.sigma_mm, None, (), None, None, False, r.t_tip_ns, t.sigma_lateral_mm)
    sh = None
    if r.shoulders is not None:
        s = r.shoulders
        lm = None
        if s.nose_px is not None:
            lm = np.zeros((33, 3))
            lm[0, :2] = s.nose_px
        sh = ShoulderObservation(-1, s.t_capture_ns, s.t_capture_ns, s.valid, s.reason, s.left_px, s.right_px,
                                 s.visibility, landmarks=lm)
    return frame, face, tip, sh


def upgrade_v1_frame(d: dict) -> dict:
    """A version-1 frame line in version-2 terms (same fields; v1 left some out and rounded some)."""
    d = dict(d)
    g = d.get("gate")
    if isinstance(g, dict) and g.get("lookahead_latency_ms") is None:
        d["gate"] = {**g, "lookahead_latency_ms": 33.0}
    f = d.get("face")
    if isinstance(f, dict) and "redetected" not in f:
        d["face"] = {**f, "redetected": False}
    return d


# ----------------------------------------------------------------------------------------------- events


EVENT_KINDS: dict[str, type["Event"]] = {}


@dataclass(frozen=True)
class Event(Record):
    """One line of events.jsonl. `kind` names the type; `t_ns` is the service's monotonic clock."""

    KIND: ClassVar[str] = ""
    t_ns: int

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.KIND:
            EVENT_KINDS[cls.KIND] = cls

    @property
    def kind(self) -> str:
        return self.KIND

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.KIND, **super().to_json()}


@dataclass(frozen=True)
class UnknownEvent(Event):
    """An event kind this version does not know (from a newer writer): kept, shown, never judged."""

    name: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.name

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.name, "t_ns": self.t_ns, **self.data}


@dataclass(frozen=True)
class SessionStart(Event):
    KIND: ClassVar[str] = "session_start"
    version: str = ""


@dataclass(frozen=True)
class SessionEnd(Event):
    KIND: ClassVar[str] = "session_end"
    summary: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] | None = None  # re-processed recordings: what changed


@dataclass(frozen=True)
class Arm(Event):
    KIND: ClassVar[str] = "arm"
    cause: str = ""


@dataclass(frozen=True)
class Disarm(Event):
    KIND: ClassVar[str] = "disarm"
    cause: str = ""


@dataclass(frozen=True)
class Pause(Event):
    KIND: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume(Event):
    KIND: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Fault(Event):
    KIND: ClassVar[str] = "fault"
    where: str = ""
    error: str = ""


@dataclass(frozen=True)
class Link(Event):
    """A controller's link changed: connected, silent, resumed, restarted (device_bridge.events.LinkEvent)."""

    KIND: ClassVar[str] = "link"
    state: str = ""
    controller: str = ""
    detail: str = ""
    boot: str = ""
    protocol: str = ""


@dataclass(frozen=True)
class Rejected(Event):
    """Frames from the controller side the service dropped, `count` of one reject code since the last such record."""

    KIND: ClassVar[str] = "rejected"
    code: str = ""
    count: int = 1
    total: int = 1
    source: str | None = None
    t_first_ns: int = 0
    t_last_ns: int = 0
    detail: str = ""


@dataclass(frozen=True)
class KeyRefused(Event):
    """CURVE handshakes refused: a peer offered a key not on the allow-list (its fingerprint says which)."""

    KIND: ClassVar[str] = "key_refused"
    fingerprint: str = ""
    address: str = ""
    count: int = 1
    total: int = 1
    t_first_ns: int = 0
    t_last_ns: int = 0
    detail: str = ""


@dataclass(frozen=True)
class HandshakeFailed(Event):
    """CURVE handshakes that failed before a key could be judged (typically a wrong service public key)."""

    KIND: ClassVar[str] = "handshake_failed"
    socket: str = ""
    error: str = ""
    address: str = ""
    count: int = 1
    total: int = 1
    t_first_ns: int = 0
    t_last_ns: int = 0


@dataclass(frozen=True)
class ServiceStall(Event):
    """The service's own receive loop was away this long (no controller is blamed for that silence)."""

    KIND: ClassVar[str] = "service_stall"
    stalled_ms: float = 0.0


@dataclass(frozen=True)
class Note(Event):
    KIND: ClassVar[str] = "note"
    text: str = ""


@dataclass(frozen=True)
class CoverageSnapshot(Event):
    """The coverage raster as it stood at the end of the session (CoverageMap.to_dict)."""

    KIND: ClassVar[str] = "coverage"
    coverage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PulseEvent(Event):
    """A reported pulse and the service's answer (device_bridge.attribution.AttributedPulse), placed on the frames.

    `after_frame`: the frame after whose decision the pulse reached coverage, so re-processing and
    review apply it at the same point as the live app. Kinds: `pulse` (permitted: outcome coverage),
    `violation` (fired without a valid permit, or `missing`), `pulse_blocked_now` (re-processing: a
    pulse the new gate would not have permitted).
    """

    KIND: ClassVar[str] = "pulse"
    controller: str | None = None
    controller_boot: str | None = None
    pulse_seq: int | None = None
    outcome: str = "coverage"
    reason: str = "ok"
    t_ctrl_ns: int | None = None
    t_service_ns: int | None = None
    time_source: str = "none"
    permit_seq: int | None = None
    zone: str | None = None
    tip_u: float | None = None
    tip_v: float | None = None
    duration_us: int | None = None
    intensity_pct: float | None = None
    energy_mj: float | None = None
    late: bool = False
    contact: bool | None = None  # the controller's skin-contact sense (protocol 1.1); None: not reported
    after_frame: int | None = None

    @property
    def key(self) -> tuple:
        return (self.controller, self.controller_boot, self.pulse_seq)

    @property
    def lifted(self) -> bool:
        """Fired with the tip off the skin (by the controller's own contact sense)."""
        return self.contact is False

    def deposit(self, coverage: Any, electrode_diameter_mm: float) -> str:
        """The one pulse → coverage rule (live, re-processing and review all use it; docs/protocol.md §6.2).

        A permitted pulse in skin contact deposits its footprint at its chart position; a lifted pulse
        deposits nothing (no current flows without contact) and is counted apart, and so is a pulse whose
        controller did not say (protocol 1.0); a pulse with no chart position is counted as unplaced.
        Returns what happened: "deposited", "lifted", "contact_unknown" or "unplaced".
        """
        if self.lifted:
            coverage.lifted_pulses += 1
            return "lifted"
        if self.contact is None:
            coverage.contact_unknown_pulses += 1
            return "contact_unknown"
        if self.tip_u is None or self.tip_v is None:
            coverage.unplaced_pulses += 1
            return "unplaced"
        coverage.deposit_pulse(self.tip_u, self.tip_v, electrode_diameter_mm)
        return "deposited"

    @classmethod
    def from_attributed(cls, p: Any, after_frame: int | None, now_ns: int) -> "PulseEvent":
        """From an AttributedPulse: kind `pulse` for outcome coverage, else `violation`. The event's time is the
        pulse's service time, or `now_ns` for a pulse that has none (one recorded missing)."""
        target = PulseEvent if p.outcome == "coverage" else ViolationEvent
        names = {f.name for f in dataclasses.fields(target)} - {"t_ns", "after_frame"}
        kw = {n: getattr(p, n) for n in names if hasattr(p, n)}
        return target(t_ns=p.t_service_ns if p.t_service_ns is not None else now_ns, after_frame=after_frame, **kw)


@dataclass(frozen=True)
class ViolationEvent(PulseEvent):
    KIND: ClassVar[str] = "violation"


@dataclass(frozen=True)
class BlockedNowEvent(PulseEvent):
    KIND: ClassVar[str] = "pulse_blocked_now"


def bridge_event(e: Any) -> Event:
    """The record of a device_bridge.events record (`event`, `t_ns`, `record()`)."""
    return event_from_json({"kind": e.event, "t_ns": int(e.t_ns), **e.record()})


def event_from_json(d: Any) -> Event:
    """Any events.jsonl line as its typed event (an unknown kind is kept as UnknownEvent)."""
    if not isinstance(d, dict) or not isinstance(d.get("kind"), str):
        raise RecordError("event: expected an object with a 'kind'")
    cls = EVENT_KINDS.get(d["kind"])
    t_ns = d.get("t_ns")
    if not isinstance(t_ns, int) or isinstance(t_ns, bool):
        raise RecordError(f"{d['kind']}: t_ns must be an integer")
    if cls is None:
        return UnknownEvent(t_ns=t_ns, name=d["kind"], data={k: v for k, v in d.items() if k not in ("kind", "t_ns")})
    return cls.from_json({k: v for k, v in d.items() if k != "kind"})


def upgrade_v1_event(d: dict) -> dict:
    """A version-1 event line in version-2 terms.

    Version 1 had no contact sense: the service then deposited every permitted pulse, so a version-1
    pulse reads as in contact, and the coverage rebuilt from it is the coverage recorded at the time.
    """
    if d.get("kind") in ("pulse", "violation") and "contact" not in d:
        d = {**d, "contact": True}
    if d.get("kind") == "pulse" and d.get("t_service_ns") is None:
        d = {**d, "t_service_ns": d.get("t_ns")}
    return d
