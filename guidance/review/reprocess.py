"""Re-processing a recording: the same session through today's gate, with the same or another plan.

What is re-run, and why that is exact: a recording keeps, per frame, the
vision results the live gate saw (face landmarks and presence, head pose, the
tip's pixel position, speed and confidence, all at full precision), the time
the gate judged freshness against, the armed state and the look-ahead latency
it used, and after which frame each pulse report landed. Zone mapping, the
gate and coverage are deterministic functions of those, so re-running them with
the recorded plan reproduces every decision exactly, and re-running them with
another plan or margin answers "what if". (Re-running the vision models on the
recorded video would not be exact: the video is stored as JPEG.)

Pulses were fired in reality; what changes is whether each would have been
permitted. Each frame is judged as the new gate would have judged it *at that
moment of the real session*: the passes and zone-complete checks see the
treatment that had really been delivered by then. So a wider margin can only
add denials, never remove one. A pulse fired under a permit that the new gate
would have denied is "would be blocked", and "coverage now" leaves it out. A
pulse recorded as a violation stays a violation.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from guidance.device_bridge.attribution import OutcomeLedger
from guidance.errors import UserError
from guidance.pipeline import GuidancePipeline, shoulders_from_record
from guidance.session.recording import Session, SessionRecorder, open_session, write_json_atomic
from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.tracker import FaceObservation
from guidance.vision.face.head_pose import HeadPose
from guidance.vision.handpiece.tracker import TipObservation
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.vision.capture.sources import Frame
from guidance.zones.coverage import CoverageMap
from guidance.zones.plan import TreatmentPlan, load_plan, parse_plan


@dataclass
class Comparison:
    frames: int = 0
    decisions_changed: int = 0
    changes: dict[str, int] = field(default_factory=dict)  # "old_reason -> new_reason": count
    permitted_then: int = 0
    permitted_now: int = 0
    denied_now_by_reason: dict[str, int] = field(default_factory=dict)
    pulses: int = 0
    pulses_blocked_now: list[dict] = field(default_factory=list)
    violations: int = 0
    violations_permitted_now: list[dict] = field(default_factory=list)
    coverage_then: dict[str, float] = field(default_factory=dict)
    coverage_now: dict[str, float] = field(default_factory=dict)
    changed_frames: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.frames} frames: {self.decisions_changed} decisions differ "
               f"(permitted then {self.permitted_then}, now {self.permitted_now})"]
        for k, v in sorted(self.changes.items(), key=lambda kv: -kv[1])[:8]:
            out.append(f"  {k}: {v}")
        out.append(f"pulses: {self.pulses} delivered, {len(self.pulses_blocked_now)} would now be blocked; "
                   f"violations: {self.violations}, {len(self.violations_permitted_now)} would now have been permitted")
        zones = sorted(set(self.coverage_then) | set(self.coverage_now))
        cov = ", ".join(f"{z} {100 * self.coverage_then.get(z, 0):.0f}%→{100 * self.coverage_now.get(z, 0):.0f}%"
                        for z in zones if self.coverage_then.get(z, 0) or self.coverage_now.get(z, 0))
        out.append(f"coverage at target then→now: {cov or 'none'}")
        return out


def _plan_from_snapshot(session: Session) -> TreatmentPlan:
    snap = session.info.get("plan") or {}
    if "content" not in snap:
        raise UserError("recording has no plan snapshot", path=session.dir / "info.json", field="plan")
    return parse_plan(snap["content"], snap.get("path", session.dir / "info.json"))


def _profile_from_snapshot(session: Session):
    snap = session.info.get("handpiece") or {}
    if "content" not in snap:
        raise UserError("recording has no handpiece snapshot", path=session.dir / "info.json", field="handpiece")
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "handpiece.yaml"
        p.write_text(yaml.safe_dump(snap["content"]))
        return load_handpiece_profile(p)


def _camera(session: Session) -> CameraModel | None:
    cam = session.info.get("camera") or {}
    if not cam.get("calibrated"):
        return None
    return CameraModel(K=np.asarray(cam["camera_matrix"], float), dist=np.asarray(cam["dist_coeffs"], float),
                       size=tuple(cam["image_size"]), calibrated=True, rms_px=cam.get("rms_px"), source="recording")


def observations(session: Session, i: int) -> tuple[Frame, FaceObservation, TipObservation | None]:
    """Rebuild what the live gate saw at frame i from the recording."""
    r = session.frames[i]
    size = tuple(r.get("size") or (640, 480))
    frame = Frame(r["index"], r["t_capture_ns"], np.zeros((size[1], size[0], 3), np.uint8))
    f = r["face"]
    lm = session.landmarks(i) if f["found"] else None
    pose = None
    if f.get("pose"):
        p = f["pose"]
        pose = HeadPose(np.asarray(p["rvec"], float), np.asarray(p["tvec_mm"], float),
                        float(p.get("reprojection_px", 0.0)), False, bool(p["valid"]), r["t_capture_ns"])
    found = bool(f["found"]) and lm is not None
    face = FaceObservation(r["index"], r["t_capture_ns"], r.get("t_face_ns", r["t_capture_ns"]), found,
                           float(f["presence"]), lm, lm, None, pose, bool(f.get("redetected")), {})
    tip = None
    t = r.get("tip")
    if t is not None:
        tip = TipObservation(r["index"], r["t_capture_ns"], bool(t["valid"]), t.get("reason", ""),
                             tuple(t["px"]) if t.get("px") else None, tuple(t["mm"]) if t.get("mm") else None,
                             None, t.get("speed_mm_s"), float(t.get("confidence", 0.0)), t.get("sigma_mm"), None, (), None, None,
                             False, r.get("t_tip_ns", 0), t.get("sigma_lateral_mm"))
    return frame, face, tip


def reprocess(session_dir: str | Path, out_dir: str | Path, *, plan_path: str | None = None,
              margin_mm: float | None = None, progress=None) -> Comparison:
    session = open_session(session_dir)
    plan = load_plan(plan_path) if plan_path else _plan_from_snapshot(session)
    if margin_mm is not None:
        if not margin_mm >= 0:
            raise UserError("must be a non-negative number of millimetres", field="--margin")
        plan = dataclasses.replace(plan, margin_mm=float(margin_mm))
    profile = _profile_from_snapshot(session)
    camera = _camera(session)
    clock_now = [0]
    pipe = GuidancePipeline(plan, profile, camera=camera, clock=lambda: clock_now[0],  # coverage = real history
                            shoulder_tracking=False)  # the recorded shoulder line is used instead
    then_cov = CoverageMap.for_plan(_plan_from_snapshot(session), pipe.atlas)
    now_cov = CoverageMap.for_plan(plan, pipe.atlas)
    pulses_after: dict[int, list[dict]] = {}
    cmp = Comparison()
    counted = OutcomeLedger()  # a late report replaces its `missing` placeholder: each pulse counted once
    for e in session.events:
        if e.get("kind") in ("pulse", "violation") and e.get("after_frame") is not None:
            pulses_after.setdefault(int(e["after_frame"]), []).append(e)
            counted.add("coverage" if e["kind"] == "pulse" else "violation", e.get("reason"),
                        (e.get("controller"), e.get("controller_boot"), e.get("pulse_seq")), bool(e.get("late")))
    cmp.pulses, cmp.violations = counted.pulses, counted.violations
    seq_to_frame = {r["gate"]["seq"]: k for k, r in enumerate(session.frames) if r["gate"].get("seq") is not None}
    new_permit: dict[int, bool] = {}

    info = dict(session.info)
    for k in ("format", "format_version", "session_id", "started_wall", "t0_ns", "software"):
        info.pop(k, None)
    info["reprocessed_from"] = {"dir": str(Path(session_dir).resolve()), "session_id": session.info.get("session_id"),
                                "plan_override": plan_path, "margin_override_mm": margin_mm}
    if plan_path:
        info["plan"] = {"path": str(Path(plan.source).resolve()), "content": yaml.safe_load(Path(plan.source).read_text())}
    if margin_mm is not None:
        info.setdefault("gate", {})["margin_mm"] = float(margin_mm)
    rec = SessionRecorder(out_dir, info)
    try:
        n = len(session.frames)
        for i, r in enumerate(session.frames):
            frame, face, tip = observations(session, i)
            old = r["gate"]
            clock_now[0] = r["t_decided_ns"]
            pipe._armed_input = bool(r["armed"])
            pipe._lookahead_ms = float(old.get("lookahead_latency_ms", 33.0))
            cam = camera.scaled_to(*frame.size) if camera else CameraModel.default(*frame.size)
            lookup, d, _ = pipe.judge(frame, face, tip, r["t_decided_ns"], cam, shoulders=shoulders_from_record(r.get("shoulders")))
            pipe.count(d)
            new_permit[i] = d.permit
            cmp.frames += 1
            cmp.permitted_then += bool(old["permit"])
            cmp.permitted_now += d.permit
            if not d.permit:
                cmp.denied_now_by_reason[d.reason.value] = cmp.denied_now_by_reason.get(d.reason.value, 0) + 1
            if (old["permit"], old["reason"], tuple(old["reasons"])) != (d.permit, d.reason.value, tuple(x.value for x in d.reasons)):
                cmp.decisions_changed += 1
                key = f"{old['reason']} -> {d.reason.value}"
                cmp.changes[key] = cmp.changes.get(key, 0) + 1
                cmp.changed_frames.append(i)
            new_rec = dict(r)
            new_rec.pop("video", None)
            new_rec.pop("landmarks", None)
            new_rec["zone"] = None if lookup is None else {
                "zone": lookup.zone, "kind": lookup.kind, "surface": lookup.surface,
                "chart_mm": None if lookup.chart_mm is None else [float(v) for v in lookup.chart_mm],
                "boundary_mm": None if lookup.boundary_mm is None or not np.isfinite(lookup.boundary_mm) else float(lookup.boundary_mm)}
            new_rec["gate"] = {**old, "permit": d.permit, "reason": d.reason.value,
                               "reasons": [x.value for x in d.reasons],
                               "boundary_mm": None if d.boundary_mm is None or not np.isfinite(d.boundary_mm) else float(d.boundary_mm),
                               "required_mm": d.required_mm}
            new_rec["recorded_gate"] = {"permit": old["permit"], "reason": old["reason"]}
            rec.add_frame(new_rec, None, face.landmarks if face.found else None, jpeg=session.jpeg(i))
            for e in pulses_after.get(i, []):
                _replay_pulse(e, pipe, then_cov, now_cov, profile.electrode_diameter_mm, seq_to_frame, new_permit, cmp, rec)
            if progress:
                progress(i + 1, n)
        for e in session.events:
            if e.get("kind") not in ("pulse", "violation", "coverage", "session_end"):
                rec.add_event(e["kind"], e.get("t_ns"), **{k: v for k, v in e.items() if k not in ("kind", "t_ns")})
        cmp.coverage_then = {z: then_cov.zone(z).fraction_at_target for z in then_cov.targets}
        cmp.coverage_now = {z: now_cov.zone(z).fraction_at_target for z in plan.zones}
        rec.add_event("coverage", coverage=now_cov.to_dict())
        rec.add_event("session_end", comparison=dataclasses.asdict(cmp))
    finally:
        rec.close()
    write_json_atomic(Path(out_dir) / "comparison.json", dataclasses.asdict(cmp))
    return cmp


def _replay_pulse(e: dict, pipe: GuidancePipeline, then_cov: CoverageMap, now_cov: CoverageMap, diameter_mm: float,
                  seq_to_frame: dict[int, int], new_permit: dict[int, bool], cmp: Comparison, rec: SessionRecorder) -> None:
    """Apply a recorded pulse: to the real history (what the gate sees), and to "now" if it would still pass."""
    fields = {k: v for k, v in e.items() if k not in ("kind", "t_ns")}
    frame = seq_to_frame.get(e.get("permit_seq"))
    permitted_now = frame is not None and new_permit.get(frame, False)
    placed = e.get("tip_u") is not None and e.get("tip_v") is not None
    if e["kind"] == "pulse":
        for cov in (pipe.coverage, then_cov) + ((now_cov,) if permitted_now else ()):
            if placed:
                cov.deposit_pulse(e["tip_u"], e["tip_v"], diameter_mm)
            else:
                cov.unplaced_pulses += 1
        pipe.refresh_completion()
        if permitted_now:
            rec.add_event("pulse", e.get("t_ns"), **fields)
        else:
            cmp.pulses_blocked_now.append({"pulse_seq": e.get("pulse_seq"), "permit_seq": e.get("permit_seq"),
                                           "frame": frame, "zone": e.get("zone")})
            rec.add_event("pulse_blocked_now", e.get("t_ns"), **fields)
    else:
        if permitted_now:
            cmp.violations_permitted_now.append({"pulse_seq": e.get("pulse_seq"), "reason": e.get("reason"),
                                                 "frame": frame})
        rec.add_event("violation", e.get("t_ns"), **fields)
