#!/usr/bin/env python3
"""Regenerate the figures of docs/scalp.md: one rendered scalp session (default script: the five touches and
frontal strokes, 8.5 s, a 6 s turn to the back, 4 s at the back, 30 fps), run end to end, checked against its truth.

Usage: python docs/make_scalp_figures.py OUT_DIR      (about 6 minutes on 2 cores; OUT_DIR new or empty)
       python docs/make_scalp_figures.py --face OUT_DIR   (no touches: the face pose's registration, 2 s frontal)
       python docs/make_scalp_figures.py --neck OUT_DIR   (the neck session of docs/neck.md: six touches (the
                                                           last on the sternal notch), the band carries the head,
                                                           which turns +-45 degrees over the neck's strokes and
                                                           again over the décolletage's; the torso shifts, the
                                                           sternum patch carries it)
       python docs/make_scalp_figures.py --neck-no-patch OUT_DIR   (the same without the patch: the torso taken as still)
       python docs/make_scalp_figures.py --from OUT_DIR   (the table again, from a session already run)
Any of the session forms takes `--texture NAME` last: the rendered client's face texture (a pinned photo, or a
pinned video's 30th frame; default single_face.jpg, a training face), e.g. an evaluation face of
guidance/data/face_sets.yaml.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from guidance.sim.demo import verify
from guidance.sim.scalp import ScalpScript
from guidance.sim.neck_session import neck_chart_error_mm, run_neck_session
from guidance.sim.neck_turn import NECK_PLAN, NeckScript
from guidance.sim.scalp_session import PLAN, ScalpResult, run_scalp_session, scalp_figures


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.0f} %"


def main() -> int:
    args = sys.argv[1:]
    texture: dict = {}
    if len(args) >= 2 and args[-2] == "--texture":
        texture, args = {"face": args[-1]}, args[:-2]
    if len(args) == 2 and args[0] == "--from":
        out = Path(args[1])
        sim, session = out / "simulation", out / "session"
        neck = json.loads((sim / "info.json").read_text()).get("kind") == "neck"
        plan = NECK_PLAN if neck else PLAN
        r = ScalpResult(verify(sim, session, out / "controller.jsonl", plan),
                        scalp_figures(sim, session, plan, neck_chart_error_mm if neck else None), sim, session)
    elif len(args) == 1:
        r = run_scalp_session(Path(args[0]), script=ScalpScript(**texture))
    elif len(args) == 2 and args[0] == "--neck":
        r = run_neck_session(Path(args[1]), script=NeckScript(**texture))
    elif len(args) == 2 and args[0] == "--neck-no-patch":
        r = run_neck_session(Path(args[1]), script=NeckScript(patch=False, **texture))
    elif len(args) == 2 and args[0] == "--face":
        r = run_scalp_session(Path(args[1]), script=ScalpScript(touches=False, frontal_s=2.0, **texture))
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    f, a = r.figures, r.acceptance
    e = f.chart_error_mm
    rows = [
        ("frames recorded (by phase)",
         f"{f.frames_recorded} (" + ", ".join(f"{k} {v}" for k, v in f.frames_by_phase.items()) + ")"),
        ("band registered after", f"{f.registered_at_s:.2f} s" if f.registered_at_s is not None else "never"),
        ("band state per frame", ", ".join(f"{k} {v}" for k, v in sorted(f.band_states.items()))),
        ("permits with the true tip in contact outside the plan beyond the margin", str(len(f.permits_outside_plan))),
        ("permits with the true tip on an exclusion", str(len(f.permits_on_exclusion))),
        ("pulses fired / outside the plan beyond the margin / in an exclusion",
         f"{a.pulses_fired} / {len(a.pulses_outside_plan)} / {len(a.pulses_in_exclusion)}"),
        ("tip chart error in contact (scalp, neck or décolletage), median / p90 / max (frames)",
         f"{e.get('median', float('nan')):.1f} / {e.get('p90', float('nan')):.1f} / {e.get('max', float('nan')):.1f} mm"
         f" ({e.get('n', 0)})"),
        *[(f"  ... {k}", f"{v.get('median', float('nan')):.1f} / {v.get('p90', float('nan')):.1f} mm ({v.get('n', 0)})")
          for k, v in f.chart_error_by_phase_mm.items()],
        ("pulses in contact, service vs truth, median / p90",
         f"{a.pulse_error_mm.get('median', float('nan')):.1f} / {a.pulse_error_mm.get('p90', float('nan')):.1f} mm"),
        ("coverage per zone, largest difference from the truth", f"{a.coverage_max_diff_pp:.1f} percentage points"),
        ("usable-frame permit share (all)", f"{_pct(f.usable_share)} of {f.usable_frames}"),
        ("  ... of those the camera did not stall", f"{_pct(f.usable_share_unstalled)} "
                                                    f"({f.usable_stalled} stalled)"),
        *[(f"  ... {k}", _pct(v)) for k, v in f.usable_share_by_phase.items()],
        ("frames by gate reason", ", ".join(f"{k} {v}" for k, v in sorted(f.denies.items(), key=lambda kv: -kv[1]))),
    ]
    print("| figure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print("\ncoverage at target, service / truth: " + ", ".join(
        f"{z} {100 * a.coverage_service[z]:.1f} / {100 * a.coverage_truth[z]:.1f} %" for z in a.coverage_service))
    return 0 if r.safe else 1


if __name__ == "__main__":
    sys.exit(main())
