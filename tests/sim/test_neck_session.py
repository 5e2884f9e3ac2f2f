"""A rendered neck session end to end (docs/neck.md): the practitioner touches the five face landmarks, the head
band carries the head, which then turns +-45 degrees while the tip strokes the front of the neck and the neck twists
under it; the client shifts in the chair meanwhile and the sternum patch carries the torso; real processes, CURVE,
recording, report.

Then the head turns +-45 degrees again while the tip strokes the décolletage beside the patch.

Short (30 fps, 18.4 s): the figures in docs/neck.md come from the longer session of
`docs/make_scalp_figures.py --neck`.
"""

import json

import numpy as np
import pytest

from guidance.review.reprocess import reprocess
from guidance.session.reader import open_session
from guidance.sim.ground_truth import load_ground_truth
from guidance.sim.neck_session import run_neck_session
from guidance.sim.neck_turn import NeckScript

SCRIPT = NeckScript(fps=30.0, touch_move_s=0.35, touch_hold_s=0.7, rest_s=1.0, turn_s=6.0, dec_s=4.0)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    out = tmp_path_factory.mktemp("neck") / "out"
    return run_neck_session(out, script=SCRIPT, log=lambda *a: None), out


def test_the_band_registers_and_the_torso_rest_is_made_before_the_turn(session):
    result, _ = session
    f = result.figures
    assert f.registered_at_s is not None and f.registered_at_s < SCRIPT.strokes_from_s
    frames = open_session(result.session_dir, quiet=True).frames
    assert all(r.torso is not None for r in frames)
    ready = [r.index / SCRIPT.fps for r in frames if r.torso.ready]
    assert ready and ready[0] < SCRIPT.turn_from_s  # the rest pose from the band's head, before the head turns
    states = [r.head_band.state for r in frames]
    first_ok = states.index("ok")  # a position in the recorded frames (a loaded machine drops some): not a time
    # the sixth touch, the sternal notch, was asked for and taken; the band is registered only after it
    prompts = [r.head_band.prompt for r in frames[:first_ok]]
    assert any("touch 6 of 6: the sternal notch" in t for t in prompts), sorted(set(prompts))
    info = json.loads((result.sim_dir / "info.json").read_text())
    assert frames[first_ok].index / SCRIPT.fps > SCRIPT.face_touches_end_s  # not before the notch's hold
    offsets = [np.asarray(r.torso.notch_offset_mm) for r in frames if r.torso.ready]
    assert offsets and all(o is not None for o in offsets)
    aimed = np.asarray(info["touches"]["notch_aimed_mm"])
    from guidance.zones.chart import load_chart
    from guidance.zones.neck_twist import notch_point

    # the offset is the aim's (1 mm RMS) plus the registration's error at the notch (1-3 mm), not 40 mm
    true_offset = aimed - notch_point(load_chart().surfaces["neck"])
    assert float(np.linalg.norm(offsets[0] - true_offset)) < 6.0, (offsets[0], true_offset)
    assert "unregistered" not in states[first_ok:] and states.count("moved") <= 5, f.band_states


def test_no_permit_outside_the_plan_and_the_turned_neck_is_treated(session):
    result, _ = session
    assert result.figures.permits_outside_plan == [] and result.figures.permits_on_exclusion == []
    assert result.acceptance.pulses_outside_plan == [] and result.acceptance.pulses_in_exclusion == []
    assert result.acceptance.violations_recorded == 0
    info = json.loads((result.sim_dir / "info.json").read_text())
    frames = open_session(result.session_dir, quiet=True).frames
    gt = load_ground_truth(result.sim_dir)
    # In contact with the head turned beyond 30 degrees, the frames the gate judged itself (a stalled camera, this
    # machine's load, is denied before: 13 to 38 of about 50 such frames on the neck from run to run): a good share
    # of them is permitted, on the neck and on the décolletage.
    turned = [r for r in frames if abs(info["head_poses"][r.index][6]) > 30.0 and gt[r.index].contact
              and r.gate.reason != "camera_stalled"]
    judged_neck = [r for r in turned if gt[r.index].segment_type == "turn"]
    neck = [r for r in judged_neck if r.gate.permit]
    assert len(neck) >= 3 and len(neck) >= 0.3 * len(judged_neck), (len(neck), len(judged_neck))
    assert all(r.zone.surface == "neck" and r.gate.twist_sigma_mm > 2.0 for r in neck)  # the twist's sigma in it
    assert all(r.gate.pose_sigma_mm is None for r in turned if r.gate.permit)  # the band carries it, not the face
    judged_chest = [r for r in turned if gt[r.index].segment_type == "decolletage"]
    chest = [r for r in judged_chest if r.gate.permit]
    assert len(chest) >= 3 and all(r.zone.surface == "decolletage" for r in chest), (len(chest), len(judged_chest))
    # The gate refuses few good pulses for reasons of its own. Of the usable frames (in contact, inside the plan by
    # more than the margin), most denials are the plan's pass limit (1-2 passes on the neck, the strokes go over
    # them again) or a stalled camera (this machine's load: frames over 50 ms old; 0-65 % of the frames from run
    # to run on 2 cores, docs/neck.md); the rest are few.
    from guidance.sim.scalp_session import USABLE_EXTRA_MM
    from guidance.zones.plan import load_plan

    margin = load_plan("neck_decolletage").margin_mm
    usable = [r for r in frames if gt[r.index].contact and gt[r.index].plan_distance_mm >= margin + USABLE_EXTRA_MM]
    own = [r for r in usable if not r.gate.permit and r.gate.reason not in ("passes_exceeded", "camera_stalled")]
    assert len(usable) >= 100 and len(own) <= 0.25 * len(usable), sorted(r.gate.reason for r in own)
    # a good share of the frames the camera did not stall is permitted (CI has stalled 0-65 % of them: 162 of 248)
    f = result.figures
    assert f.usable_frames == len(usable) and f.usable_share_unstalled >= 0.25, (f.usable_share, f.usable_stalled)
    assert result.acceptance.pulses_fired >= 10


