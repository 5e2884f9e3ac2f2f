"""The issue's fourth scene: a second face enters, passes in front of the client's and leaves during a real-time face
session on an evaluation face; judged against the simulation's truth as the other sessions are.

The session here is the scene's first 14 s (the module's default runs the demo path whole, 27 s): the second face
comes 3 s in, is gone at 10.4 s, and the practitioner arms again at 10.9 s, so every part of the scene is in it."""

from __future__ import annotations

import json

import pytest

from guidance.gate import GatePolicy
from guidance.session.reader import open_session
from guidance.sim.two_face_session import ENTER_S, run_two_face_session

FRAMES = 420  # 14 s at 30 fps


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_face") / "out"
    return run_two_face_session(out, frames=FRAMES, enter_s=ENTER_S, report=False, log=lambda *a: None), out


def test_no_permit_outside_the_plan_while_a_second_face_comes_and_goes(session):
    r, out = session
    f, a = r.session.figures, r.session.acceptance
    assert f.permits_outside_plan == [] and f.permits_on_exclusion == [], (f.permits_outside_plan,
                                                                           f.permits_on_exclusion)
    assert a.pulses_outside_plan == [] and a.pulses_in_exclusion == [] and a.violations_recorded == 0
    assert a.pulses_fired >= 5
    # every phase of the second face's track happened, and covering the client's face took it from the gate
    assert all(p.frames >= 10 for p in r.phases.values()), {k: p.frames for k, p in r.phases.items()}
    covering = r.phases["covering"]
    assert covering.other_face >= 5 and covering.permits <= 0.2 * covering.frames, vars(covering)
    saved = json.loads((out / "two_face.json").read_text())
    assert set(saved["by_second_face"]) == {"alone", "beside", "covering"}


def test_the_tip_stays_on_the_clients_chart_and_coverage_follows_the_truth(session):
    r, _ = session
    f, a = r.session.figures, r.session.acceptance
    phases = {k: (p.frames, p.permits, p.other_face, p.not_armed, p.chart_error_mm.get("median"))
              for k, p in r.phases.items()}
    print(f"\ntwo-face session: chart error {f.chart_error_mm}, coverage max diff {a.coverage_max_diff_pp:.1f} pp, "
          f"usable share {f.usable_share:.2f} ({f.usable_share_unstalled:.2f} unstalled), pulses {a.pulses_fired}, "
          f"by phase {phases}")
    # The client is an evaluation face: its chart error is the face mapping's on an unseen face (docs/face_tracking.md:
    # 1.9 mm median over the whole session, 3.1 mm over its first 8 s, where the handpiece covers the forehead's top
    # before the skin there was ever seen). What the second face must not do is carry the mapping onto itself:
    # beside the client that is 100 mm or more off, in front of it tens of millimetres; this clip's own worst frame
    # is 11-14 mm with or without it.
    assert f.chart_error_mm["n"] >= 50 and f.chart_error_mm["median"] <= 5.0, f.chart_error_mm
    for k in ("beside", "covering"):
        e = r.phases[k].chart_error_mm
        assert e["n"] == 0 or e["max"] < 20.0, (k, e)
    assert a.coverage_max_diff_pp <= 3.0  # the bound
    # the usable share is reported; before the second face comes, the gate permits usable frames
    assert 0.0 <= f.usable_share <= 1.0 and f.usable_frames >= 30
    assert r.phases["alone"].usable_permitted >= 3, vars(r.phases["alone"])


def test_the_practitioner_arms_again_once_the_other_face_has_gone_and_the_client_is_kept(session):
    r, out = session
    # both arms went through the console's channel and were taken
    assert [a["ok"] for a in r.arms] == [True, True], r.arms
    rearm_s = r.arms[1]["at_s"]
    assert rearm_s > ENTER_S + 7.0  # after the second face's track
    rec = open_session(out / "session", quiet=True)
    arms = [e.cause for e in rec.events_of("arm")]
    assert arms == ["console", "console"], arms
    assert [e.cause for e in rec.events_of("disarm")], "the session disarmed while the client was hidden"
    # after the re-arm the gate judges the client's face again: armed, the client found, nobody else's face taken
    fps = json.loads((r.session.sim_dir / "info.json").read_text())["face_video"]["fps"]
    after = [f for f in rec.frames if f.index / fps >= rearm_s + 0.3]
    assert len(after) >= 60
    assert not any(f.gate.reason in ("not_armed", "other_face", "no_face") for f in after), \
        sorted({f.gate.reason for f in after})
    mapped = [f for f in after if f.zone is not None and f.zone.chart_mm is not None]
    assert len(mapped) >= 0.5 * len(after)


def test_the_clients_face_found_between_frames_of_the_other_face_is_never_permitted(session):
    """Where the other face covers the client's, the tracker can find the client's face for a frame or two between
    frames that are someone else's, its mesh half on the other face (8-12 mm off): no permit until the client's
    track has held for the gate's client_settle_ms."""
    _, out = session
    rec = open_session(out / "session", quiet=True)
    settle_ns = GatePolicy().client_settle_ms * 1e6
    last, early = None, []
    for f in rec.frames:
        if not f.face.found and f.face.other_faces > 0:
            last = f.t_capture_ns
        elif last is not None and f.t_capture_ns - last < settle_ns and f.gate.permit:
            early.append(f.index)
    assert last is not None, "the second face never had the client's place"
    assert early == []
