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
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from guidance.device_bridge.attribution import OutcomeLedger
from guidance.errors import UserError
from guidance.outputs import new_folder
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
    # Frames judged after an unreadable one while the skin-speed track still missed it (positions in the new
    # recording; about a second at most): not exact re-runs, so a difference there is counted apart.
    frames_after_damage: list[int] = field(default_factory=list)
    changed_after_damage: int = 0
    cut_off: bool = False  # the recording ends without a session_end (kill -9, power loss)

    def lines(self) -> list[str]:
        out = []
        if self.cut_off:
            out.append("recording was cut off (no session_end): re-processed up to its last complete frame")
        if self.damage:
            more = len(self.damage) - 1
            out.append(f"damaged: {self.damage[0]}" + (f" (and {more} more problem(s))" if more else "")
                       + "; figures below cover the readable records only")
        out.append(f"{self.frames} frames: {self.decisions_changed} decisions differ "
                   f"(permitted then {self.permitted_then}, now {self.permitted_now})")
        if self.frames_after_damage:
            out.append(f"  {len(self.frames_after_damage)} frame(s) just after unreadable ones were judged without "
                       f"their full motion history ({self.changed_after_damage} differ; not counted above)")
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
    """Re-judge a recording from its recorded observations; the new recording appears at `out_dir` whole, or not at all.

    Everything that can be wrong with the inputs (the folders, the recording, the plan, the margin) is
    checked before anything is written; the new recording is then written into a hidden folder next to
    `out_dir` and renamed into place when complete, so an error or an interruption leaves nothing behind.
    `source_name`: what `reprocessed_from.dir` names (default: the resolved folder; fleet review passes the
    URL a recording was staged from).
    """
    out_dir = new_folder(out_dir, "--output")
    if margin_mm is not None and not (isinstance(margin_mm, (int, float)) and not isinstance(margin_mm, bool)
                                      and 0 <= margin_mm < 1000):
        raise UserError("must be a number of millimetres from 0 to 1000", field="--margin")
    session = open_session(session_dir, quiet=True)
    if not session.frames:
        why = f" (damaged: {session.damage[0]})" if session.damage else ""
        raise UserError(f"the recording has no readable frames{why}", path=session.dir / "frames.jsonl")
    recorded_plan = session.plan()
    plan = load_plan(plan_path) if plan_path else recorded_plan
    if margin_mm is not None:
        plan = dataclasses.replace(plan, margin_mm=float(margin_mm))
    profile = session.profile()
    camera = session.camera()
    recorded_config = session.config()
    _check_config(recorded_config, PipelineConfig().to_json(), "config", session.dir / "info.json")
    config = PipelineConfig.from_json(recorded_config)
    config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, margin_mm=plan.margin_mm,
                                                                      ttl_ms=plan.ttl_ms), shoulder_tracking=False)
    snapshot = {"path": str(Path(plan.source).resolve()), "content": read_yaml(plan.source)} if plan_path else None
    clock = ReplayClock()
    # coverage = the real history; the recorded shoulder line is used instead of a pose model
    pipe = GuidancePipeline(plan, profile, config=config, camera=camera, clock=clock, vision=False)
    cmp = Comparison(damage=list(session.damage), cut_off=not any(e.kind == "session_end" for e in session.events))

    def judge_frame(i: int, r: rec.FrameRecord) -> tuple[rec.FrameRecord, Any]:
        lm = session.landmarks(i) if r.face.found else None
        if r.face.found and lm is None and r.landmarks is not None:
            cmp.damage.append(f"landmarks.f32 record {r.landmarks} (frame line {session.frame_numbers[i] + 1}): "
                              "unreadable")
        frame, face, tip, shoulders = rec.observations(r, lm)
        old = r.gate
        cam = camera.scaled_to(*frame.size) if camera else CameraModel.default(*frame.size)
        lookup, d, _ = pipe.judge(frame, face, tip, r.t_decided_ns, armed=r.armed,
                                  lookahead_ms=old.lookahead_latency_ms, camera=cam, shoulders=shoulders,
                                  mapping_sigma_mm=old.mapping_sigma_mm, head_band=rec.band_head(r),
                                  patch=rec.patch_observation(r), torso=rec.torso_state(r))
        pipe.count(d)
        new = dataclasses.replace(r, zone=rec.zone_record(lookup), gate=rec.gate_record(d, old.seq, old.lookahead_latency_ms),
                                  recorded_gate=old, video=None, landmarks=None)
        return new, face.landmarks if face.found else None

    info = derived_info(session, session_dir, config, source_name=source_name)
    info["reprocessed_from"].update({"plan_override": plan_path, "margin_override_mm": margin_mm,
                                     "damage": list(session.damage)})
    if snapshot is not None:
        info["plan"] = snapshot
    parent = out_dir.parent if str(out_dir.parent) else Path(".")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.part-", dir=parent))
    try:
        os.chmod(tmp, 0o755)  # an ordinary recording folder, not mkdtemp's private one
        rejudge(session, pipe, recorded_plan, tmp, info, judge_frame, cmp, clock, progress=progress)
        if out_dir.is_dir():
            out_dir.rmdir()  # an empty folder the user made for it (new_folder checked it is empty)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cmp


