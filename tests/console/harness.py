"""Real processes for the console tests: a simulated video, keys, a controller simulator, the console, and
Debian's chromium (headless, driven by Selenium through chromium-driver)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from guidance import samples

ROOT = Path(__file__).resolve().parents[2]
GUIDANCE = [sys.executable, "-m", "guidance.cli"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    from guidance.sim.demo import free_port_pair
    return free_port_pair()


def simulated_video(base: Path) -> Path:
    """`guidance simulate --face-video single_face.mp4 --path demo_full_face --size 640x480 --max-frames 150`, once."""
    sim = base / "sim"
    if not (sim / "simulated.avi").exists():
        r = subprocess.run(GUIDANCE + ["simulate", "--face-video", str(samples.fetch("single_face.mp4")), "--path",
                                       "demo_full_face", "-o", str(sim), "--size", "640x480", "--max-frames", "150"],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    return sim / "simulated.avi"


def wait_http(url: str, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout_s} s")


class ConsoleProcess:
    def __init__(self, data: Path, source: Path, *, publish: str | None = None, keys: Path | None = None,
                 extra: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data.with_name(data.name + "-console.log")
        args = ["console", "--data", str(data), "--port", str(self.port), "--source", str(source), "--loop",
                "--operator", "Dr Test"]
        if publish:
            args += ["--publish", publish, "--keys", str(keys)]
        self.fh = open(self.log, "w")
        self.proc = subprocess.Popen(GUIDANCE + args + list(extra or []), cwd=ROOT, stdout=self.fh,
                                     stderr=subprocess.STDOUT)
        wait_http(self.url + "/clients", proc=self.proc)

    def run_children(self) -> list[int]:
        """Pids of `guidance run` processes this console started."""
        out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(line.split()[0]) for line in out.splitlines() if " run " in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.fh.close()


class Controller:
    """`guidance controller-sim` holding the trigger: fires whenever it holds a valid permit."""

    def __init__(self, permit_ep: str, keys: Path, log: Path):
        self.log = log
        self.proc = subprocess.Popen(GUIDANCE + ["controller-sim", "--connect", permit_ep, "--keys", str(keys),
                                                 "--trigger", "held", "--rate-hz", "10", "--log", str(log)],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        from guidance.sim.demo import stop_process
        stop_process(self.proc)


def chromium_driver(profile: str, width: int = 1366, height: int = 1024):
    """Selenium on Debian's chromium and chromium-driver (no download: both paths are given)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    drv = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if not exe or not drv:
        pytest.skip("Debian chromium and chromium-driver are needed for the browser tests (.ci/run installs them)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for f in CHROMIUM_FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(executable_path=drv), options=opts)


def fresh_profile() -> str:
    return tempfile.mkdtemp(prefix="guidance-chromium-")


def read_events(recording: Path) -> list[dict]:
    out = []
    for line in (recording / "events.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out
