"""The décolletage on the torso: a rendered session on the sternum patch end to end (simulate, `guidance run`,
recording, truth). Its zones are carried by the card on the chest, so nothing of the head enters the lookup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from guidance.resources import verified_path
from guidance.session.reader import open_session
from guidance.sim.ground_truth import load_ground_truth
from guidance.sim.session_figures import frame_figures
from guidance.sim.simulate import simulate
from guidance.zones.body_atlas import load_body_area, plan_atlas

ROOT = Path(__file__).resolve().parents[2]
GUIDANCE = [sys.executable, "-m", "guidance.cli"]
PLAN = verified_path("body_decolletage", kind="plans")
PATH = {
    "path_version": 1, "name": "decolletage-short", "plan": str(PLAN), "speed_mm_s": 25, "lead_in_s": 0.4,
    "lead_out_s": 0.3,
    "render": {"exposure_s": 0.012, "noise_sigma": 1.5, "seed": 5, "tilt_deg": 30, "curvature_radius_mm": 220,
               "body_motion_mm": 4},
    "start": [40.0, -50.0],
    "segments": [
        {"type": "line", "to": [40.0, -15.0]},  # upper left (planned)
        {"type": "move", "to": [12.0, 60.0]},
        {"type": "line", "to": [-14.0, 60.0]},  # across the midline into the lower right (not planned)
        {"type": "lift", "duration_s": 0.2},
        {"type": "move", "to": [10.0, 62.0]},
        {"type": "line", "toward": "patch", "depth_mm": 3},  # onto the card (an exclusion)
    ],
}


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("decolletage")
    path = base / "path.yaml"
    path.write_text(yaml.safe_dump(PATH, sort_keys=False))
    r = simulate(None, path, base / "sim", size=(640, 480))
    assert r.frames > 100 and r.contact_frames > 40
    run = subprocess.run(GUIDANCE + ["run", "--source", str(base / "sim" / "simulated.avi"), "--plan", str(PLAN),
                                     "--headless", "--arm", "--record", str(base / "rec")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    return {"sim": base / "sim", "rec": base / "rec"}


def test_the_area_keeps_the_patch_plane_within_its_error_budget():
    """The plane stands for the chest within the range: sag x tan(view) + chord shortfall, camera 450 mm away,
    stays under 3.3 mm at the range's ends (models/build_body_atlas.py) for the smallest radii the area names."""
    area = load_body_area("decolletage")
    for d, r in zip(area.range_mm, area.curvature_radius_mm):
        assert d ** 3 / (900.0 * r) + d ** 3 / (6.0 * r * r) <= 3.3, (d, r)
    # the card's top edge 30 mm below the suprasternal notch: the range stops short of the notch (the neck)
    card_half_h = area.patch_size_mm[1] / 2
    assert area.range_mm[1] < card_half_h + 30.0


def test_no_permit_outside_the_plan_or_on_the_card_and_the_chart_point_within_2_mm(session):
    rec = open_session(session["rec"], quiet=True)
    plan = rec.plan()
    assert plan.area == "body" and plan.body_area == "decolletage"
    gt = load_ground_truth(session["sim"])
    assert {g.true_zone for g in gt if g.contact} >= {"decolletage_upper_left", "decolletage_lower_right", "patch"}
    fig = frame_figures(rec, gt, plan, plan_atlas(plan))
    assert fig.permits_contact_outside == [] and fig.permits_contact_exclusion == []
    err = fig.chart_error()
    assert err["n"] > 30 and err["median"] <= 2.0, err
    assert fig.usable_permitted > 0  # it permits on the chest, not only refuses
    reasons = {r.gate.reason for r in rec.frames}
    assert not reasons & {"no_face", "face_stale", "low_presence", "other_face"}  # nothing of the face is asked
    assert reasons & {"zone_not_planned", "near_boundary"} and reasons & {"zone_excluded", "near_exclusion"}
    assert all(r.face is None or not r.face.found for r in rec.frames)  # the head is not tracked for the chest
