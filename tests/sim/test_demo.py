"""The demo end to end on a short simulated session (real processes, CURVE, recording), and
re-processing of that recording: exact with the same plan, a superset of denials with a wider margin."""

import json
import warnings

import pytest

from guidance.sim.demo import run_demo
from guidance.session.reader import open_session
from guidance.review.reprocess import reprocess


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    acc = run_demo(out, max_frames=330, log=lambda *a: None)
    return out, acc


def test_the_demo_session_is_safe_and_complete(demo):
    out, acc = demo
    assert acc.pulses_fired > 5  # the controller did fire, under permits
    assert acc.pulses_placed == acc.pulses_fired
    assert acc.pulses_in_exclusion == [] and acc.pulses_outside_plan == []
    assert acc.violations_recorded == 0
    # pulses fired in contact land where the true tip was: the tracker's landmark model and the pulse timing
    assert acc.pulse_error_mm["n"] >= 5 and acc.pulse_error_mm["median"] < 3.0, acc.pulse_error_mm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = open_session(out / "session")
    assert not s.truncated
    assert s.info["landmark_model"] in s.info["models"]  # which landmark model tracked, and its sha256
    assert all(r.video for r in s.frames)  # every processed frame is in the recording with its image
    delivered = [e for e in s.events if e.kind == "pulse"]
    assert len(delivered) == acc.pulses_fired  # every fired pulse reached coverage (none lost)
    assert (out / "overlay.mkv").stat().st_size > 100_000
    assert (out / "report.html").exists()
    saved = json.loads((out / "acceptance.json").read_text())
    assert saved["safe"] is True and set(saved["coverage_truth"]) == set(saved["coverage_service"])
    assert saved["pulse_error_mm"] == acc.pulse_error_mm


def test_reprocessing_with_the_same_plan_reproduces_every_decision(demo, tmp_path):
    out, _ = demo
    cmp = reprocess(out / "session", tmp_path / "same")
    assert cmp.frames > 200
    assert cmp.decisions_changed == 0, cmp.changes
    assert cmp.pulses_blocked_now == []
    assert cmp.coverage_now == cmp.coverage_then


def test_a_wider_margin_denies_a_superset(demo, tmp_path):
    out, _ = demo
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = open_session(out / "session")
    reprocess(out / "session", tmp_path / "wide", margin_mm=6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wide = open_session(tmp_path / "wide")
    before = {r.index for r in original.frames if not r.gate.permit}
    after = {r.index for r in wide.frames if not r.gate.permit}
    assert before <= after
    assert len(after) > len(before)  # and the margin did bite somewhere
    cmp = json.loads((tmp_path / "wide" / "comparison.json").read_text())
    assert cmp["permitted_now"] < cmp["permitted_then"]


def test_replay_plays_the_demo_recording(demo, tmp_path):
    import subprocess
    import sys

    import cv2
    out, _ = demo
    video = tmp_path / "replay.mp4"
    r = subprocess.run([sys.executable, "-m", "guidance.cli", "replay", str(out / "session"), "--headless",
                        "--out", str(video)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = len(open_session(out / "session").frames)
    assert int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT)) == n


def test_the_tuned_landmark_model_maps_the_tip_closer_to_the_truth(demo):
    """On the demo's face (held out of training), with the handpiece on the skin: `guidance bench --stage occlusion`."""
    from guidance.vision.face.landmarks import OCCLUSION_LANDMARK_MODEL as LANDMARK_MODEL, ORIGINAL_LANDMARK_MODEL
    from guidance.bench.occlusion import format_occlusion, run_occlusion_bench
    out, _ = demo
    r = run_occlusion_bench(out / "simulation" / "simulated.avi")
    assert r[LANDMARK_MODEL]["contact_frames"] > 100
    assert r[LANDMARK_MODEL]["median_mm"] < 0.8 * r[ORIGINAL_LANDMARK_MODEL]["median_mm"], format_occlusion(r)
    assert r[LANDMARK_MODEL]["unmapped"] <= r[ORIGINAL_LANDMARK_MODEL]["unmapped"]
