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
