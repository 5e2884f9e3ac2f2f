import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from guidance.errors import UserError
from guidance.session import records as rec
from guidance.session.reader import open_session
from guidance.session.writer import SessionRecorder
from guidance.vision.capture.sources import open_source


def frame(i: int, t_ns: int, permit: bool = True) -> rec.FrameRecord:
    """A minimal, valid frame record."""
    return rec.FrameRecord(index=i, size=(640, 360), t_capture_ns=t_ns, t_face_ns=t_ns, t_tip_ns=t_ns, t_zone_ns=t_ns,
                           t_decided_ns=t_ns, t_published_ns=t_ns, armed=True,
                           face=rec.FaceRecord(found=True, presence=1.0),
                           gate=rec.GateRecord(permit=permit, reason="ok" if permit else "near_boundary"))


def test_a_recording_reads_back_exactly(tmp_path, sample):
    d = tmp_path / "s"
    lm = np.random.default_rng(0).normal(300, 50, (468, 3)).astype(np.float32)
    with open_source(sample("single_face.mp4"), max_frames=10) as src, \
            SessionRecorder(d, {"plan": {"plan_id": "p1"}}) as w:
        images = []
        for f in src:
            w.add_frame(frame(f.index, f.t_capture_ns, f.index % 2 == 0), f.image, lm + f.index if f.index % 3 else None)
            images.append(f.image)
        w.add_event(rec.Arm(1, cause="test"))
        w.add_event(rec.SessionEnd(2))
    s = open_session(d)
    assert not s.truncated and not s.damaged
    assert s.info["plan"] == {"plan_id": "p1"} and s.info["format_version"] == rec.FORMAT_VERSION
    assert [r.index for r in s.frames] == list(range(10))
    assert [r.gate.permit for r in s.frames] == [i % 2 == 0 for i in range(10)]
    for i in range(10):
        img = s.image(i)
        assert img.shape == images[i].shape
        assert np.abs(img.astype(int) - images[i]).mean() < 4  # JPEG, quality 85
        if i % 3:
            assert np.array_equal(s.landmarks(i), lm + i)
        else:
            assert s.landmarks(i) is None
    assert [e.kind for e in s.events] == ["arm", "session_end"]
    assert s.events[0] == rec.Arm(1, cause="test")


def test_recording_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        SessionRecorder(tmp_path, {})


WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from guidance.session import records as rec
    from guidance.session.writer import SessionRecorder
    from guidance.vision.capture.sources import open_source
    w = SessionRecorder(sys.argv[2], {}, flush_interval_s=0.25)
    lm = np.zeros((468, 3), np.float32)
    i = 0
    while True:
        with open_source(sys.argv[1]) as src:
            for f in src:
                t = time.monotonic_ns()
                w.add_frame(rec.FrameRecord(i, (640, 360), t, t, t, t, t, t, True, rec.FaceRecord(True, 1.0),
                                            rec.GateRecord(True, "ok")), f.image, lm + i)
                w.add_event(rec.Note(t, text=f"frame {i}"))
                i += 1
                if i == 20:
                    print("ready", flush=True)
                time.sleep(0.01)
""")


def test_kill_9_leaves_a_readable_recording(tmp_path, sample):
    d = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(sample("single_face.mp4")), str(d)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with pytest.warns(UserWarning, match="cut off"):
        s = open_session(d)
    assert s.truncated
    n = len(s.frames)
    assert n >= 20  # everything up to the last flush (every 0.25 s)
    assert [r.index for r in s.frames] == list(range(n))
    for i in (0, n // 2, n - 1):
        assert s.image(i) is not None and s.image(i).shape == (360, 640, 3)
        assert np.all(s.landmarks(i) == i)
    assert len(list(s.events_of("note"))) >= n - 1


def test_a_record_folder_under_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        SessionRecorder(tmp_path / "missing" / "s", {})
    assert not (tmp_path / "missing").exists()


def test_a_garbled_line_in_the_middle_is_damage_not_a_cut(tmp_path):
    d = tmp_path / "s"
    with SessionRecorder(d, {}) as w:
        for i in range(5):
            w.add_frame(frame(i, 1000 + i), None)
        w.add_event(rec.SessionEnd(9))
    lines = (d / "frames.jsonl").read_text().splitlines()
    lines[2] = lines[2][:40]  # a garbled record in the middle
    (d / "frames.jsonl").write_text("\n".join(lines) + "\n")
    s = open_session(d, quiet=True)
    assert s.damaged and any("frames.jsonl line 3" in x for x in s.damage)
    assert [r.index for r in s.frames] == [0, 1, 3, 4]


def test_a_missing_video_file_is_damage(tmp_path, sample):
    d = tmp_path / "s"
    with open_source(sample("single_face.mp4"), max_frames=3) as src, SessionRecorder(d, {}) as w:
        for f in src:
            w.add_frame(frame(f.index, f.t_capture_ns), f.image)
        w.add_event(rec.SessionEnd(9))
    (d / "video.mjpeg").unlink()
    s = open_session(d, quiet=True)
    assert s.damaged and any("video.mjpeg: missing" in x for x in s.damage)
    assert len(s.frames) == 3 and s.image(0) is None
