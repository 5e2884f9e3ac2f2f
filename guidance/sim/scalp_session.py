"""A scalp session end to end, measured against the truth (docs/scalp.md).

1. ``sim/scalp.py`` renders the session (the head turns from frontal to its
   back; head band and handpiece markers drawn; exact truth);
2. the demo's machinery runs it as a clinic would: CURVE keys,
   ``guidance controller-sim`` with the trigger held (firing only in skin
   contact, from the truth), ``guidance run`` on the video in real time with
   the scalp plan, recording, overlay video; ``guidance report``;
3. the demo's check (``demo.verify``: every fired pulse placed on the truth)
   and the scalp figures, per frame from the recording:

   - permits while the true tip was in contact outside the plan beyond the
     margin, or on an exclusion (must be 0);
   - the tip's chart error in contact (service chart point vs the true one):
     median and p90;
   - coverage per zone, service vs truth (percentage points);
   - the usable-frame permit share: of the frames where a permit was due (the
     true tip in contact, inside the plan by at least the margin plus 2 mm),
     the share that got one, over the whole session and per phase (frontal,
     turn, back).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from guidance.errors import UserError
from guidance.session.reader import open_session
from guidance.sim.demo import Acceptance, _guidance, _simulate_and_run, _step, verify
from guidance.sim.ground_truth import load_ground_truth
from guidance.sim.scalp import ScalpScript, simulate_scalp
from guidance.zones.chart import load_chart
from guidance.zones.plan import load_plan

PLAN = "scalp"  # the bundled example plan (guidance/data/plans/scalp.yaml)
USABLE_EXTRA_MM = 2.0  # a permit is due where the true tip is inside the plan by the margin plus this


@dataclass
class ScalpFigures:
    frames_recorded: int = 0
    frames_by_phase: dict[str, int] = field(default_factory=dict)
    permits: int = 0
    permits_outside_plan: list[dict] = field(default_factory=list)  # true tip in contact, beyond the margin
    permits_on_exclusion: list[dict] = field(default_factory=list)
    permits_lifted: int = 0  # permits while the true tip was off the skin (no pulse lands: the controller's contact)
    chart_error_mm: dict[str, float] = field(default_factory=dict)  # in contact: n, median, p90, max
    chart_error_by_phase_mm: dict[str, dict[str, float]] = field(default_factory=dict)
    usable_frames: int = 0
    usable_permitted: int = 0
    usable_stalled: int = 0  # usable frames denied camera_stalled: this machine's load, not the gate's judgement
    usable_share_by_phase: dict[str, float] = field(default_factory=dict)
    denies: dict[str, int] = field(default_factory=dict)
    registered_at_s: float | None = None  # first frame with the band registered, in video time
    band_states: dict[str, int] = field(default_factory=dict)

    @property
    def usable_share(self) -> float:
        return self.usable_permitted / self.usable_frames if self.usable_frames else float("nan")

    @property
    def usable_share_unstalled(self) -> float:
        """The usable share over the frames the camera did not stall: what the gate itself permits of them."""
        n = self.usable_frames - self.usable_stalled
        return self.usable_permitted / n if n > 0 else float("nan")


@dataclass
class ScalpResult:
    acceptance: Acceptance
    figures: ScalpFigures
    sim_dir: Path
    session_dir: Path

    @property
    def safe(self) -> bool:
        f = self.figures
        return self.acceptance.safe and not f.permits_outside_plan and not f.permits_on_exclusion


def _stats(x: list[float]) -> dict[str, float]:
    if not x:
        return {"n": 0}
    return {"n": len(x), "median": float(np.median(x)), "p90": float(np.percentile(x, 90)), "max": float(np.max(x))}


def chart_error_mm(a: tuple[float, float], b: tuple[float, float], scalp: dict) -> float:
    """Distance between two scalp chart points, across the chart's seam at the back of the head.

    Chart u is longitude times the parallel's radius, so at the back (longitude +-180 degrees) u jumps by the
    parallel's whole length; two points either side of that seam are close on the skin."""
    v = 0.5 * (a[1] + b[1])
    phi = (scalp["v_offset_mm"] - v) / scalp["meridian_radius_mm"]
    phi_top = (scalp["v_offset_mm"] - scalp["v_top_mm"]) / scalp["meridian_radius_mm"]
    period = 2 * math.pi * scalp["equator_radius_mm"] * max(math.cos(phi), 0.0) / max(math.cos(phi_top), 1e-6)
    du = a[0] - b[0]
    if period > 1e-6:
        du -= period * round(du / period)
    return math.hypot(du, a[1] - b[1])


