"""CPU priority for the work that watches the hot path: it runs when the hot path does not.

On a two-core machine the hot path (face and handpiece stages in parallel) uses
both cores for about a third of every frame interval. Anything else that wakes
in that third (drawing the overlay, a browser decoding the console's pictures)
delays a permit. Measured with `guidance bench VIDEO --stage run --console`
(quiet machine, load 0.0–1.6, 3 rounds of 600 armed frames): a headless
chromium on the live page at normal priority added 4.3 ms to the p99
(12.0 → 16.3 ms); the same chromium at idle priority added 0.6 ms.

Lowering one's own priority needs no privilege on Linux (raising it back does),
so these helpers only ever lower. Elsewhere they do nothing and say so.
"""

from __future__ import annotations

import os
import sys
import threading

# os.nice steps added to a watching thread: 10 leaves it ~1/10 of the weight of a nice-0 thread
# (CFS weights 1024 vs 110) whenever both want a core, and all of an idle core otherwise.
WATCHER_NICE = 10

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
