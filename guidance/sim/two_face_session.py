"""The two-face session: a face session in which a second person's face enters, passes in front of the client's
and leaves, run and judged as the scalp, neck and body sessions are.

The handpiece path is simulated on a client's face video (`guidance simulate`; by default an evaluation face,
guidance/data/face_sets.yaml), a second face is slid across it (`sim/second_face.py`: beside the client, in front of
the client's face, out the other side), then the usual chain runs: the controller simulator, `guidance run` in real
time (recording, overlay, CURVE permits), the report, and the check against the simulation's truth. The figures are
the other sessions' (permits and pulses outside the plan or on an exclusion, tip chart error in contact, coverage,
usable-frame permit share), and the same split by where the second face is: out of the picture, in it beside the
client, or covering the client's face (more than `COVERED_SHARE` of its box). As in a clinic, the session disarms a
second after the client's face is lost behind the other one; nobody arms it again here, so the frames after are
denied `not_armed` (counted per phase).

    python -m guidance.sim.two_face_session OUT [--face-video NAME] [--frames N]
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
from guidance.sim.second_face import composite, load_second_face
from guidance.sim.simulate import simulate
from guidance.zones.plan import load_plan

CLIENT_VIDEO = "vitallens_sample_video_1.mp4"  # an evaluation face: nothing was tuned on it
SECOND_FACE = "biden.jpg"  # another person (a training photo: it is only the intruder here)
FRAMES = 240  # 8 s at 30 fps: the second face's whole track (in, beside, in front, out)
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
                         path: str = DEFAULT_PATH, plan: str = DEFAULT_PLAN, frames: int = FRAMES,
                         rate_hz: float = 8.0, report: bool = True, log=print) -> TwoFaceResult:
    """Simulate, composite, run and check one two-face session into OUT (a new or empty folder)."""
    video = samples.fetch(client_video)

    def render(sim_dir: Path) -> Path:
        clean = sim_dir.parent / "clean"
        simulate(video, path, clean, max_frames=frames, size=(640, 480))
        return composite(clean, sim_dir, face=second_face)

    result = run_band_session(out, render, f"the two-face session ({client_video} with {second_face}, {frames} frames)",
                              plan, (), rate_hz=rate_hz, report=report, log=log, chart_error=face_chart_error_mm,
                              kind="two_face")
    phases = phase_figures(result.sim_dir, result.session_dir, plan)
    summary = json.loads((Path(out) / "two_face.json").read_text())
    summary["by_second_face"] = {k: vars(p) for k, p in phases.items()}
    (Path(out) / "two_face.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return TwoFaceResult(result, phases)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guidance.sim.two_face_session", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--face-video", default=CLIENT_VIDEO, help=f"the client's face video (default {CLIENT_VIDEO})")
    ap.add_argument("--frames", type=int, default=FRAMES)
    args = ap.parse_args(argv)
    try:
        r = run_two_face_session(args.out, client_video=args.face_video, frames=args.frames)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    f, a = r.session.figures, r.session.acceptance
    print(f"permits outside the plan / on an exclusion: {len(f.permits_outside_plan)} / {len(f.permits_on_exclusion)};"
          f" pulses {a.pulses_fired} ({len(a.pulses_outside_plan)} outside, {len(a.pulses_in_exclusion)} in an "
          f"exclusion); chart error in contact {f.chart_error_mm}; coverage within {a.coverage_max_diff_pp:.1f} pp; "
          f"usable share {f.usable_share:.2f} ({f.usable_share_unstalled:.2f} of the unstalled)")
    for k, p in r.phases.items():
        share = p.usable_permitted / p.usable_frames if p.usable_frames else float("nan")
        print(f"  {k}: {p.frames} frames, {p.permits} permits, {p.other_face} other_face, {p.not_armed} not_armed, "
              f"chart error "
              f"{p.chart_error_mm}, usable share {share:.2f} of {p.usable_frames}")
    return 0 if r.safe else 1


if __name__ == "__main__":
    raise SystemExit(main())
