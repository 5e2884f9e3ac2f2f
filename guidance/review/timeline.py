"""A recording as a timeline: per-frame series and placed events, shared by the player and the report.

Everything here is derived from the session folder alone (`open_session`),
never from the plan or profile files on disk: the plan and handpiece come from
the snapshots in info.json, so editing a plan later never changes what a
trainer sees about a past session.

Coverage at any moment is rebuilt from the recorded `pulse` events in their
recorded order, each applied after the frame named by its `after_frame` (the
same order the live app deposited them), so the player can show coverage
growing and the report's totals match the live ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from guidance.device_bridge.attribution import OutcomeLedger
from guidance.errors import UserError
from guidance.session.reader import Session, open_session
from guidance.session.records import CoverageSnapshot, Event, Link, PulseEvent
from guidance.zones.atlas import Atlas, load_atlas
from guidance.zones.coverage import CoverageMap
from guidance.zones.plan import TreatmentPlan


@dataclass(frozen=True)
class DenialEpisode:
    """A run of consecutive denied frames with the same first reason (what "next denial" jumps to)."""

    start: int
    end: int  # inclusive
    reason: str
    armed: bool  # armed during the run (a denial while disarmed is expected, not a finding)


@dataclass(frozen=True)
class PlacedEvent:
    """A recorded event placed on the frame timeline."""

    frame: int  # the frame after whose decision it happened (clamped into the recording)
    t_s: float  # seconds since the first frame's capture
    kind: str
    event: Event


@dataclass
class Timeline:
    """Per-frame series (numpy, one entry per recorded frame) and the events on them."""

    session: Session
    plan: TreatmentPlan
    electrode_diameter_mm: float
    fps: float
    t_s: np.ndarray
    permit: np.ndarray  # bool
    armed: np.ndarray  # bool: the gate's armed input (armed and not paused)
    reason: list[str]
    zone: list[str | None]
    speed_mm_s: np.ndarray  # NaN where the tip was not tracked
    boundary_mm: np.ndarray  # gate's distance to leaving the plan, NaN where none
    required_mm: np.ndarray  # margin + speed × (latency + ttl), NaN where not computed
    latency_ms: np.ndarray  # capture → publish
    stage_ms: dict[str, np.ndarray]  # face, tip, zone, gate, publish: time spent in each stage
    pulses: list[PlacedEvent]
    violations: list[PlacedEvent]
    others: list[PlacedEvent]  # arm, disarm, pause, resume, link, fault
    episodes: list[DenialEpisode]
    warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.t_s)

    @property
    def late_reports(self) -> int:
        """Pulses recorded `missing` whose report came after all (each replaced its placeholder)."""
        return sum(1 for e in self.pulses + self.violations if isinstance(e.event, PulseEvent) and e.event.late)

    @property
    def duration_s(self) -> float:
        return float(self.t_s[-1]) if self.n else 0.0

    def denied_frames_by_reason(self) -> dict[str, int]:
        """Frames denied per first reason (the live summary's `denies`), most frequent first."""
        out: dict[str, int] = {}
        for p, r in zip(self.permit, self.reason):
            if not p:
                out[r] = out.get(r, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def episodes_by_reason(self, armed_only: bool = False) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.episodes:
            if e.armed or not armed_only:
                out[e.reason] = out.get(e.reason, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def violations_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.violations:
            r = v.event.reason if isinstance(v.event, PulseEvent) else "unknown"
            out[r] = out.get(r, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def pulses_until(self, frame: int) -> int:
        """Pulses that had reached coverage once frame `frame` was decided."""
        return sum(1 for p in self.pulses if p.frame <= frame)

    def violations_until(self, frame: int) -> int:
        return sum(1 for v in self.violations if v.frame <= frame)

    def state_at(self, frame: int) -> dict[str, object]:
        """Armed / paused / controller link as the events left them by this frame."""
        st: dict[str, object] = {"armed": False, "paused": False, "link": "no controller"}
        for e in self.others:
            if e.frame > frame:
                break
            if e.kind in ("arm", "disarm"):
                st["armed"] = e.kind == "arm"
            elif e.kind in ("pause", "resume"):
                st["paused"] = e.kind == "pause"
            elif isinstance(e.event, Link):
                st["link"] = e.event.state or "link event"
        return st


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else math.nan


def _episodes(permit: np.ndarray, reason: list[str], armed: np.ndarray) -> list[DenialEpisode]:
    out: list[DenialEpisode] = []
    i, n = 0, len(permit)
    while i < n:
        if permit[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and not permit[j + 1] and reason[j + 1] == reason[i]:
            j += 1
        out.append(DenialEpisode(i, j, reason[i], bool(armed[i:j + 1].any())))
        i = j + 1
    return out


def build_timeline(session: Session, atlas: Atlas | None = None) -> Timeline:
    """Series and events of an opened recording (truncated ones too: up to the last good record)."""
    d = session.dir
    if not session.frames:
        notes = session_notes(session)
        raise UserError("the recording has no readable frames" + (f" ({notes[0]})" if notes else ""),
                        path=d / "frames.jsonl")
    plan = session.plan(atlas)
    diameter = session.electrode_diameter_mm()
    frames = session.frames
    t0 = frames[0].t_capture_ns
    t_cap = np.array([f.t_capture_ns for f in frames], np.int64)

    def stage(a: str, b: str) -> np.ndarray:
        return np.array([(_num(getattr(f, b)) - _num(getattr(f, a))) / 1e6 for f in frames])

    tl = Timeline(
        session=session, plan=plan, electrode_diameter_mm=diameter,
        fps=float(session.info.get("fps") or 30.0),
        t_s=(t_cap - t0) / 1e9,
        permit=np.array([f.gate.permit for f in frames], bool),
        armed=np.array([f.armed for f in frames], bool),
        reason=[f.gate.reason for f in frames],
        zone=[f.zone.zone if f.zone else None for f in frames],
        # the speed the look-ahead used: over the skin (format 2); format 1 recorded the camera-frame speed only
        speed_mm_s=np.array([_num(f.gate.speed_mm_s) if f.gate.speed_mm_s is not None
                             else (_num(f.tip.speed_mm_s) if f.tip and f.tip.valid else math.nan) for f in frames]),
        boundary_mm=np.array([_num(f.gate.boundary_mm) for f in frames]),
        required_mm=np.array([_num(f.gate.required_mm) for f in frames]),
        latency_ms=stage("t_capture_ns", "t_published_ns"),
        # face and tip run in parallel from the capture; the zone lookup starts when both are done
        stage_ms={"face": stage("t_capture_ns", "t_face_ns"), "tip": stage("t_capture_ns", "t_tip_ns"),
                  "zone": np.array([(_num(f.t_zone_ns) - max(_num(f.t_face_ns), _num(f.t_tip_ns))) / 1e6
                                    for f in frames]),
                  "publish": stage("t_decided_ns", "t_published_ns")},
        pulses=[], violations=[], others=[], episodes=[], warnings=list(session.warnings),
    )
    tl.episodes = _episodes(tl.permit, tl.reason, tl.armed)
    t_dec = np.array([f.t_decided_ns for f in frames], np.int64)
    n = len(frames)
    outcomes = OutcomeLedger()
    for e in session.events:
        kind = e.kind
        after = e.after_frame if isinstance(e, PulseEvent) else None
        if after is not None:  # after_frame counts frames processed, readable or not: find its place here
            k = session.position_after(after)
        else:  # place by time: the last frame decided at or before the event
            k = int(np.searchsorted(t_dec, int(e.t_ns or t0), side="right")) - 1
        k = min(max(k, 0), n - 1)  # a pulse after the last surviving frame of a cut recording still counts
        t = ((e.t_ns or t0) - t0) / 1e9
        pe = PlacedEvent(k, float(t), kind, e)
        if isinstance(e, PulseEvent) and kind in ("pulse", "violation"):
            # a late report replaces the `missing` placeholder recorded before it: the pulse counts once
            replaced = outcomes.add("coverage" if kind == "pulse" else "violation", e.reason, e.key, e.late, token=pe)
            if replaced is not None:
                assert isinstance(replaced, PlacedEvent), "the ledger hands back the token given to add()"
                tl.violations.remove(replaced)
            (tl.pulses if kind == "pulse" else tl.violations).append(pe)
        elif kind in ("arm", "disarm", "pause", "resume", "link", "fault", "rejected"):
            tl.others.append(pe)
    tl.others.sort(key=lambda e: (e.frame, e.t_s))
    return tl


def session_notes(session: Session) -> list[str]:
    """What a trainer must know before trusting the figures, at most one line each: damage, then a cut."""
    out = []
    if session.damage:
        more = len(session.damage) - 1
        out.append(f"damaged: {session.damage[0]}" + (f" (and {more} more problem(s))" if more else ""))
    cut = [w for w in session.warnings if w not in session.damage]
    if cut:
        out.append("cut off: " + "; ".join(dict.fromkeys(cut)))
    return out


def load_timeline(session_dir: str | Path, atlas: Atlas | None = None) -> Timeline:
    return build_timeline(open_session(session_dir), atlas)


class CoverageReplay:
    """Coverage as it stood after any frame, rebuilt from the recorded pulses in order.

    Moving forward deposits only the new pulses; moving back starts again from
    an empty map (a few hundred discs, milliseconds).
    """

    def __init__(self, timeline: Timeline, atlas: Atlas | None = None):
        self.tl = timeline
        self.atlas = atlas or load_atlas()
        self.applied = 0
        self.coverage = CoverageMap.for_plan(timeline.plan, self.atlas)
        self.placed: list[tuple[float, float]] = []  # chart (u, v) of placed pulses, in order

    def _reset(self) -> None:
        self.coverage = CoverageMap.for_plan(self.tl.plan, self.atlas)
        self.applied = 0
        self.placed = []

    def at(self, frame: int) -> CoverageMap:
        want = self.tl.pulses_until(frame)
        if want < self.applied:
            self._reset()
        for p in self.tl.pulses[self.applied:want]:
            ev = p.event
            assert isinstance(ev, PulseEvent)
            if ev.deposit(self.coverage, self.tl.electrode_diameter_mm) == "deposited":
                self.placed.append((float(ev.tip_u), float(ev.tip_v)))  # type: ignore[arg-type]
        self.applied = want
        return self.coverage

    def final(self) -> CoverageMap:
        return self.at(self.tl.n - 1)


def recorded_coverage(timeline: Timeline, atlas: Atlas | None = None) -> CoverageMap | None:
    """The coverage the live app saved at the end (None when the recording was cut before it)."""
    for e in reversed(timeline.session.events):
        if isinstance(e, CoverageSnapshot) and e.coverage:
            try:
                return CoverageMap.from_dict(e.coverage, atlas, source=str(timeline.session.dir))
            except (UserError, KeyError, ValueError):
                return None
    return None
