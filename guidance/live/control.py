"""The local control channel of `guidance run --control tcp://127.0.0.1:PORT`: how a console drives a session.

The console is never in the permit path. The run process owns the session (the
hot path, the gate, the permits, the recording); a console only *asks* it to
arm, disarm, pause, resume, grab a photo or stop, and watches the state and the
overlay pictures it publishes. Commands reach the run loop through a queue and
are applied between two frames, exactly where the window's keys are applied.

Fail closed, twice over:
- the console sends a heartbeat every `HEARTBEAT_S` saying how many browsers are
  watching its live page; the run loop disarms when the newest heartbeat is older
  than `timeout_s` (the console crashed, hung or was killed) or says no browser
  is watching (the practitioner's tablet closed the page or lost the network);
- the session cannot be armed (by the console, the window's key or `--arm`)
  while either holds, and after `orphan_stop_s` with no console at all the run
  stops by itself, so a crashed console never leaves a camera session behind.

Wire: one ZeroMQ ROUTER socket in the run process (bound to a loopback address
only), one DEALER in the console. Console → run: a JSON object
`{"cmd": ..., "id": ..., "token": ...}`; run → console: a JSON header and, for
pictures, the JPEG as a second frame. The console hands its child a random token
(`GUIDANCE_CONTROL_TOKEN`); a message without it is dropped. The ROUTER never
blocks (high-water mark 4, unroutable messages dropped): a slow console loses
pictures, the run loop never waits for it.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np
import zmq

from guidance.errors import UserError

PROTOCOL = "guidance-control/1"
HEARTBEAT_S = 0.2  # console → run
TIMEOUT_S = 0.6  # no heartbeat for this long: disarm (within 1 s with one frame interval on top)
BROWSER_TIMEOUT_S = 0.6  # the console counts a browser as watching while its last ping is this recent
ORPHAN_STOP_S = 30.0  # no console at all for this long: the run stops by itself
TOKEN_ENV = "GUIDANCE_CONTROL_TOKEN"
COMMANDS = ("heartbeat", "arm", "disarm", "pause", "resume", "stop", "grab", "note")
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def check_endpoint(endpoint: str) -> str:
    """`tcp://127.0.0.1:PORT` (or `:0` / `:*` for any free port); anything off the machine is refused."""
    if not endpoint.startswith("tcp://"):
        raise UserError("expected tcp://127.0.0.1:PORT", field="--control")
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    if host not in LOOPBACK:
        raise UserError("the control channel binds a loopback address only (127.0.0.1)", field="--control")
    if not (port.isdigit() or port == "*"):
        raise UserError("expected tcp://127.0.0.1:PORT", field="--control")
    return endpoint.replace(":0", ":*") if port == "0" else endpoint


@dataclass
class Watch:
    """What the run loop asks between frames: may the session be (or stay) armed?"""

    ok: bool
    cause: str  # why not ("console lost", "no browser watching"); "" when ok


class ControlServer:
    """The run process's end: a thread owning the ROUTER socket; the run loop reads `commands` between frames."""

    def __init__(self, endpoint: str, *, token: str | None = None, timeout_s: float = TIMEOUT_S,
                 orphan_stop_s: float = ORPHAN_STOP_S, frame_fps: float = 15.0, clock: Callable[[], int] = time.monotonic_ns):
        self.clock = clock
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout_ns = int(timeout_s * 1e9)
        self.orphan_stop_ns = int(orphan_stop_s * 1e9)
        self.frame_interval_ns = int(1e9 / frame_fps) if frame_fps > 0 else 0
        self.ctx: zmq.Context = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 200)
        self.sock.setsockopt(zmq.SNDHWM, 4)
        self.sock.setsockopt(zmq.RCVHWM, 64)
        try:
            self.sock.bind(check_endpoint(endpoint))
        except zmq.ZMQError as exc:
            self.sock.close(0)
            if exc.errno == zmq.EADDRINUSE:
                raise UserError(f"control endpoint {endpoint} is busy", field="--control") from None
            raise UserError(f"control endpoint {endpoint!r} cannot be bound: {exc}", field="--control") from None
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.commands: queue.Queue[dict] = queue.Queue()
        self._out: queue.Queue[tuple[dict, Any]] = queue.Queue(maxsize=64)  # replies, grabs, session info
        self._frame: tuple[dict, bytes] | None = None  # newest overlay picture (newest wins)
        self._lock = threading.Lock()
        self._peer: bytes | None = None
        self._started_ns = clock()
        self._last_hb_ns: int | None = None
        self._browsers = 0
        self._last_frame_ns = 0
        self.session_info: dict = {}
        self.dropped_messages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()

    # ---- run loop side (capture thread, between frames) ----------------------------------------
    def watch(self, now_ns: int | None = None) -> Watch:
        now = self.clock() if now_ns is None else now_ns
        with self._lock:
            hb, browsers = self._last_hb_ns, self._browsers
        if hb is None or now - hb > self.timeout_ns:
            return Watch(False, "console lost")
        if browsers < 1:
            return Watch(False, "no browser watching")
        return Watch(True, "")

    def orphaned(self, now_ns: int | None = None) -> bool:
        """No console heard for `orphan_stop_s` (counted from the start when none ever connected)."""
        now = self.clock() if now_ns is None else now_ns
        with self._lock:
            since = self._last_hb_ns if self._last_hb_ns is not None else self._started_ns
        return now - since > self.orphan_stop_ns

    def reply(self, cmd: dict, ok: bool, detail: str = "") -> None:
        self._put({"type": "reply", "id": cmd.get("id"), "cmd": cmd.get("cmd"), "ok": ok, "detail": detail}, None)

    def grab(self, cmd: dict, image: np.ndarray) -> None:
        """A photo from the camera: the raw frame, encoded on the control thread (not the capture thread)."""
        self._put({"type": "grab", "id": cmd.get("id"), "size": [int(image.shape[1]), int(image.shape[0])]}, image)

    def publish_session(self, info: dict) -> None:
        self.session_info = dict(info)
        self._put({"type": "session", **self.session_info}, None)

    def publish_end(self, summary: dict) -> None:
        self._put({"type": "end", "summary": summary}, None)

    # ---- overlay thread side ---------------------------------------------------------------------
    def frame_due(self) -> bool:
        """Whether the next overlay picture would be sent (rate-limited; only while a console listens)."""
        with self._lock:
            if self._peer is None:
                return False
        return self.clock() - self._last_frame_ns >= self.frame_interval_ns

    def offer_frame(self, picture: np.ndarray, state: dict) -> None:
        """The overlay picture as drawn for the window, and its state; JPEG-encoded here (overlay thread)."""
        self._last_frame_ns = self.clock()
        ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 75])
        if ok:
            with self._lock:
                self._frame = ({"type": "frame", **state}, buf.tobytes())

    # ---- the control thread ----------------------------------------------------------------------
    def _put(self, header: dict, payload: Any) -> None:
        try:
            self._out.put_nowait((header, payload))
        except queue.Full:
            self.dropped_messages += 1

    def _send(self, header: dict, payload: Any) -> None:
        if self._peer is None:
            return
        frames = [self._peer, json.dumps(header, default=str).encode()]
        if isinstance(payload, np.ndarray):
            ok, buf = cv2.imencode(".jpg", payload, [cv2.IMWRITE_JPEG_QUALITY, 92])
            frames.append(buf.tobytes() if ok else b"")
        elif isinstance(payload, bytes):
            frames.append(payload)
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError:  # full or gone: a console that cannot keep up loses messages
            self.dropped_messages += 1

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                events = dict(poller.poll(20))
            except zmq.ZMQError:
                break
            if self.sock in events:
                while True:
                    try:
                        parts = self.sock.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._receive(parts)
            while True:
                try:
                    header, payload = self._out.get_nowait()
                except queue.Empty:
                    break
                self._send(header, payload)
            with self._lock:
                frame, self._frame = self._frame, None
            if frame is not None:
                self._send(*frame)
        # what is still queued (the end message) goes out before the socket closes
        while True:
            try:
                header, payload = self._out.get_nowait()
            except queue.Empty:
                break
            self._send(header, payload)

    def _receive(self, parts: list[bytes]) -> None:
        if len(parts) < 2:
            return
        try:
            msg = json.loads(parts[-1])
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        if not isinstance(msg, dict) or msg.get("cmd") not in COMMANDS:
            return
        if self.token and msg.get("token") != self.token:
            return  # not our console
        now = self.clock()
        new_peer = False
        with self._lock:
            new_peer = self._peer != parts[0]
            self._peer = parts[0]
            if msg["cmd"] == "heartbeat":
                self._last_hb_ns = now
                b = msg.get("browsers", 0)
                self._browsers = int(b) if isinstance(b, int) and not isinstance(b, bool) else 0
        if new_peer and self.session_info:
            self._send({"type": "session", **self.session_info}, None)
        if msg["cmd"] != "heartbeat":
            self.commands.put(msg)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close(linger=200)


