"""Running a session from the console: a `guidance run` child process, driven over the control channel.

The console starts one session at a time (one camera) as its own process:

    guidance run --source SRC --plan PLAN --headless --control tcp://127.0.0.1:PORT --record DIR
                 --operator NAME --client REF [--publish EP --keys DIR | --insecure] [--loop]

with a random control token in its environment. A `ControlClient` thread sends
the heartbeat (with the number of browsers watching the live page, counted from
their websocket pings) and receives the state and the overlay pictures. The run
process disarms by itself when the heartbeat stops or says nobody watches; the
console never decides a permit.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from guidance.live.control import BROWSER_TIMEOUT_S, TOKEN_ENV, ControlClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunSettings:
    """How the console starts `guidance run` (from `guidance console`'s options)."""

    source: str = "0"
    loop: bool = False  # a video file played again and again (demos, tests)
    publish: str | None = None
    keys: str | None = None
    insecure: bool = False
    camera_calibration: str | None = None
    handpiece: str | None = None
    extra_args: list[str] = field(default_factory=list)

    def args(self) -> list[str]:
        out: list[str] = []
        if self.loop:
            out.append("--loop")
        if self.publish:
            out += ["--publish", self.publish]
            out += ["--keys", self.keys] if self.keys else (["--insecure"] if self.insecure else [])
        if self.camera_calibration:
            out += ["--camera-calibration", self.camera_calibration]
        if self.handpiece:
            out += ["--handpiece", self.handpiece]
        return out + list(self.extra_args)


class LiveSession:
    def __init__(self, db_id: int, proc: subprocess.Popen, client: ControlClient, recording: Path, log: Path,
                 client_ref: str, client_name: str, plan_label: str, operator: str):
        self.db_id = db_id
        self.proc = proc
        self.client = client
        self.recording = recording
        self.log = log
        self.client_ref = client_ref
        self.client_name = client_name
        self.plan_label = plan_label
        self.operator = operator
        self.started = time.monotonic()
        self.started_wall = datetime.now()
        self.ended = False
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def last_error_line(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        errs = [ln for ln in lines if "error" in ln.lower()]
        return (errs or lines or [""])[-1][-300:]


class SessionManager:
    """One live session at a time; the browsers watching it; start, command, stop."""

    def __init__(self, settings: RunSettings, data_dir: Path, on_end: Callable[[LiveSession], None] | None = None):
        self.settings = settings
        self.data_dir = data_dir
        self.on_end = on_end
        self.live: LiveSession | None = None
        self._browsers: dict[str, float] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    # ---- browsers on the live page (websocket pings) -------------------------------------------------
    def browser_ping(self, key: str) -> None:
        with self._lock:
            self._browsers[key] = time.monotonic()

    def browser_gone(self, key: str) -> None:
        with self._lock:
            self._browsers.pop(key, None)
        live = self.live
        if live is not None and self.watching() == 0 and live.running:
            # the last browser closed the page: say so at once rather than with the next heartbeat
            live.client.send("disarm")

    def watching(self) -> int:
        now = time.monotonic()
        with self._lock:
            return sum(1 for t in self._browsers.values() if now - t <= BROWSER_TIMEOUT_S)

    # ---- the session process --------------------------------------------------------------------
    def start(self, *, db_id: int, plan_path: str, recording: Path, operator: str, client_ref: str, client_name: str,
              plan_label: str, source: str | None = None) -> LiveSession:
        if self.live is not None and self.live.running:
            raise RuntimeError("a session is already running; stop it first")
        port = free_port()
        token = secrets.token_urlsafe(24)
        recording.parent.mkdir(parents=True, exist_ok=True)
        log = recording.with_name(recording.name + ".log")
        cmd = [sys.executable, "-m", "guidance.cli", "run", "--source", str(source or self.settings.source),
               "--plan", plan_path, "--headless", "--control", f"tcp://127.0.0.1:{port}", "--record", str(recording),
               "--operator", operator, "--client", client_ref, *self.settings.args()]
        env = dict(os.environ, **{TOKEN_ENV: token, "PYTHONUNBUFFERED": "1"})
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        client = ControlClient(f"tcp://127.0.0.1:{port}", token=token, browsers=self.watching)
        self.live = LiveSession(db_id, proc, client, recording, log, client_ref, client_name, plan_label, operator)
        self._watcher = threading.Thread(target=self._watch, args=(self.live,), name="session-watch", daemon=True)
        self._watcher.start()
        return self.live

    def _watch(self, live: LiveSession) -> None:
        rc = live.proc.wait()
        if rc != 0:
            live.error = live.last_error_line() or f"guidance run exited with code {rc}"
        live.ended = True
        time.sleep(0.3)  # the end message, if any, is on its way
        live.client.close()
        if self.on_end:
            self.on_end(live)

    def command(self, cmd: str, **kw) -> dict:
        live = self.live
        if live is None or not live.running:
            return {"ok": False, "detail": "no session is running"}
        return live.client.request(cmd, **kw)

    def stop(self, timeout_s: float = 15.0) -> None:
        live = self.live
        if live is None:
            return
        if live.running:
            live.client.request("stop", timeout_s=2.0)
            try:
                live.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                live.proc.terminate()
                try:
                    live.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    live.proc.kill()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def close(self) -> None:
        """The console is shutting down: stop the session (it would disarm on its own anyway)."""
        self.stop()


def recording_summary(recording: Path) -> dict | None:
    """The `session_end` summary the run process wrote (None for a cut-off recording)."""
    try:
        lines = (recording / "events.jsonl").read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("kind") == "session_end":
            return e.get("summary")
    return None
