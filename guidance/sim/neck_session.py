"""A neck session end to end, measured against the truth (docs/neck.md): the head turns +-45 degrees on a still
torso, the head band (registered by touches) carries the head, the neck twists on the torso under it.

The scalp session's machinery (``scalp_session.run_band_session``): ``sim/neck_turn.py`` renders it, then CURVE
keys, ``guidance controller-sim`` (trigger held, firing only in skin contact, from the truth), ``guidance run`` in
real time with the neck plan and ``--head-band``, recording, report, and the figures per frame: permits with the
true tip outside the plan or on an exclusion, the chart error in contact (on the neck, by phase: rest, turn),
coverage against the truth, the usable-frame permit share.
"""

from __future__ import annotations

import math
from pathlib import Path

from guidance.sim.neck_turn import NECK_PLAN, NeckScript, simulate_neck
from guidance.sim.scalp_session import ScalpResult, run_band_session


def neck_chart_error_mm(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance between two neck chart points (the neck's chart is the cylinder's unrolled skin: no seam in front)."""
    return math.hypot(a[0] - b[0], a[1] - b[1])


def run_neck_session(out: str | Path, *, script: NeckScript = NeckScript(), rate_hz: float = 15.0,
                     report: bool = True, log=print) -> ScalpResult:
    """Render, run and check one neck session into OUT (a new or empty folder)."""
    return run_band_session(out, lambda sim_dir: simulate_neck(sim_dir, script=script).out_dir,
                            f"the neck session ({script.duration_s:g} s at {script.fps:g} fps)", NECK_PLAN,
                            ("--head-band", "head_band_default", "--band-registration", "touch"), rate_hz=rate_hz,
                            report=report, log=log, chart_error=neck_chart_error_mm, kind="neck")
