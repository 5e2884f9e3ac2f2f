"""`guidance replay`: the player's state machine, coverage over time, headless output, a cut-off
recording, and the real OpenCV window under Xvfb (read back from the X server with xwd)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from guidance.cli import main
from guidance.session.reader import open_session
from guidance.review.player import FrameComposer, PlayerState, parse_keys
from guidance.review.timeline import CoverageReplay, load_timeline
from guidance.zones.coverage import CoverageMap
from review_sessions import ROOT, make_sessions
from xscreen import read_xwd


@pytest.fixture(scope="session")
def sessions(tmp_path_factory):
    return make_sessions(tmp_path_factory.getbasetemp() / "review_sessions")


@pytest.fixture(scope="session")
def live(sessions):
    return load_timeline(sessions["live"])


@pytest.fixture(scope="session")
def pulsed(sessions):
    return load_timeline(sessions["with_pulses"])


def test_timeline_matches_the_recording(live, sessions):
    recs = [json.loads(x) for x in (sessions["live"] / "frames.jsonl").read_text().splitlines()]
    assert live.n == len(recs)
    assert list(live.permit) == [r["gate"]["permit"] for r in recs]
    end = next(e for e in live.session.events if e.kind == "session_end")
    assert live.denied_frames_by_reason() == dict(sorted(end.summary["denies"].items(),
                                                         key=lambda kv: (-kv[1], kv[0])))
    assert len(live.violations) == end.summary["violations"] >= 1  # the controller's rogue pulse
    # episodes tile the denied frames exactly, each a maximal run of one reason
    covered = sorted(i for e in live.episodes for i in range(e.start, e.end + 1))
    assert covered == [i for i in range(live.n) if not live.permit[i]]
    for e in live.episodes:
        assert len({live.reason[i] for i in range(e.start, e.end + 1)}) == 1
        if e.start > 0 and not live.permit[e.start - 1]:
            assert live.reason[e.start - 1] != e.reason


def test_state_machine_keys(live):
    st = PlayerState.for_timeline(live)
    starts, vframes = st.denial_starts, st.violation_frames
    assert len(starts) >= 3 and vframes
    st.key(ord("n"))
    assert st.frame == min(s for s in starts if s > 0) and not st.playing
    st.key(ord("n"))
    second = st.frame
    assert second == min(s for s in starts if s > min(s for s in starts if s > 0))
    st.key(ord("N"))
    assert st.frame == max(s for s in starts if s < second)
    st.key(65360)  # Home
    assert st.frame == 0
    st.key(ord("v"))
    assert st.frame == vframes[0] == live.violations[0].frame
    st.key(ord("v"))
    assert st.frame == vframes[0] and "no later violation" in st.message
    st.key(ord("V"))
    assert st.frame == vframes[0] and "no earlier violation" in st.message
    at = st.frame
    st.key(ord("."))
    st.key(ord("."))
    st.key(ord(","))
    assert st.frame == min(at + 1, live.n - 1)
    st.key(ord("5"))
    assert st.frame == round(0.5 * (live.n - 1))
    st.key(65367)  # End
    assert st.frame == live.n - 1
    st.key(ord("+"))
    assert st.speed == 2.0
    st.key(ord("-"))
    st.key(ord("-"))
    assert st.speed == 0.5
    st.key(32)  # play at the end starts again from the beginning
    assert st.playing and st.frame == 0
    st.key(ord("q"))
    assert st.quit


def test_playing_follows_recorded_time_at_speed(live):
    st = PlayerState.for_timeline(live)
    st.speed = 2.0
    st.key(32)  # space: play
    st.tick(100.0)  # anchors the clock
    st.tick(101.5)  # 1.5 s of wall time at x2 = 3 s of recording
    assert live.t_s[st.frame] <= 3.0 < (live.t_s[st.frame + 1] if st.frame + 1 < live.n else 1e9)
    assert live.t_s[st.frame] > 3.0 - 0.2
    st.tick(1000.0)
    assert st.frame == live.n - 1 and not st.playing


def test_coverage_over_time_is_rebuilt_in_recorded_order(pulsed):
    rep = CoverageReplay(pulsed)
    mid = pulsed.pulses[len(pulsed.pulses) // 2].frame
    for frame in (pulsed.n - 1, mid, 0, mid):  # forward, back, back, forward again
        got = rep.at(frame).passes.copy()
        ref = CoverageMap.for_plan(pulsed.plan)
        for p in pulsed.pulses:
            if p.frame <= frame:
                ref.deposit_pulse(p.event.tip_u, p.event.tip_v, 10.0)
        assert np.array_equal(got, ref.passes)
    assert rep.at(pulsed.n - 1).passes.sum() > 0


def test_composed_picture_shows_coverage_growing_and_the_recorded_banner(pulsed):
    comp = FrameComposer(pulsed)
    first = pulsed.pulses[0].frame
    last = pulsed.n - 1
    a = comp.compose(max(first - 1, 0))
    b = comp.compose(last)
    h, w = pulsed.session.image(0).shape[:2]
    assert a.shape == b.shape and a.shape[0] == h + comp.STRIP_H and a.shape[1] > w
    # the chart view (right of the frame) gains the coverage colour
    ca, cb = a[:h, w:], b[:h, w:]
    assert np.abs(ca.astype(int) - cb).sum() > 1000
    st = comp.overlay_state(last, w)
    assert st.pulses == len(pulsed.pulses) and st.coverage_px is not None
    assert st.reason == pulsed.reason[last] and st.permit == bool(pulsed.permit[last])


def test_parse_keys():
    assert parse_keys("n, space,q,wait,right") == [ord("n"), 32, ord("q"), None, 65363]
    with pytest.raises(Exception, match="unknown key"):
        parse_keys("bogus")


def test_headless_video_and_snapshot(sessions, tmp_path, capsys):
    out = tmp_path / "replay.mp4"
    assert main(["replay", str(sessions["live"]), "--headless", "--out", str(out)]) == 0
    cap = cv2.VideoCapture(str(out))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert n == len(open_session(sessions["live"]).frames)
    png = tmp_path / "snap.png"
    assert main(["replay", str(sessions["live"]), "--snapshot", "10", "-o", str(png)]) == 0
    assert cv2.imread(str(png)) is not None
    assert main(["replay", str(sessions["live"]), "--snapshot", "100000", "-o", str(png)]) == 2
    assert "outside the recording" in capsys.readouterr().err


def test_cut_off_recording_replays_up_to_the_last_good_record(sessions, tmp_path):
    out = tmp_path / "killed.mp4"
    r = subprocess.run([sys.executable, "-m", "guidance.cli", "replay", str(sessions["killed"]), "--headless",
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "cut off" in r.stderr
    with pytest.warns(UserWarning):
        s = open_session(sessions["killed"])
    assert s.truncated and len(s.frames) >= 40
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(s.frames)
    cap.release()


def test_not_a_recording_is_one_line_exit_2(tmp_path, capsys):
    assert main(["replay", str(tmp_path), "--headless", "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert "info.json" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ real window

def test_real_window_shows_the_rendered_picture(sessions, live, xvfb, tmp_path):
    """Jump to the violation with a scripted key, hold, then compare the X screen with the player's picture."""
    shot = tmp_path / "player.png"
    # Held still for up to ~15 s; the screen is read every 0.4 s and compared as soon as the player's picture is
    # known (it writes it when it quits; until then each dump is kept and compared at the end). One full-suite run
    # in eight saw no window in any of its 17 dumps over 8 s: the hold is long enough to outlast a slow mapping,
    # and a failure now says what the screen showed (a blank screen: std 0).
    keys = "v," + ",".join(["wait"] * 1000) + ",q"
    env = {**os.environ, "DISPLAY": xvfb}
    proc = subprocess.Popen([sys.executable, "-m", "guidance.cli", "replay", str(sessions["live"]), "--paused",
                             "--keys", keys, "--screenshot", str(shot)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dumps = []
    try:
        k = 0
        while proc.poll() is None and k < 200:
            time.sleep(0.4)
            d = tmp_path / f"screen{k}.xwd"
            with open(d, "wb") as fh:
                grabbed = subprocess.run(["xwd", "-root", "-silent", "-display", xvfb], stdout=fh).returncode == 0
            if grabbed and proc.poll() is None:
                dumps.append(d)
            k += 1
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"stopped at frame {live.violations[0].frame}" in out
    rendered = cv2.imread(str(shot))
    assert rendered is not None and float(rendered.std()) > 1.0, "the player's own picture is missing or blank"
    assert dumps, "the player exited before the screen could be read"
    best, seen = 0.0, []
    for d in dumps:
        screen = read_xwd(d)
        seen.append(round(float(screen.std()), 1))
        r = cv2.matchTemplate(screen, rendered, cv2.TM_CCOEFF_NORMED)
        best = max(best, float(r.max()))
        if best > 0.99:
            break
    # the window on the X server shows exactly what the player rendered
    assert best > 0.99, (best, len(dumps), "screen std per dump", seen)


def test_a_late_report_replaces_its_missing_placeholder_in_the_timeline(sessions, live, tmp_path):
    import shutil
    copy = tmp_path / "late"
    shutil.copytree(sessions["live"], copy)
    k = live.n // 2
    key = {"controller": "ctl-late", "controller_boot": "b" * 16, "pulse_seq": 7}
    extra = [{"kind": "violation", "t_ns": 1, "after_frame": k, **key, "outcome": "violation", "reason": "missing",
              "late": False},
             {"kind": "pulse", "t_ns": 2, "after_frame": k + 1, **key, "outcome": "coverage", "reason": "ok",
              "tip_u": 0.0, "tip_v": -50.0, "late": True}]
    with open(copy / "events.jsonl", "a") as fh:
        fh.writelines(json.dumps(e) + "\n" for e in extra)
    tl = load_timeline(copy)
    assert len(tl.pulses) == len(live.pulses) + 1  # the pulse arrived after all: counted once, as a pulse
    assert len(tl.violations) == len(live.violations)
    assert not any(v.event.reason == "missing" for v in tl.violations)
    assert tl.late_reports == 1 and live.late_reports == 0
