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
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from guidance.errors import UserError
from guidance.device_bridge.attribution import OutcomeLedger
from guidance.session.recording import Session, open_session
from guidance.zones.atlas import Atlas, load_atlas
from guidance.zones.coverage import CoverageMap
from guidance.zones.plan import TreatmentPlan, parse_plan


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
    data: dict


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
        return sum(1 for e in self.pulses + self.violations if e.data.get("late"))

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
            r = str(v.data.get("reason", "unknown"))
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
            elif e.kind == "link":
                # the live app's LinkEvent.kind cannot be stored under "kind" (that is the event's); accept the
                # names it may use instead
                st["link"] = str(next((e.data[k] for k in ("state", "link", "link_kind", "event") if e.data.get(k)),
                                      "link event"))
        return st


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else math.nan


def snapshot_plan(info: dict, session_dir: Path, atlas: Atlas | None = None) -> TreatmentPlan:
    """The plan exactly as recorded (info.json's snapshot), not as the plan file reads today.

    `parse_plan` insists the plan's handpiece profile exists; when the original
    file has moved since, the recorded handpiece snapshot stands in for it.
    """
    snap = info.get("plan")
    if not isinstance(snap, dict) or not isinstance(snap.get("content"), dict):
        raise UserError("no plan snapshot in the recording", path=session_dir / "info.json", field="plan.content")
    plan_path = Path(str(snap.get("path") or session_dir / "plan.yaml"))
    try:
        return parse_plan(snap["content"], plan_path, atlas)
    except UserError as exc:
        if exc.field != "handpiece_profile":
            raise UserError(f"recorded plan is invalid: {exc}", path=session_dir / "info.json",
                            field="plan.content") from None
    hp = (info.get("handpiece") or {}).get("content")
    if not isinstance(hp, dict):
        raise UserError("no handpiece snapshot in the recording", path=session_dir / "info.json",
                        field="handpiece.content")
    with tempfile.TemporaryDirectory(prefix="guidance-review-") as tmp:
        (Path(tmp) / "handpiece.yaml").write_text(yaml.safe_dump(hp))
        data = {**snap["content"], "handpiece_profile": "handpiece.yaml"}
        return parse_plan(data, Path(tmp) / "plan.yaml", atlas)


def electrode_diameter(info: dict, session_dir: Path) -> float:
    try:
        d = float(info["handpiece"]["content"]["electrode_diameter_mm"])
    except (KeyError, TypeError, ValueError):
        raise UserError("no electrode diameter in the recorded handpiece", path=session_dir / "info.json",
                        field="handpiece.content.electrode_diameter_mm") from None
    if not d > 0:
        raise UserError("electrode diameter must be positive", path=session_dir / "info.json",
                        field="handpiece.content.electrode_diameter_mm")
    return d


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
        raise UserError("the recording has no frames", path=d / "frames.jsonl")
    plan = snapshot_plan(session.info, d, atlas)
    diameter = electrode_diameter(session.info, d)
    frames = session.frames
    t0 = frames[0]["t_capture_ns"]
    t_cap = np.array([f["t_capture_ns"] for f in frames], np.int64)
    gate = [f.get("gate") or {} for f in frames]
    tip = [f.get("tip") or {} for f in frames]

    def stage(a: str, b: str) -> np.ndarray:
        return np.array([(_num(f.get(b)) - _num(f.get(a))) / 1e6 for f in frames])

    tl = Timeline(
        session=session, plan=plan, electrode_diameter_mm=diameter,
        fps=float(session.info.get("fps") or 30.0),
        t_s=(t_cap - t0) / 1e9,
        permit=np.array([g.get("permit") is True for g in gate]),
        armed=np.array([f.get("armed") is True for f in frames]),
        reason=[str(g.get("reason", "unknown")) for g in gate],
        zone=[(f.get("zone") or {}).get("zone") for f in frames],
        speed_mm_s=np.array([_num(t.get("speed_mm_s")) if t.get("valid") else math.nan for t in tip]),
        boundary_mm=np.array([_num(g.get("boundary_mm")) for g in gate]),
        required_mm=np.array([_num(g.get("required_mm")) for g in gate]),
        latency_ms=stage("t_capture_ns", "t_published_ns"),
        stage_ms={"face": stage("t_capture_ns", "t_face_ns"), "tip": stage("t_face_ns", "t_tip_ns"),
                  "zone": stage("t_tip_ns", "t_zone_ns"), "publish": stage("t_decided_ns", "t_published_ns")},
        pulses=[], violations=[], others=[], episodes=[], warnings=list(session.warnings),
    )
    tl.episodes = _episodes(tl.permit, tl.reason, tl.armed)
    t_dec = np.array([f.get("t_decided_ns", f["t_capture_ns"]) for f in frames], np.int64)
    n = len(frames)
    outcomes = OutcomeLedger()
    for e in session.events:
        kind = e.get("kind")
        if "after_frame" in e and isinstance(e["after_frame"], int):
            k = e["after_frame"]
        else:  # place by time: the last frame decided at or before the event
            k = int(np.searchsorted(t_dec, int(e.get("t_ns") or t0), side="right")) - 1
        k = min(max(k, 0), n - 1)  # a pulse after the last surviving frame of a cut recording still counts
        t = ((e.get("t_ns") or t0) - t0) / 1e9
        pe = PlacedEvent(k, float(t), str(kind), e)
        if kind in ("pulse", "violation"):
            # a late report replaces the `missing` placeholder recorded before it: the pulse counts once
            replaced = outcomes.add("coverage" if kind == "pulse" else "violation", e.get("reason"),
                                    (e.get("controller"), e.get("controller_boot"), e.get("pulse_seq")),
                                    bool(e.get("late")), token=pe)
            if replaced is not None:
                tl.violations.remove(replaced)
            (tl.pulses if kind == "pulse" else tl.violations).append(pe)
        elif kind in ("arm", "disarm", "pause", "resume", "link", "fault"):
            tl.others.append(pe)
    tl.others.sort(key=lambda e: (e.frame, e.t_s))
    return tl


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
            u, v = p.data.get("tip_u"), p.data.get("tip_v")
            if isinstance(u, (int, float)) and isinstance(v, (int, float)):
                self.coverage.deposit_pulse(float(u), float(v), self.tl.electrode_diameter_mm)
                self.placed.append((float(u), float(v)))
            else:
                self.coverage.unplaced_pulses += 1
        self.applied = want
        return self.coverage

    def final(self) -> CoverageMap:
        return self.at(self.tl.n - 1)


def recorded_coverage(timeline: Timeline, atlas: Atlas | None = None) -> CoverageMap | None:
    """The coverage the live app saved at the end (None when the recording was cut before it)."""
    for e in reversed(timeline.session.events):
        if e.get("kind") == "coverage" and isinstance(e.get("coverage"), dict):
            try:
                return CoverageMap.from_dict(e["coverage"], atlas, source=str(timeline.session.dir))
            except (UserError, KeyError, ValueError):
                return None
    return None
