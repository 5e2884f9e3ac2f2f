"""A browser for the console on the camera's own machine, at idle priority (`guidance console --kiosk`).

A browser beside the hot path competes with it for the cores: decoding the live
page's pictures (MJPEG, 15 a second) and compositing the page. At normal
priority, a headless chromium on the live page added 4.3 ms to the hot path's
p99 on the 2-core development machine (quiet, load 0.0–1.6); started through
`idle_priority_command` it added 0.6 ms (`guidance bench VIDEO --stage run
--console`, which starts its browser through this module too, so the figure is
the shipped arrangement). A tablet or another computer on the clinic's network
costs the hot path nothing of this.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from guidance.errors import UserError
from guidance.live.priority import idle_priority_command

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
COMMON_FLAGS = ["--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--noerrdialogs", "--disable-infobars"]
HEADLESS_FLAGS = ["--headless", "--disable-gpu", "--remote-debugging-port=0"]  # the port keeps it open on the page


def find_browser(explicit: str | None = None) -> str:
    """The chromium to start: `explicit` (a path or a name on PATH), else the first of BROWSERS found."""
    if explicit:
        exe = shutil.which(explicit)
        if not exe:
            raise UserError(f"browser {explicit!r} not found (a path or a command on PATH)", field="--browser")
        return exe
    for name in BROWSERS:
        exe = shutil.which(name)
        if exe:
            return exe
    raise UserError("no chromium found for the kiosk (apt-get install chromium, or name one with --browser)",
                    field="--browser")


def browser_command(exe: str, url: str, profile: Path, *, headless: bool = False,
                    window: tuple[int, int] = (1366, 1024)) -> list[str]:
    """The browser on `url` in its own profile folder, full screen (or headless), at idle priority."""
    sandbox = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # chromium refuses root otherwise
    mode = [*HEADLESS_FLAGS, f"--window-size={window[0]},{window[1]}"] if headless else ["--kiosk", "--start-fullscreen"]
    return idle_priority_command([exe, *COMMON_FLAGS, *sandbox, *mode, f"--user-data-dir={profile}", url])


def start_browser(exe: str, url: str, profile: Path, *, headless: bool = False) -> subprocess.Popen:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(browser_command(exe, url, profile, headless=headless), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Kiosk:
    """The console's own browser: started once the console listens, stopped when the console stops."""

    def __init__(self, exe: str, port: int, profile: Path, *, host: str = "127.0.0.1", headless: bool = False,
                 path: str = "/", wait_s: float = 60.0):
        # the console's own address, or loopback where it listens on every interface
        self._host = "127.0.0.1" if host in ("", "0.0.0.0", "::", "localhost") else host
        self.url = f"http://{self._host if ':' not in self._host else '[' + self._host + ']'}:{port}{path}"
        self._exe, self._port, self._profile, self._headless, self._wait_s = exe, port, profile, headless, wait_s
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._open, name="kiosk", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        t_end = time.monotonic() + self._wait_s
        while not self._stop.is_set() and time.monotonic() < t_end:
            try:
                with socket.create_connection((self._host, self._port), timeout=0.5):
                    break
            except OSError:
                self._stop.wait(0.1)
        else:
            return
        if not self._stop.is_set():
            self.proc = start_browser(self._exe, self.url, self._profile, headless=self._headless)

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
