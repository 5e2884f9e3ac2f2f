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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from guidance.device_bridge.attribution import OutcomeLedger
from guidance.errors import UserError
from guidance.pipeline import GuidancePipeline, PipelineConfig
from guidance.session import records as rec
from guidance.session.reader import Session, open_session
from guidance.session.writer import SessionRecorder, write_json_atomic
from guidance.vision.capture.camera import CameraModel
from guidance.yamlfile import read_yaml
from guidance.zones.coverage import CoverageMap
from guidance.zones.plan import load_plan


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
    # Pulses whose permit's frame record could not be read (a damaged recording): neither kept nor blocked.
    pulses_unjudged: list[dict] = field(default_factory=list)
    violations: int = 0
    violations_permitted_now: list[dict] = field(default_factory=list)
    coverage_then: dict[str, float] = field(default_factory=dict)
    coverage_now: dict[str, float] = field(default_factory=dict)
    changed_frames: list[int] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)  # what the reader could not read (see Session.damage)
    cut_off: bool = False  # the recording ends without a session_end (kill -9, power loss)

    def lines(self) -> list[str]:
        out = []
        if self.cut_off:
            out.append("recording was cut off (no session_end): re-processed up to its last complete frame")
        if self.damage:
            out.append(f"recording damaged ({len(self.damage)} problem(s), first: {self.damage[0]}); "
                       "figures below cover the readable records only")
        out.append(f"{self.frames} frames: {self.decisions_changed} decisions differ "
                   f"(permitted then {self.permitted_then}, now {self.permitted_now})")
        for k, v in sorted(self.changes.items(), key=lambda kv: -kv[1])[:8]:
            out.append(f"  {k}: {v}")
        out.append(f"pulses: {self.pulses} delivered, {len(self.pulses_blocked_now)} would now be blocked"
                   + (f", {len(self.pulses_unjudged)} not judged (their permit's frame is unreadable)"
                      if self.pulses_unjudged else "")
                   + f"; violations: {self.violations}, {len(self.violations_permitted_now)} would now have been permitted")
        zones = sorted(set(self.coverage_then) | set(self.coverage_now))
        cov = ", ".join(f"{z} {100 * self.coverage_then.get(z, 0):.0f}%→{100 * self.coverage_now.get(z, 0):.0f}%"
                        for z in zones if self.coverage_then.get(z, 0) or self.coverage_now.get(z, 0))
        out.append(f"coverage at target then→now: {cov or 'none'}")
        return out


