import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from guidance.errors import UserError
from guidance.session.recording import SessionRecorder, open_session
from guidance.vision.capture.sources import open_source


def test_a_recording_reads_back_exactly(tmp_path, sample):
    d = tmp_path / "s"
    lm = np.random.default_rng(0).normal(300, 50, (468, 3)).astype(np.float32)
    with open_source(sample("single_face.mp4"), max_frames=10) as src, \
            SessionRecorder(d, {"plan": {"plan_id": "p1"}}) as rec:
        images = []
        for f in src:
            rec.add_frame({"index": f.index, "t_capture_ns": f.t_capture_ns, "permit": f.index % 2 == 0},
                          f.image, lm + f.index if f.index % 3 else None)
            images.append(f.image)
        rec.add_event("arm", armed=True)
        rec.add_event("session_end")
    s = open_session(d)
    assert not s.truncated
    assert s.info["plan"] == {"plan_id": "p1"} and s.info["format_version"] == 1
    assert [r["index"] for r in s.frames] == list(range(10))
    assert [r["permit"] for r in s.frames] == [i % 2 == 0 for i in range(10)]
    for i in range(10):
        img = s.image(i)
        assert img.shape == images[i].shape
        assert np.abs(img.astype(int) - images[i]).mean() < 4  # JPEG, quality 85
        if i % 3:
            assert np.array_equal(s.landmarks(i), lm + i)
        else:
            assert s.landmarks(i) is None
    assert [e["kind"] for e in s.events] == ["arm", "session_end"]


def test_recording_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        SessionRecorder(tmp_path, {})


WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from guidance.session.recording import SessionRecorder
    from guidance.vision.capture.sources import open_source
    rec = SessionRecorder(sys.argv[2], {}, flush_interval_s=0.25)
    lm = np.zeros((468, 3), np.float32)
    i = 0
    while True:
        with open_source(sys.argv[1]) as src:
            for f in src:
                rec.add_frame({"index": i, "t_capture_ns": time.monotonic_ns()}, f.image, lm + i)
                rec.add_event("note", text=f"frame {i}")
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
    assert [r["index"] for r in s.frames] == list(range(n))
    for i in (0, n // 2, n - 1):
        assert s.image(i) is not None and s.image(i).shape == (360, 640, 3)
        assert np.all(s.landmarks(i) == i)
    assert len(list(s.events_of("note"))) >= n - 1
