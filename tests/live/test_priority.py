"""The watchers of the hot path yield to it: the overlay thread runs niced, a kiosk browser at SCHED_IDLE."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from guidance.live.display import Display
from guidance.live.priority import WATCHER_NICE, idle_priority_command, lower_this_thread

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice and SCHED_IDLE are Linux")


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@linux
def test_lower_this_thread_lowers_only_the_calling_thread():
    main = _nice(threading.get_native_id())
    seen: dict = {}

    def work():
        seen["ok"] = lower_this_thread(3)
        seen["own"] = _nice(threading.get_native_id())
        seen["main"] = _nice(main_tid)
    main_tid = threading.get_native_id()
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["ok"] is True
    assert seen["own"] == min(19, main + 3)
    assert seen["main"] == main == _nice(threading.get_native_id())
    assert lower_this_thread(0) is False  # nothing asked, nothing done


@linux
def test_the_overlay_thread_runs_below_the_hot_path():
    d = Display(window=False, out=None, fps=30.0)
    try:
        for _ in range(200):  # the thread lowers itself as it starts
            if d._thread.native_id is not None and _nice(d._thread.native_id) != _nice(threading.get_native_id()):
                break
            threading.Event().wait(0.01)
        assert _nice(d._thread.native_id) == min(19, _nice(threading.get_native_id()) + WATCHER_NICE)
    finally:
        d.close()


@linux
def test_idle_priority_command_runs_the_program_and_its_children_at_sched_idle():
    probe = ("import os, subprocess, sys\n"
             "print(os.sched_getscheduler(0))\n"
             "print(subprocess.run([sys.executable, '-c', 'import os; print(os.sched_getscheduler(0))'],"
             " capture_output=True, text=True).stdout.strip())\n"
             "print(' '.join(sys.argv[1:]))\n")
    r = subprocess.run(idle_priority_command([sys.executable, "-c", probe, "a b", "c"]), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    own, child, argv = r.stdout.splitlines()
    assert int(own) == os.SCHED_IDLE and int(child) == os.SCHED_IDLE
    assert argv == "a b c"  # arguments pass through unchanged
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller keeps its own
    with pytest.raises(ValueError):
        idle_priority_command([])


def test_gil_handoff_holds_the_interval_for_the_run_and_puts_it_back():
    from guidance.live.priority import GIL_SWITCH_S, gil_handoff
    before = sys.getswitchinterval()
    with gil_handoff(GIL_SWITCH_S):
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_S)
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError), gil_handoff(0.001):
        raise RuntimeError("the run failed")
    assert sys.getswitchinterval() == before  # also after a failure
    with pytest.raises(ValueError):
        with gil_handoff(0):
            pass


def test_a_run_holds_the_short_switch_interval_and_records_it(tmp_path, sample):
    """In process: `guidance run` runs under GIL_SWITCH_S, writes it into info.json, and puts the interval back."""
    import json

    from guidance.cli import main
    from guidance.live.priority import GIL_SWITCH_S
    from guidance.resources import verified_path
    before = sys.getswitchinterval()
    rec = tmp_path / "rec"
    assert main(["run", "--source", str(sample("single_face.mp4")), "--plan", str(verified_path("full_face", kind="plans")),
                 "--headless", "--no-realtime", "--max-frames", "3", "--record", str(rec)]) == 0
    runtime = json.loads((rec / "info.json").read_text())["runtime"]
    assert runtime["gil_switch_s"] == pytest.approx(GIL_SWITCH_S) and runtime["cpus"] == os.cpu_count()
    assert sys.getswitchinterval() == before


def test_the_overlay_skips_frames_the_gate_published_late_and_its_video_keeps_the_camera_time(tmp_path):
    """A frame the gate published late is drawn only if none was for 1/min_fps s (drawing and encoding gave the
    rendered neck session's gate 43 ms median latency and 225 stalled frames; 29 ms and none when it yields); the
    video repeats the last drawn picture for each skipped frame, so it has one picture per camera frame."""
    import cv2
    import numpy as np

    from guidance.live.overlay import OverlayState

    out = tmp_path / "overlay.mkv"
    d = Display(window=False, out=str(out), fps=30.0, min_fps=10.0)
    drawn: list[int] = []
    try:
        for i in range(20):  # on time: every frame is drawn (each awaited, so the queue of 4 never fills)
            d.submit(np.full((120, 160, 3), i, np.uint8), OverlayState(armed=True), lambda s, i=i: drawn.append(i))
            for _ in range(500):
                if len(drawn) > i:
                    break
                threading.Event().wait(0.01)
        threading.Event().wait(0.15)  # more than 1/min_fps since the last one drawn
        for i in range(20, 50):  # behind, 30 frames in well under 0.1 s: the first drawn, the rest yielded
            d.submit(np.full((120, 160, 3), i, np.uint8), OverlayState(armed=True), lambda s, i=i: drawn.append(i),
                     behind=True)
    finally:
        d.close()
    assert drawn[:20] == list(range(20)) and 20 in drawn
    assert d.yielded >= 25 and len(drawn) <= 25 and d.dropped >= d.yielded
    assert d.written == 50
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 50  # one picture per camera frame, skipped ones repeated
