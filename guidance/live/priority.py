"""CPU priority for the work that watches the hot path: it runs when the hot path does not.

On a two-core machine the hot path (face and handpiece stages in parallel) uses
both cores for about a third of every frame interval. Anything else that wakes
in that third (drawing the overlay, a browser decoding the console's pictures)
delays a permit. Measured with `guidance bench VIDEO --stage run --console`
(quiet machine, load 0.0–1.6, 3 rounds of 600 armed frames): a headless
chromium on the live page at normal priority added 4.3 ms to the p99
(12.0 → 16.3 ms); the same chromium at idle priority added 0.6 ms; with the
overlay thread niced and the GIL interval below, the console costs −0.08 to
+0.20 ms of p99 (docs/console.md).

Inside the `guidance run` process the threads share Python's GIL as well: a
stage thread that wants it back waits until the holder drops it, at the latest
after the interpreter's switch interval (5 ms by default). With a console
watching, the overlay thread draws and encodes 15 pictures a second; a run
holds the switch interval at 0.5 ms (`gil_handoff`), which took the console's
p99 cost from 0.77 ms to 0.20 ms (4 rounds of 1800 frames each way, quiet
machine, load 0.2–2.2) and left the hot path's own median and p99 as they were
(10.6 / 13.8 → 10.1 / 14.0 ms without a console).

Lowering one's own priority needs no privilege on Linux (raising it back does),
so these helpers only ever lower. Elsewhere they do nothing and say so.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

# os.nice steps added to a watching thread: 10 leaves it ~1/10 of the weight of a nice-0 thread
# (CFS weights 1024 vs 110) whenever both want a core, and all of an idle core otherwise.
WATCHER_NICE = 10

GIL_SWITCH_S = 0.0005  # how long a thread may hold the GIL while another waits for it, during a run

_IDLE_TRAMPOLINE = ("import os, sys\n"
                    "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
                    "os.execvp(sys.argv[1], sys.argv[1:])\n")


def lower_this_thread(steps: int = WATCHER_NICE) -> bool:
    """Lower the calling thread's priority by `steps` nice levels (Linux: per thread). False where not done.

    Threads this thread starts afterwards inherit the lower priority; processes it starts do too.
    """
    if not sys.platform.startswith("linux") or steps <= 0:
        return False
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + steps))
    except OSError:
        return False
    return True


def idle_priority_command(argv: list[str]) -> list[str]:
    """`argv` started at idle scheduling priority (Linux SCHED_IDLE, inherited by all its child processes):
    it gets a core only when nothing else wants one. Unchanged where SCHED_IDLE does not exist."""
    if not argv:
        raise ValueError("idle_priority_command: an empty command")
    if not hasattr(os, "SCHED_IDLE") or not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-c", _IDLE_TRAMPOLINE, *argv]


@contextlib.contextmanager
def gil_handoff(switch_s: float) -> Iterator[None]:
    """The interpreter's GIL switch interval set to `switch_s` for the duration, then put back as it was."""
    if not switch_s > 0:
        raise ValueError(f"gil_handoff: the switch interval must be > 0 s, not {switch_s!r}")
    before = sys.getswitchinterval()
    sys.setswitchinterval(switch_s)
    try:
        yield
    finally:
        sys.setswitchinterval(before)
