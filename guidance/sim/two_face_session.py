"""The two-face session: a face session in which a second person's face enters, passes in front of the client's
and leaves, run and judged as the scalp, neck and body sessions are.

The handpiece path is simulated on a client's face video (`guidance simulate`; by default an evaluation face,
guidance/data/face_sets.yaml), a second face is slid across it (`sim/second_face.py`: beside the client, in front of
the client's face, out the other side), then the usual chain runs: the controller simulator, `guidance run` in real
time (recording, overlay, CURVE permits), the report, and the check against the simulation's truth. The figures are
the other sessions' (permits and pulses outside the plan or on an exclusion, tip chart error in contact, coverage,
usable-frame permit share), and the same split by where the second face is: out of the picture, in it beside the
client, or covering the client's face (more than `COVERED_SHARE` of its box). As in a clinic, the session disarms a
second after the client's face is lost behind the other one, and the practitioner arms it again at the console once
the other person has gone (sim/practitioner.py, over the run's control channel); the client's face stays the one
locked at the first arming. Frames denied `not_armed` in between are counted per phase.

By default the session is the demo path whole (27 s, as `guidance evaluate` runs it on the same face alone) with the
second face coming 3 s in; `--frames 240 --enter-s 0` is the scene's first version (the first 8 s only, the
second face from the first frame).

    python -m guidance.sim.two_face_session OUT [--face-video NAME] [--frames N] [--enter-s S]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from guidance import samples
from guidance.errors import UserError
from guidance.session.reader import open_session
from guidance.sim.demo import DEFAULT_PATH, DEFAULT_PLAN
from guidance.sim.ground_truth import load_ground_truth
from guidance.sim.scalp_session import USABLE_EXTRA_MM, ScalpResult, _stats, run_band_session
from guidance.sim.second_face import Track, composite, load_second_face
from guidance.sim.simulate import simulate
from guidance.zones.plan import load_plan

CLIENT_VIDEO = "vitallens_sample_video_1.mp4"  # an evaluation face: nothing was tuned on it
SECOND_FACE = "biden.jpg"  # another person (a training photo: it is only the intruder here)
FRAMES: int | None = None  # the whole demo path (27 s), as `guidance evaluate` runs it on the same face
# The second face's track (7.4 s: in, beside, in front, out) begins this far into the session: the face comes
# beside the client while the path treats the forehead and brows (frames the gate permits on this face alone,
# 4-7 s), passes in front of it mid-stroke, and is gone at 10.4 s. The session around it is the demo session
# `guidance evaluate` runs on this face alone. `--frames 240 --enter-s 0` is the first version of this scene: the
# track from the first frame, and only the session's first 8 s.
ENTER_S = 3.0
# The practitioner arms at the start and again this long after the second face has left the picture (the
# session disarmed a second after the client's face was hidden; nobody else can arm it).
REARM_AFTER_S = 0.5
COVERED_SHARE = 0.2  # of the client's face box: the second face is "in front of" the client


@dataclass
class PhaseFigures:
    frames: int = 0
    permits: int = 0
    other_face: int = 0  # frames denied other_face (the client's face not tracked, another one is)
    not_armed: int = 0  # frames denied not_armed: the session disarms after a second without the client's face
    chart_error_mm: dict[str, float] = field(default_factory=dict)
    usable_frames: int = 0
    usable_permitted: int = 0


@dataclass
class TwoFaceResult:
    session: ScalpResult
    phases: dict[str, PhaseFigures]  # "alone" | "beside" | "covering"
    arms: list[dict] = field(default_factory=list)  # the practitioner's arms: due (s), taken, the run's answer

    @property
    def safe(self) -> bool:
        return self.session.safe


def face_chart_error_mm(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def phase_of(row: dict) -> str:
    if row["visible"] != "True":
        return "alone"
    return "covering" if float(row["covers_client"]) > COVERED_SHARE else "beside"


def phase_figures(sim_dir: str | Path, session_dir: str | Path, plan_path: str | Path) -> dict[str, PhaseFigures]:
    """The session's figures split by where the second face is (from the composite's truth)."""
    gt, rows = load_ground_truth(sim_dir), load_second_face(sim_dir)
    margin = load_plan(plan_path).margin_mm
    out: dict[str, PhaseFigures] = {k: PhaseFigures() for k in ("alone", "beside", "covering")}
    errors: dict[str, list[float]] = {k: [] for k in out}
    for r in open_session(session_dir, quiet=True).frames:
        if not 0 <= r.index < min(len(gt), len(rows)):
            continue
        g, k = gt[r.index], phase_of(rows[r.index])
        p = out[k]
        p.frames += 1
        p.permits += bool(r.gate.permit)
        p.other_face += r.gate.reason == "other_face"
        p.not_armed += r.gate.reason == "not_armed"
        if g.contact and r.zone is not None and r.zone.chart_mm is not None:
            errors[k].append(face_chart_error_mm(r.zone.chart_mm, (g.chart_u_mm, g.chart_v_mm)))
        if g.contact and g.plan_distance_mm >= margin + USABLE_EXTRA_MM:
            p.usable_frames += 1
            p.usable_permitted += bool(r.gate.permit)
    for k, p in out.items():
        p.chart_error_mm = _stats(errors[k])
    return out


def run_two_face_session(out: str | Path, *, client_video: str = CLIENT_VIDEO, second_face: str = SECOND_FACE,
                         path: str = DEFAULT_PATH, plan: str = DEFAULT_PLAN, frames: int | None = FRAMES,
                         enter_s: float = ENTER_S, rate_hz: float = 8.0, report: bool = True,
                         log=print) -> TwoFaceResult:
    """Simulate, composite, run and check one two-face session into OUT (a new or empty folder).

    `frames`: the session's length (None: the whole path); `enter_s`: when the second face's track begins."""
    video = samples.fetch(client_video)
    track = Track().later(enter_s)
    arm_at_s = (0.0, round(track.keys[-1][0] + REARM_AFTER_S, 3))

    def render(sim_dir: Path) -> Path:
        clean = sim_dir.parent / "clean"
        simulate(video, path, clean, max_frames=frames, size=(640, 480))
        return composite(clean, sim_dir, face=second_face, track=track)

    length = "the whole path" if frames is None else f"{frames} frames"
    result = run_band_session(out, render, f"the two-face session ({client_video} with {second_face}, {length}, "
                                           f"the second face from {enter_s:g} s)",
                              plan, (), rate_hz=rate_hz, report=report, log=log, chart_error=face_chart_error_mm,
                              kind="two_face", arm_at_s=arm_at_s)
    phases = phase_figures(result.sim_dir, result.session_dir, plan)
    arms = json.loads((Path(out) / "practitioner.json").read_text())
    summary = json.loads((Path(out) / "two_face.json").read_text())
    summary["by_second_face"] = {k: vars(p) for k, p in phases.items()}
    summary["practitioner_arms"] = arms
    (Path(out) / "two_face.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return TwoFaceResult(result, phases, arms)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guidance.sim.two_face_session", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--face-video", default=CLIENT_VIDEO, help=f"the client's face video (default {CLIENT_VIDEO})")
    ap.add_argument("--frames", type=int, default=FRAMES, help="the session's length (default: the whole path)")
    ap.add_argument("--enter-s", type=float, default=ENTER_S,
                    help=f"when the second face's track begins, s into the session (default {ENTER_S:g})")
    args = ap.parse_args(argv)
    try:
        r = run_two_face_session(args.out, client_video=args.face_video, frames=args.frames, enter_s=args.enter_s)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    f, a = r.session.figures, r.session.acceptance
    print(f"permits outside the plan / on an exclusion: {len(f.permits_outside_plan)} / {len(f.permits_on_exclusion)};"
          f" pulses {a.pulses_fired} ({len(a.pulses_outside_plan)} outside, {len(a.pulses_in_exclusion)} in an "
          f"exclusion); chart error in contact {f.chart_error_mm}; coverage within {a.coverage_max_diff_pp:.1f} pp; "
          f"usable share {f.usable_share:.2f} ({f.usable_share_unstalled:.2f} of the unstalled)")
    print("armed by the practitioner: " + ", ".join(
        f"{a['at_s']:g} s ({'taken' if a['ok'] else 'refused: ' + a['detail']})" for a in r.arms))
    for k, p in r.phases.items():
        share = p.usable_permitted / p.usable_frames if p.usable_frames else float("nan")
        print(f"  {k}: {p.frames} frames, {p.permits} permits, {p.other_face} other_face, {p.not_armed} not_armed, "
              f"chart error "
              f"{p.chart_error_mm}, usable share {share:.2f} of {p.usable_frames}")
    return 0 if r.safe else 1


if __name__ == "__main__":
    raise SystemExit(main())
