"""A rendered body session end to end: simulate (patch + handpiece on a rendered body, with truth), `guidance run`
(the patch tracker instead of the face tracker), recording, the truth check, reprocess (exact), report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from guidance.resources import verified_path
from guidance.session.reader import open_session
from guidance.sim.body import load_patch_truth
from guidance.sim.ground_truth import load_ground_truth
from guidance.sim.session_figures import frame_figures
from guidance.sim.simulate import simulate
from guidance.zones.body_atlas import plan_atlas
from guidance.zones.coverage import CoverageMap
from guidance.zones.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]
GUIDANCE = [sys.executable, "-m", "guidance.cli"]
PLAN = verified_path("body_abdomen", kind="plans")
PATH = {
    "path_version": 1, "name": "body-short", "plan": str(PLAN), "speed_mm_s": 25, "lead_in_s": 0.4, "lead_out_s": 0.3,
    "render": {"exposure_s": 0.012, "noise_sigma": 1.5, "seed": 3, "tilt_deg": 35, "curvature_radius_mm": 400},
    "start": [40.0, -62.0],
    "segments": [
        {"type": "line", "to": [40.0, -28.0]},  # upper left (planned)
        {"type": "move", "to": [12.0, 70.0]},
        {"type": "line", "to": [-14.0, 70.0]},  # across the midline into the lower right (not planned)
        {"type": "lift", "duration_s": 0.2},
        {"type": "move", "to": [10.0, 72.0]},
        {"type": "line", "toward": "patch", "depth_mm": 3},  # onto the card (an exclusion)
    ],
}


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("body")
    path = base / "path.yaml"
    path.write_text(yaml.safe_dump(PATH, sort_keys=False))
    r = simulate(None, path, base / "sim", size=(640, 480))
    assert r.frames > 150 and r.face_found_frames == r.frames and r.contact_frames > 60
    run = subprocess.run(GUIDANCE + ["run", "--source", str(base / "sim" / "simulated.avi"), "--plan", str(PLAN),
                                     "--headless", "--arm", "--record", str(base / "rec")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    return {"sim": base / "sim", "rec": base / "rec", "base": base}


def test_the_simulation_has_body_truth(session):
    gt = load_ground_truth(session["sim"])
    poses = load_patch_truth(session["sim"])
    assert len(poses) == len(gt)
    assert {g.true_zone for g in gt if g.contact} >= {"abdomen_upper_left", "abdomen_lower_right", "patch"}
    assert any(g.contact and g.plan_distance_mm < -5 for g in gt)  # the crossing the gate must refuse
    assert 400 < float(np.median([p.t_mm[2] for p in poses])) < 500  # the body breathes in front of the camera


def test_no_permit_outside_the_plan_and_the_chart_point_is_within_2_mm(session):
    rec = open_session(session["rec"], quiet=True)
    plan = rec.plan()
    assert plan.area == "body" and rec.frames[0].patch is not None
    gt = load_ground_truth(session["sim"])
    fig = frame_figures(rec, gt, plan, plan_atlas(plan))
    assert fig.frames > 100
    assert fig.permits_contact_outside == [] and fig.permits_contact_exclusion == []
    err = fig.chart_error()
    assert err["n"] > 40 and err["median"] <= 2.0, err
    # the recorded reasons are the body's: never a face reason, and the card refused
    reasons = {r.gate.reason for r in rec.frames}
    assert not reasons & {"no_face", "face_stale", "low_presence"}
    assert reasons & {"zone_excluded", "near_exclusion"} and "ok" in reasons
    # coverage from pulses at 8 Hz on the permitted contact frames: service chart point vs true chart point
    by_index = {g.frame_index: g for g in gt}
    service, truth = CoverageMap.for_plan(plan), CoverageMap.for_plan(plan)
    for k, r in enumerate(f for f in rec.frames if f.gate.permit and by_index[f.index].contact):
        if k % 4 == 0:
            g = by_index[r.index]
            service.deposit_pulse(*r.zone.chart_mm, 10.0)
            truth.deposit_pulse(g.chart_u_mm, g.chart_v_mm, 10.0)
    diffs = [abs(service.zone(z).mean_passes - truth.zone(z).mean_passes) / max(truth.zone(z).mean_passes, 1e-9)
             for z in plan.zones if truth.zone(z).pulses]
    assert diffs and max(diffs) < 0.1, diffs


def test_reprocess_is_exact_and_a_wider_margin_only_denies_more(session, tmp_path):
    out = subprocess.run(GUIDANCE + ["reprocess", str(session["rec"]), "-o", str(tmp_path / "same")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "0 decisions differ" in out.stdout
    wide = subprocess.run(GUIDANCE + ["reprocess", str(session["rec"]), "--margin", "8", "-o", str(tmp_path / "w")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert wide.returncode == 0, wide.stderr
    before = open_session(session["rec"], quiet=True).frames
    after = open_session(tmp_path / "w", quiet=True).frames
    assert all(a.gate.permit <= b.gate.permit for a, b in zip(after, before))
    assert sum(a.gate.permit for a in after) < sum(b.gate.permit for b in before)


def test_the_report_draws_the_body_coverage(session, tmp_path):
    out = subprocess.run(GUIDANCE + ["report", str(session["rec"]), "-o", str(tmp_path / "r.html")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "r.html").read_text()
    assert "abdomen_upper_left" in html and "patch" in html


def test_the_bundled_body_path_loads_on_the_patch_chart():
    from guidance.sim.body import body_area_of, body_trajectory
    from guidance.sim.path import load_path
    from guidance.zones.atlas import load_atlas
    sim = load_path("demo_body_abdomen", load_atlas())
    assert sim.is_body and sim.atlas is not None and sim.atlas.name == "body/abdomen"
    traj = body_trajectory(sim, body_area_of(sim))
    assert 20 < traj.duration_s < 40
    assert load_plan("body_abdomen").plan_id == sim.plan.plan_id


def test_a_body_path_leaving_the_patch_range_is_refused_and_a_face_path_needs_a_video(tmp_path, capsys):
    from guidance.cli import main
    far = dict(PATH, segments=[{"type": "line", "to": [40.0, -120.0]}])
    (tmp_path / "far.yaml").write_text(yaml.safe_dump(far))
    assert main(["simulate", "--path", str(tmp_path / "far.yaml"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "segments.0" in err and "range around the patch" in err
    assert main(["simulate", "--path", "demo_full_face", "-o", str(tmp_path / "o2")]) == 2
    assert "--face-video" in capsys.readouterr().err