class ReplayClock:
    """The pipeline's clock while re-judging: the recorded "now" of the frame being judged (`now_ns`)."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


# judge_frame(i, record) -> (the new frame record, its landmarks or None): one frame of a re-judging
FrameJudge = Callable[[int, rec.FrameRecord], tuple[rec.FrameRecord, Any]]


def reprocess(session_dir: str | Path, out_dir: str | Path, *, plan_path: str | None = None,
              margin_mm: float | None = None, progress=None, source_name: str | None = None) -> Comparison:
    """Re-judge a recording from its recorded observations into a new recording `out_dir` (+ comparison.json).

    `source_name`: what `reprocessed_from.dir` names (default: the resolved folder; fleet review passes the
    URL a recording was staged from)."""
    session = open_session(session_dir, quiet=True)
    if not session.frames:
        raise UserError("the recording has no readable frames", path=session.dir / "frames.jsonl")
    recorded_plan = session.plan()
    plan = load_plan(plan_path) if plan_path else recorded_plan
    if margin_mm is not None:
        if not (isinstance(margin_mm, (int, float)) and 0 <= margin_mm < 1000):
            raise UserError("must be a number of millimetres from 0 to 1000", field="--margin")
        plan = dataclasses.replace(plan, margin_mm=float(margin_mm))
    profile = session.profile()
    camera = session.camera()
    config = PipelineConfig.from_json(session.config())
    config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, margin_mm=plan.margin_mm,
                                                                      ttl_ms=plan.ttl_ms), shoulder_tracking=False)
    clock = ReplayClock()
    # coverage = the real history; the recorded shoulder line is used instead of a pose model
    pipe = GuidancePipeline(plan, profile, config=config, camera=camera, clock=clock, vision=False)

    def judge_frame(i: int, r: rec.FrameRecord) -> tuple[rec.FrameRecord, Any]:
        frame, face, tip, shoulders = rec.observations(r, session.landmarks(i) if r.face.found else None)
        old = r.gate
        cam = camera.scaled_to(*frame.size) if camera else CameraModel.default(*frame.size)
        lookup, d, _ = pipe.judge(frame, face, tip, r.t_decided_ns, armed=r.armed,
                                  lookahead_ms=old.lookahead_latency_ms, camera=cam, shoulders=shoulders,
                                  mapping_sigma_mm=old.mapping_sigma_mm, patch=rec.patch_observation(r))
        pipe.count(d)
        new = dataclasses.replace(r, zone=rec.zone_record(lookup), gate=rec.gate_record(d, old.seq, old.lookahead_latency_ms),
                                  recorded_gate=old, video=None, landmarks=None)
        return new, face.landmarks if face.found else None

    info = derived_info(session, session_dir, config, source_name=source_name)
    info["reprocessed_from"].update({"plan_override": plan_path, "margin_override_mm": margin_mm,
                                     "damage": list(session.damage)})
    if plan_path:
        info["plan"] = {"path": str(Path(plan.source).resolve()), "content": read_yaml(plan.source)}
    cmp = Comparison(damage=list(session.damage), cut_off=not any(e.kind == "session_end" for e in session.events))
    return rejudge(session, pipe, recorded_plan, out_dir, info, judge_frame, cmp, clock, progress=progress)


def derived_info(session: Session, session_dir: str | Path, config: PipelineConfig, *,
                 source_name: str | None = None) -> dict:
    """info.json of a recording derived from `session`: its snapshots, less what names the original writing,
    with `reprocessed_from` and the configuration the new decisions were made with."""
    info = dict(session.info)
    for k in ("format", "format_version", "session_id", "started_wall", "t0_ns", "software"):
        info.pop(k, None)
    info["reprocessed_from"] = {"dir": source_name or str(Path(session_dir).resolve()),
                                "session_id": session.info.get("session_id")}
    info["config"] = config.to_json()
    return info


def rejudge(session: Session, pipe: GuidancePipeline, recorded_plan: Any, out_dir: str | Path, info: dict,
            judge_frame: FrameJudge, cmp: Comparison, clock: ReplayClock, *, progress=None,
            before_end: Callable[[], None] | None = None) -> Comparison:
    """The loop every re-judging shares (reprocess, fleet retrack): each frame judged by `judge_frame` at its
    recorded "now", the recorded pulses applied after the frame they landed after (to the real history the
    gate sees, and to "now" if the new decision still permits them), a new recording and comparison.json.

    `pipe`'s plan and coverage are the new plan's; `cmp` may be a subclass carrying more (fleet retrack), which
    `before_end` completes before the comparison is written."""
    plan = pipe.plan
    profile = pipe.profile
    then_cov = CoverageMap.for_plan(recorded_plan, pipe.atlas)
    now_cov = CoverageMap.for_plan(plan, pipe.atlas)
    pulses_after: dict[int, list[rec.PulseEvent]] = {}
    counted = OutcomeLedger()  # a late report replaces its `missing` placeholder: each pulse counted once
    for e in session.events:
        if isinstance(e, rec.PulseEvent) and e.kind in ("pulse", "violation") and e.after_frame is not None:
            pulses_after.setdefault(e.after_frame, []).append(e)
            counted.add("coverage" if e.kind == "pulse" else "violation", e.reason, e.key, e.late)
    cmp.pulses, cmp.violations = counted.pulses, counted.violations
    seq_to_frame = {r.gate.seq: k for k, r in enumerate(session.frames) if r.gate.seq is not None}
    readable_seqs = _readable_seq_range(session)
    new_permit: dict[int, bool] = {}

    out = SessionRecorder(out_dir, info)
    try:
        n = len(session.frames)
        for i, r in enumerate(session.frames):
            old = r.gate
            clock.now_ns = r.t_decided_ns
            new, landmarks = judge_frame(i, r)
            g = new.gate
            new_permit[i] = g.permit
            cmp.frames += 1
            cmp.permitted_then += old.permit
            cmp.permitted_now += g.permit
            if not g.permit:
                cmp.denied_now_by_reason[g.reason] = cmp.denied_now_by_reason.get(g.reason, 0) + 1
            if (old.permit, old.reason, tuple(old.reasons)) != (g.permit, g.reason, tuple(g.reasons)):
                cmp.decisions_changed += 1
                key = f"{old.reason} -> {g.reason}"
                cmp.changes[key] = cmp.changes.get(key, 0) + 1
                cmp.changed_frames.append(i)
            out.add_frame(new, None, landmarks, jpeg=session.jpeg(i))
            for e in pulses_after.get(i, []):
                _replay_pulse(e, pipe, then_cov, now_cov, profile.electrode_diameter_mm, seq_to_frame, readable_seqs,
                              new_permit, cmp, out)
            if progress:
                progress(i + 1, n)
        for e in session.events:
            if e.kind not in ("pulse", "violation", "coverage", "session_end"):
                out.add_event(e)
        cmp.coverage_then = {z: then_cov.zone(z).fraction_at_target for z in then_cov.targets}
        cmp.coverage_now = {z: now_cov.zone(z).fraction_at_target for z in plan.zones}
        if before_end is not None:
            before_end()
        out.add_event(rec.CoverageSnapshot(session.frames[-1].t_published_ns, coverage=now_cov.to_dict()))
        out.add_event(rec.SessionEnd(session.frames[-1].t_published_ns, comparison=dataclasses.asdict(cmp)))
    finally:
        out.close()
    write_json_atomic(Path(out_dir) / "comparison.json", dataclasses.asdict(cmp))
    return cmp


def _readable_seq_range(session: Session) -> tuple[int, int] | None:
    seqs = [r.gate.seq for r in session.frames if r.gate.seq is not None]
    return (min(seqs), max(seqs)) if seqs else None


def _replay_pulse(e: rec.PulseEvent, pipe: GuidancePipeline, then_cov: CoverageMap, now_cov: CoverageMap,
                  diameter_mm: float, seq_to_frame: dict[int, int], readable: tuple[int, int] | None,
                  new_permit: dict[int, bool], cmp: Comparison, out: SessionRecorder) -> None:
    """Apply a recorded pulse: to the real history (what the gate sees), and to "now" if it would still pass."""
    frame = seq_to_frame.get(e.permit_seq) if e.permit_seq is not None else None
    permitted_now = frame is not None and new_permit.get(frame, False)
    if e.kind == "pulse":
        for cov in (pipe.coverage, then_cov):
            e.deposit(cov, diameter_mm)
        pipe.refresh_completion()
        if frame is None and e.permit_seq is not None and readable is not None and cmp.damage:
            # its permit's frame record is unreadable: what the new gate would say is unknown, not "blocked"
            cmp.pulses_unjudged.append({"pulse_seq": e.pulse_seq, "permit_seq": e.permit_seq, "zone": e.zone})
            e.deposit(now_cov, diameter_mm)
            out.add_event(e)
        elif permitted_now:
            e.deposit(now_cov, diameter_mm)
            out.add_event(e)
        else:
            cmp.pulses_blocked_now.append({"pulse_seq": e.pulse_seq, "permit_seq": e.permit_seq,
                                           "frame": frame, "zone": e.zone})
            fields = {k: v for k, v in e.to_json().items() if k != "kind"}
            out.add_event(rec.BlockedNowEvent.from_json(fields))
    else:
        if permitted_now:
            cmp.violations_permitted_now.append({"pulse_seq": e.pulse_seq, "reason": e.reason, "frame": frame})
        out.add_event(e)