class ControlClient:
    """The console's end: heartbeats, commands with replies, the newest overlay picture and state.

    `browsers()` is asked before every heartbeat: how many browsers watch the live page right now.
    """

    def __init__(self, endpoint: str, *, token: str | None = None, browsers: Callable[[], int] = lambda: 1,
                 heartbeat_s: float = HEARTBEAT_S):
        self.endpoint = endpoint
        self.token = token
        self.browsers = browsers
        self.heartbeat_s = heartbeat_s
        self.ctx: zmq.Context = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 8)
        self.sock.connect(endpoint)
        self._cmds: queue.Queue[dict] = queue.Queue()
        self._lock = threading.Condition()
        self.frame: bytes | None = None
        self.state: dict = {}
        self.session: dict = {}
        self.end: dict | None = None
        self.frames_received = 0
        self._replies: dict[str, dict] = {}
        self._grabs: dict[str, bytes] = {}
        self._n = 0
        self._stop = threading.Event()
        self.last_heard = 0.0
        self._thread = threading.Thread(target=self._run, name="control-client", daemon=True)
        self._thread.start()

    def send(self, cmd: str, **kw: Any) -> str:
        with self._lock:
            self._n += 1
            cid = f"c{self._n}"
        self._cmds.put({"cmd": cmd, "id": cid, **kw})
        return cid

    def request(self, cmd: str, timeout_s: float = 3.0, **kw: Any) -> dict:
        """Send a command and wait for the run loop's reply (applied between frames)."""
        cid = self.send(cmd, **kw)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while cid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"ok": False, "detail": "no reply from the session (is it running?)"}
                self._lock.wait(left)
            return self._replies.pop(cid)

    def grab(self, timeout_s: float = 3.0) -> bytes | None:
        cid = self.send("grab")
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while cid not in self._grabs:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)
            return self._grabs.pop(cid)

    def wait_frame(self, after: int, timeout_s: float) -> tuple[int, bytes | None]:
        """Block until a picture newer than number `after` arrived (or the timeout); returns (number, JPEG)."""
        with self._lock:
            self._lock.wait_for(lambda: self.frames_received > after or self._stop.is_set(), timeout_s)
            return self.frames_received, self.frame

    def _out(self, msg: dict) -> None:
        if self.token:
            msg["token"] = self.token
        try:
            self.sock.send(json.dumps(msg).encode(), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _run(self) -> None:
        next_hb = 0.0
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_hb:
                try:
                    n = int(self.browsers())
                except Exception:  # a broken count is no browser
                    n = 0
                self._out({"cmd": "heartbeat", "browsers": n})
                next_hb = now + self.heartbeat_s
            while True:
                try:
                    self._out(self._cmds.get_nowait())
                except queue.Empty:
                    break
            try:
                events = dict(poller.poll(20))
            except zmq.ZMQError:
                break
            if self.sock not in events:
                continue
            while True:
                try:
                    parts = self.sock.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._receive(parts)

    def _receive(self, parts: list[bytes]) -> None:
        try:
            head = json.loads(parts[0])
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        self.last_heard = time.monotonic()
        kind = head.get("type")
        with self._lock:
            if kind == "frame":
                self.state = head
                if len(parts) > 1:
                    self.frame = parts[1]
                self.frames_received += 1
            elif kind == "session":
                self.session = head
            elif kind == "reply":
                self._replies[str(head.get("id"))] = head
            elif kind == "grab" and len(parts) > 1:
                self._grabs[str(head.get("id"))] = parts[1]
            elif kind == "end":
                self.end = head.get("summary") or {}
            self._lock.notify_all()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout=2)
        self.sock.close(0)


def state_json(st: Any) -> dict:
    """An `OverlayState` as the console shows it (no pictures, plain JSON types)."""
    return {
        "armed": bool(st.armed), "paused": bool(st.paused), "permit": bool(st.permit), "reason": str(st.reason),
        "zone": st.zone, "link": str(st.link), "pulses": int(st.pulses), "violations": int(st.violations),
        "fps": round(float(st.fps), 1),
        "latency_ms_p50": None if st.latency_ms_p50 is None else round(float(st.latency_ms_p50), 2),
        "latency_ms_p99": None if st.latency_ms_p99 is None else round(float(st.latency_ms_p99), 2),
        "progress": [{"zone": p.name, "fraction": round(float(p.fraction), 4), "over": int(p.over)} for p in st.progress],
        "frame": int(getattr(st, "frame_index", -1)), "elapsed_s": round(float(getattr(st, "elapsed_s", 0.0)), 2),
        "key_refusals": int(getattr(st, "key_refusals", 0)),
        "prompt": str(getattr(st, "prompt", "")),
    }