def _check_config(rec: Any, default: Any, where: str, path: Path) -> None:
    """The recorded pipeline configuration has the shape and types of today's (missing keys default)."""
    if isinstance(default, dict):
        if rec is None:
            return
        if not isinstance(rec, dict):
            raise UserError("expected an object", path=path, field=where)
        for k, v in default.items():
            if k in rec:
                _check_config(rec[k], v, f"{where}.{k}", path)
    elif isinstance(default, bool):
        if not isinstance(rec, bool):
            raise UserError("expected true or false", path=path, field=where)
    elif isinstance(default, (int, float)):
        if isinstance(rec, bool) or not isinstance(rec, (int, float)) or not (math.isfinite(rec) and abs(rec) <= 1e9):
            raise UserError("expected a finite number", path=path, field=where)
        if isinstance(default, int) and not isinstance(rec, int):
            raise UserError("expected an integer", path=path, field=where)
    elif isinstance(default, str) and not isinstance(rec, str):
        raise UserError("expected text", path=path, field=where)


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
    `before_end` completes before the comparison is written.
    """
    plan = pipe.plan
    profile = pipe.profile
    then_cov = CoverageMap.for_plan(recorded_plan, pipe.atlas)
    now_cov = CoverageMap.for_plan(plan, pipe.atlas)
    # Each pulse reached coverage after the frame its after_frame names (a count of frames processed,
    # readable or not): here, after the last readable frame up to that one (-1: before the first).
    pulses_after: dict[int, list[rec.PulseEvent]] = {}
    counted = OutcomeLedger()  # a late report replaces its `missing` placeholder: each pulse counted once
    for e in session.events:
        if isinstance(e, rec.PulseEvent) and e.kind in ("pulse", "violation") and e.after_frame is not None:
            pulses_after.setdefault(session.position_after(e.after_frame), []).append(e)
            counted.add("coverage" if e.kind == "pulse" else "violation", e.reason, e.key, e.late)
    cmp.pulses, cmp.violations = counted.pulses, counted.violations
    seq_to_frame = {r.gate.seq: k for k, r in enumerate(session.frames) if r.gate.seq is not None}
    readable_seqs = _readable_seq_range(session)
    new_permit: dict[int, bool] = {}

    out = SessionRecorder(out_dir, info)
    try:
        n = len(session.frames)
        for e in pulses_after.get(-1, []):  # reached coverage before the first readable frame
            _replay_pulse(e, -1, pipe, then_cov, now_cov, profile.electrode_diameter_mm, seq_to_frame, readable_seqs,
                          new_permit, cmp, out)
        incomplete = False  # the skin-speed track misses an unreadable frame (see Comparison.frames_after_damage)
        for i, r in enumerate(session.frames):
            number = session.frame_numbers[i]
            if number != (session.frame_numbers[i - 1] + 1 if i else 0):
                incomplete = True
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
            differs = (old.permit, old.reason, tuple(old.reasons)) != (g.permit, g.reason, tuple(g.reasons))
            if incomplete:
                cmp.frames_after_damage.append(i)
                cmp.changed_after_damage += differs
            elif differs:
                cmp.decisions_changed += 1
                key = f"{old.reason} -> {g.reason}"
                cmp.changes[key] = cmp.changes.get(key, 0) + 1
                cmp.changed_frames.append(i)
            if _same_speed(old.speed_mm_s, g.speed_mm_s):
                incomplete = False  # the track has forgotten the missing frame (or restarted): exact again
            out.add_frame(new, None, landmarks, jpeg=session.jpeg(i))
            for e in pulses_after.get(i, []):
                _replay_pulse(e, i, pipe, then_cov, now_cov, profile.electrode_diameter_mm, seq_to_frame, readable_seqs,
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


def _same_speed(a: float | None, b: float | None) -> bool:
    """The skin speed the live gate used and the re-run's, equal to well below any effect on a decision (its
    smoothing forgets a missing frame by a factor of about 0.6 a frame: within a second at 30 fps)."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-6


def _readable_seq_range(session: Session) -> tuple[int, int] | None:
    seqs = [r.gate.seq for r in session.frames if r.gate.seq is not None]
    return (min(seqs), max(seqs)) if seqs else None


def _replay_pulse(e: rec.PulseEvent, position: int, pipe: GuidancePipeline, then_cov: CoverageMap,
                  now_cov: CoverageMap, diameter_mm: float, seq_to_frame: dict[int, int],
                  readable: tuple[int, int] | None, new_permit: dict[int, bool], cmp: Comparison,
                  out: SessionRecorder) -> None:
    """Apply a recorded pulse: to the real history (what the gate sees), and to "now" if it would still pass.

    In the new recording it lands after frame `position` of that recording (its own numbering: the
    unreadable frames of a damaged original are not in it), or is placed by time if before its first.
    """
    e = dataclasses.replace(e, after_frame=position if position >= 0 else None)
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
