"""The scripted practitioner arms over the real control channel (a ControlServer on a loopback port), when due, and
asks again while the run refuses."""

from __future__ import annotations

import queue
import time

from guidance.live.control import ControlServer
from guidance.sim.demo import free_port_pair
from guidance.sim.practitioner import Practitioner


def _serve(server: ControlServer, answers: list[tuple[bool, str]], until_s: float) -> list[tuple[int, str]]:
    """Play the run loop: take commands between 'frames' and answer arms from `answers` (then ok)."""
    got: list[tuple[int, str]] = []
    deadline = time.monotonic() + until_s
    while time.monotonic() < deadline:
        try:
            cmd = server.commands.get(timeout=0.02)
        except queue.Empty:
            continue
        got.append((time.monotonic_ns(), str(cmd.get("cmd"))))
        if cmd.get("cmd") == "arm":
            ok, why = answers.pop(0) if answers else (True, "armed")
            server.reply(cmd, ok, why)
    return got


def test_arms_when_due_through_the_console_channel_and_asks_again_when_refused():
    endpoint = f"tcp://127.0.0.1:{free_port_pair()}"
    t0 = time.monotonic_ns() + 300_000_000
    p = Practitioner(endpoint, t0, (0.0, 0.8))
    server = ControlServer(endpoint, token=p.token, frame_fps=0)
    try:
        p.start()
        got = _serve(server, [(True, "armed"), (False, "console lost"), (False, "console lost")], 2.5)
        assert server.watch().ok  # its heartbeats arrive: the run may arm
    finally:
        p.stop()
        server.close()
    arms = [t for t, c in got if c == "arm"]
    assert len(arms) == 4, got  # the first taken, the second refused twice and asked again
    assert arms[0] >= t0 and arms[1] >= t0 + 800_000_000  # never before it is due
    assert [(a.at_s, a.ok) for a in p.attempts] == [(0.0, True), (0.8, True)]
    assert p.attempts[1].detail == "armed" and p.attempts[1].answered_s is not None
    assert p.attempts[1].answered_s >= 0.8


def test_a_practitioner_with_another_token_is_not_heard():
    endpoint = f"tcp://127.0.0.1:{free_port_pair()}"
    p = Practitioner(endpoint, time.monotonic_ns(), (0.0,))
    server = ControlServer(endpoint, token="not-" + p.token, frame_fps=0)
    try:
        p.start()
        got = _serve(server, [], 1.0)
        assert not server.watch().ok
    finally:
        p.stop()
        server.close()
    assert got == []
    assert p.attempts and not p.attempts[0].ok
