"""A rendered scalp session end to end (docs/scalp.md): the practitioner touches the five face landmarks, then the
head turns from frontal to its back over 4 s; the head band, registered by the touches, carries the scalp zones; real
processes, CURVE, recording, report.

Short (30 fps, 11.6 s, 349 frames): the figures in docs/scalp.md come from the longer session of
`docs/make_scalp_figures.py`.
"""

import pytest

from guidance.review.reprocess import reprocess
from guidance.session.reader import open_session
from guidance.sim.ground_truth import load_ground_truth
from guidance.sim.scalp import ScalpScript
from guidance.sim.scalp_session import run_scalp_session

SCRIPT = ScalpScript(fps=30.0, frontal_s=6.8, turn_s=4.0, back_s=0.8, touch_move_s=0.35, touch_hold_s=0.7)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    out = tmp_path_factory.mktemp("scalp") / "out"
    return run_scalp_session(out, script=SCRIPT, log=lambda *a: None), out


def test_the_band_registers_while_frontal_and_carries_the_head_through_the_turn(session):
    result, _ = session
    f = result.figures
    # registered by the touches: after the last one has been held, before the tip leaves it
    assert f.registered_at_s is not None
    assert SCRIPT.touches_end_s - SCRIPT.touch_hold_s < f.registered_at_s < SCRIPT.touches_end_s
    frames = open_session(result.session_dir, quiet=True).frames
    asked = [r.head_band.prompt for r in frames if r.head_band.state == "unregistered"]
    for k, words in enumerate(("forehead", "nasion", "chin", "right ear", "left ear")):
        assert any(f"touch {k + 1} of 5" in a and words in a for a in asked), words
    ok = [r.head_band for r in frames if r.head_band.state == "ok"]
    assert all(b.method == "touch" and b.samples == 5 and b.spread_mm < 3.0 for b in ok)
    assert all(b.sigma_mm < 4.0 for b in ok)  # the touches' own sigma, not the face pose's 8 mm
    # no slip is seen where there is none (a near-frontal face pose may disagree for a frame or two: denied, but
    # the registration stands), and the band is tracked through the turn to the back
    states = [r.head_band.state for r in open_session(result.session_dir, quiet=True).frames]
    first_ok = states.index("ok")
    assert "unregistered" not in states[first_ok:], states
    assert states.count("moved") <= 5, f.band_states
    assert states[first_ok:].count("ok") >= 0.9 * len(states[first_ok:]), f.band_states
    assert f.denies.get("band_unregistered", 0) >= 3  # the first frames: denied until registered


def test_no_permit_with_the_true_tip_outside_the_plan_or_on_an_exclusion(session):
    result, _ = session
    assert result.figures.permits_outside_plan == [] and result.figures.permits_on_exclusion == []
    assert result.acceptance.pulses_outside_plan == [] and result.acceptance.pulses_in_exclusion == []
    assert result.acceptance.violations_recorded == 0
    # ... and the scalp is treated: with the face in view and with the back of the head to the camera
    gt = load_ground_truth(result.sim_dir)
    frames = open_session(result.session_dir, quiet=True).frames
    permitted_face_away = [r.index for r in frames if r.gate.permit and not gt[r.index].face_found]
    assert len(permitted_face_away) >= 10
    # of the usable frames the camera did not stall (this machine's load, 0-65 % from run to run on 2 cores)
    f = result.figures
    assert f.usable_share_unstalled >= 0.3, (f.usable_share, f.usable_stalled, f.usable_frames)
    assert result.acceptance.pulses_fired >= 10


def test_the_tip_lands_on_the_chart_and_coverage_follows_the_truth(session):
    result, _ = session
    e = result.figures.chart_error_mm
    print(f"\nscalp session: chart error {e}, by phase {result.figures.chart_error_by_phase_mm}, usable share "
          f"{result.figures.usable_share:.2f} {result.figures.usable_share_by_phase}, coverage max diff "
          f"{result.acceptance.coverage_max_diff_pp:.1f} pp, pulses {result.acceptance.pulses_fired}")
    # The bound (a touch registration, on the rendered head, which is the model: docs/scalp.md). With the face
    # pose's registration this was 7.9-11 mm.
    assert e["n"] >= 30 and e["median"] <= 2.0 and e["p90"] < 6.0, e
    assert result.acceptance.coverage_max_diff_pp <= 3.0, (result.acceptance.coverage_service,
                                                         result.acceptance.coverage_truth)


def test_the_recording_keeps_the_band_and_reprocessing_reproduces_every_decision(session, tmp_path):
    result, out = session
    frames = open_session(result.session_dir, quiet=True).frames
    assert all(r.head_band is not None for r in frames)
    assert (out / "report.html").stat().st_size > 10_000
    page = (out / "report.html").read_text()
    assert "registered at" in page and "touching 5 landmarks, fit residual" in page  # the trainer sees how
    cmp = reprocess(result.session_dir, tmp_path / "same")
    assert cmp.decisions_changed == 0, cmp.changes
    # the player draws the scalp's zones from the recorded band head, as the live overlay did
    from guidance.review.player import FrameComposer
    from guidance.review.timeline import build_timeline
    from guidance.zones.atlas import load_atlas

    # the player's frames are the recording's positions (a loaded machine drops camera frames: not their index)
    back = next(i for i, r in enumerate(frames) if r.head_band.state == "ok" and r.index / SCRIPT.fps > SCRIPT.frontal_s + 3)
    st = FrameComposer(build_timeline(open_session(result.session_dir, quiet=True), load_atlas())).overlay_state(
        back, 640)
    assert any(o.name.startswith("scalp_") for o in st.outlines)
    wide = reprocess(result.session_dir, tmp_path / "wide", margin_mm=8.0)
    again = open_session(tmp_path / "wide", quiet=True).frames
    assert sum(r.gate.permit for r in again) < sum(r.gate.permit for r in frames)
    assert all(not b.gate.permit for a, b in zip(frames, again) if not a.gate.permit)
    assert wide.frames == len(frames)