def scalp_figures(sim_dir: str | Path, session_dir: str | Path, plan_path: str | Path = PLAN,
                  chart_error: Callable[[tuple[float, float], tuple[float, float]], float] | None = None) -> ScalpFigures:
    """The per-frame figures of a recorded band session against its simulation's truth. `chart_error`: the distance
    between the service's and the true chart points (default: on the scalp, across its seam; `sim/neck_session.py`
    gives the neck's)."""
    gt = load_ground_truth(sim_dir)
    info = json.loads((Path(sim_dir) / "info.json").read_text())
    fps = float(info["fps"])
    plan = load_plan(plan_path)
    session = open_session(session_dir, quiet=True)
    scalp = load_chart().surfaces["scalp"]
    f = ScalpFigures()
    errors: list[float] = []
    by_phase: dict[str, list[float]] = {}
    usable: dict[str, list[int]] = {}
    for r in session.frames:
        if not 0 <= r.index < len(gt):
            continue
        g = gt[r.index]
        f.frames_recorded += 1
        f.frames_by_phase[g.segment_type] = f.frames_by_phase.get(g.segment_type, 0) + 1
        f.denies[r.gate.reason] = f.denies.get(r.gate.reason, 0) + 1
        if r.head_band is not None:
            f.band_states[r.head_band.state] = f.band_states.get(r.head_band.state, 0) + 1
            if r.head_band.registered and f.registered_at_s is None:
                f.registered_at_s = r.index / fps
        where = {"frame": r.index, "zone_true": g.true_zone, "plan_distance_mm": g.plan_distance_mm,
                 "zone_service": r.zone.zone if r.zone else None}
        if r.gate.permit:
            f.permits += 1
            if not g.contact:
                f.permits_lifted += 1
            elif g.true_kind == "exclusion":
                f.permits_on_exclusion.append(where)
            elif not g.plan_distance_mm >= -plan.margin_mm:  # NaN counts as outside
                f.permits_outside_plan.append(where)
        if g.contact and r.zone is not None and r.zone.chart_mm is not None:
            truth = (g.chart_u_mm, g.chart_v_mm)
            e = chart_error(r.zone.chart_mm, truth) if chart_error else chart_error_mm(r.zone.chart_mm, truth, scalp)
            if g.segment_type != "touch":  # the touches are on the face (the face's mapping), shown apart
                errors.append(e)
            by_phase.setdefault(g.segment_type, []).append(e)
        if g.contact and g.plan_distance_mm >= plan.margin_mm + USABLE_EXTRA_MM:
            u = usable.setdefault(g.segment_type, [0, 0])
            u[0] += 1
            u[1] += bool(r.gate.permit)
            f.usable_stalled += r.gate.reason == "camera_stalled"
    f.chart_error_mm = _stats(errors)
    f.chart_error_by_phase_mm = {k: _stats(v) for k, v in by_phase.items()}
    f.usable_frames = sum(u[0] for u in usable.values())
    f.usable_permitted = sum(u[1] for u in usable.values())
    f.usable_share_by_phase = {k: (u[1] / u[0] if u[0] else float("nan")) for k, u in usable.items()}
    return f


def run_scalp_session(out: str | Path, *, script: ScalpScript = ScalpScript(), rate_hz: float = 15.0,
                      report: bool = True, log=print) -> ScalpResult:
    """Render, run and check one scalp session into OUT (a new or empty folder)."""
    how = "touch" if script.touches else "face"  # the script touches the landmarks, or leaves it to the face
    return run_band_session(out, lambda sim_dir: simulate_scalp(sim_dir, script=script).out_dir,
                            f"the scalp session ({script.duration_s:g} s at {script.fps:g} fps)", PLAN,
                            ("--band-registration", how), rate_hz=rate_hz, report=report, log=log)


def run_band_session(out: str | Path, render: Callable[[Path], Path], what: str, plan: str,
                     run_args: tuple[str, ...], *, rate_hz: float = 15.0, report: bool = True, log=print,
                     chart_error: Callable[[tuple[float, float], tuple[float, float]], float] | None = None,
                     kind: str = "scalp", arm_at_s: tuple[float, ...] | None = None) -> ScalpResult:
    """Render (`render(folder) -> folder`), run and check one session into OUT (a new or empty folder): the scalp's
    and the neck's (sim/neck_session.py), carried by the head band (`run_args`), or a face session's
    (sim/two_face_session.py, no band). `arm_at_s`: armed by a scripted practitioner at the console at these
    times (s) instead of at the start (`_simulate_and_run`)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError("output folder exists and is not empty (choose another or remove it)", path=out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    try:
        log(f"[1/5] rendering {what} ...")
        sim = render(out / "simulation")
        run, sim, session = _simulate_and_run(out, env, "", "", plan, None, rate_hz, log, simulated=sim,
                                              run_args=run_args, arm_at_s=arm_at_s)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if report:
        log("[4/5] report ...")
        _step(_guidance("report", str(session), "-o", str(out / "report.html"), "--quiet"), env, "guidance report")
    log("[5/5] checking the session against the ground truth ...")
    acc = verify(sim, session, out / "controller.jsonl", plan)
    fig = scalp_figures(sim, session, plan, chart_error)
    result = ScalpResult(acc, fig, sim, session)
    (out / f"{kind}.json").write_text(json.dumps({
        "acceptance": asdict(acc), "figures": asdict(fig) | {"usable_share": fig.usable_share},
        "safe": result.safe, "run": run.stdout.strip().splitlines()[:3]}, indent=2, default=str) + "\n")
    log(f"done in {time.monotonic() - t0:.0f} s: {out / f'{kind}.json'}")
    return result
