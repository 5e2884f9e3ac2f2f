"""The control channel of `guidance run --control` (guidance/live/control.py), in-process on loopback:
heartbeat and browser watch, the token, replies, photos, pictures, the orphan stop, loopback only."""

from __future__ import annotations

import time

import numpy as np
import pytest

from guidance.errors import UserError
from guidance.live.control import ControlClient, ControlServer, check_endpoint


def _until(cond, timeout_s: float = 5.0) -> bool:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_loopback_only():
    for bad in ("tcp://0.0.0.0:5000", "tcp://192.0.2.1:5000", "ipc:///tmp/x", "tcp://127.0.0.1:http"):
        with pytest.raises(UserError):
            check_endpoint(bad)
    assert check_endpoint("tcp://127.0.0.1:0") == "tcp://127.0.0.1:*"


def test_watch_heartbeat_browsers_token_commands_and_pictures():
    server = ControlServer("tcp://127.0.0.1:*", token="secret", timeout_s=0.3, orphan_stop_s=0.5)
    watching = {"n": 1}
    try:
        assert server.watch().ok is False and server.watch().cause == "console lost"
        stranger = ControlClient(server.endpoint, token="wrong")
        time.sleep(0.5)
        assert server.watch().cause == "console lost", "a message without the token is dropped"
        stranger.close()
        assert server.orphaned()
        client = ControlClient(server.endpoint, token="secret", browsers=lambda: watching["n"])
        assert _until(lambda: server.watch().ok)
        assert not server.orphaned()
        watching["n"] = 0
        assert _until(lambda: server.watch().cause == "no browser watching")
        watching["n"] = 2
        assert _until(lambda: server.watch().ok)
        server.publish_session({"plan_id": "p1"})
        assert _until(lambda: client.session.get("plan_id") == "p1")
        # a command reaches the run loop's queue; its reply comes back to the waiting request
        cid = client.send("arm")
        cmd = server.commands.get(timeout=5)
        assert cmd["cmd"] == "arm" and cmd["id"] == cid
        server.reply(cmd, False, "no browser watching")
        server.reply({"cmd": "pause", "id": "nobody"}, True)
        # request() waits for its own reply
        import threading
        def answer():
            c = server.commands.get(timeout=5)
            server.reply(c, True, "disarmed")
        threading.Thread(target=answer).start()
        r = client.request("disarm", timeout_s=5)
        assert r["ok"] and r["detail"] == "disarmed"
        # a photo: the raw frame as a JPEG
        img = np.full((48, 64, 3), 120, np.uint8)
        threading.Thread(target=lambda: server.grab(server.commands.get(timeout=5), img)).start()
        jpg = client.grab(timeout_s=5)
        assert jpg is not None and jpg[:2] == b"\xff\xd8"
        # overlay pictures: rate-limited, newest wins
        assert server.frame_due()
        server.offer_frame(img, {"armed": True, "reason": "ok"})
        n, pic = client.wait_frame(0, 5)
        assert n == 1 and pic is not None and client.state["armed"] is True
        assert not server.frame_due(), "the next picture waits for the frame interval"
        # the console goes away: lost after the timeout, orphaned after orphan_stop_s
        client.close()
        assert _until(lambda: server.watch().cause == "console lost")
        assert _until(lambda: server.orphaned())
    finally:
        server.close()