def test_the_tip_lands_on_the_neck_chart_and_coverage_follows_the_truth(session):
    result, _ = session
    e = result.figures.chart_error_mm
    print(f"\nneck session: chart error {e}, by phase {result.figures.chart_error_by_phase_mm}, usable share "
          f"{result.figures.usable_share:.2f} {result.figures.usable_share_by_phase}, coverage max diff "
          f"{result.acceptance.coverage_max_diff_pp:.1f} pp, pulses {result.acceptance.pulses_fired}")
    # The neck carried by the head whole is off by 10-25 mm on such a turn, the face pose's twisted neck by 8 mm,
    # a moving torso taken as still 13 mm (p90), the neck without the notch touched 1.3-3.0 mm (docs/neck.md); the
    # issue's bound is 2 mm (0.8-0.9 mm measured, with the décolletage 1.2 mm).
    assert e["n"] >= 100 and e["median"] <= 2.0 and e["p90"] < 4.0, e
    by_phase = result.figures.chart_error_by_phase_mm
    assert by_phase["turn"]["median"] <= 2.0 and by_phase["rest"]["median"] <= 2.0, by_phase
    assert by_phase["decolletage"]["n"] >= 30 and by_phase["decolletage"]["median"] <= 2.0, by_phase
    assert result.acceptance.coverage_max_diff_pp <= 3.0, (result.acceptance.coverage_service,
                                                         result.acceptance.coverage_truth)


def test_the_recording_keeps_the_torso_and_reprocessing_reproduces_every_decision(session, tmp_path):
    result, out = session
    frames = open_session(result.session_dir, quiet=True).frames
    gt = load_ground_truth(result.sim_dir)
    psi = np.array([r.torso.psi_deg for r in frames if r.torso.ready])
    assert psi.max() > 35.0 and psi.min() < -35.0  # the band's head saw the whole turn
    # the torso turned with the client (6 degrees at most) and the recorded torso frame followed the patch
    assert sum(r.patch is not None and r.patch.found for r in frames) > 0.9 * len(frames)
    from guidance.vision.rigid import RigidPose, rotation_angle_deg

    torsos = [RigidPose.from_rvec(np.asarray(r.torso.rest_rvec), np.asarray(r.torso.rest_tvec_mm))
              for r in frames if r.torso.ready]
    turn = max(rotation_angle_deg(torsos[0].R, t.R) for t in torsos)
    assert 4.0 < turn < 8.0, turn
    assert all(gt[r.index].segment_type in ("rest", "turn", "decolletage") for r in frames if r.gate.permit)
    assert (out / "report.html").stat().st_size > 10_000
    page = (out / "report.html").read_text()
    assert "rest pose made at" in page and "touching 5 landmarks" in page and "sternal notch touched" in page
    cmp = reprocess(result.session_dir, tmp_path / "same")
    assert cmp.decisions_changed == 0, cmp.changes
    # the player draws the neck's zones from the recorded torso, as the live overlay did
    from guidance.review.player import FrameComposer
    from guidance.review.timeline import build_timeline
    from guidance.zones.atlas import load_atlas

    # the player's frames are the recording's positions (a loaded machine drops camera frames: not their index)
    turned = next(i for i, r in enumerate(frames) if r.torso.ready and abs(r.torso.psi_deg) > 30.0)
    st = FrameComposer(build_timeline(open_session(result.session_dir, quiet=True), load_atlas())).overlay_state(
        turned, 640)
    assert {"neck_anterior", "neck_lateral_left", "neck_lateral_right"} <= {o.name for o in st.outlines}
    assert "decolletage" in {o.name for o in st.outlines}  # the chest's zone on the torso too
    # ... and, while registering, the step asked for and the landmark's ring, as the live overlay showed them
    composer = FrameComposer(build_timeline(open_session(result.session_dir, quiet=True), load_atlas()))
    asking = [i for i, r in enumerate(frames) if r.head_band.state == "unregistered" and "touch 3 of 6" in r.head_band.prompt
              and r.face.found]
    assert asking, "no frame asked for the chin"
    st = composer.overlay_state(asking[len(asking) // 2], 640)
    assert st.prompt.startswith("touch 3 of 6: the chin") and st.target_px is not None
    notch = [i for i, r in enumerate(frames) if "touch 6 of 6" in r.head_band.prompt]
    assert notch and composer.overlay_state(notch[0], 640).prompt.startswith("touch 6 of 6: the sternal notch")
