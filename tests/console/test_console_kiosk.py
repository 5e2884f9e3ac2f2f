"""`guidance console --kiosk`: the console's own chromium, at idle priority, on the console's page, gone with it.

The kiosk browser is the arrangement the cost bench measures (`guidance bench … --stage run --console` starts its
browser through the same `guidance.console.kiosk`); a kiosk at normal priority would cost the hot path ~4 ms of p99.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness import GUIDANCE, ROOT, free_port, wait_http


def _descendants(root: int) -> set[int]:
    parent = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, todo = set(), [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found.update(kids)
        todo.extend(kids)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE and /proc are Linux")
def test_kiosk_browser_opens_the_console_at_idle_priority_and_goes_with_it(tmp_path):
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("Debian chromium is needed for the kiosk (.ci/run installs it)")
    port = free_port()
    data = tmp_path / "data"
    con = subprocess.Popen(GUIDANCE + ["console", "--data", str(data), "--port", str(port), "--kiosk-headless"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/clients", 60, con)
        # the browser writes its DevTools port into its profile once it runs; the open pages are listed there
        active = data / "kiosk-browser" / "DevToolsActivePort"
        t_end = time.monotonic() + 60
        pages: list = []
        while time.monotonic() < t_end:
            if active.exists() and active.read_text().strip():
                devtools = int(active.read_text().split()[0])
                try:
                    pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{devtools}/json/list", timeout=5).read())
                except OSError:
                    pages = []
                # the page listed and loaded: under load its title comes a moment after its URL
                if any(p.get("url", "").startswith(f"http://127.0.0.1:{port}/clients")
                       and "guidance" in p.get("title", "").lower() for p in pages):
                    break
            time.sleep(0.2)
        assert any(p.get("url", "").startswith(f"http://127.0.0.1:{port}/clients") for p in pages), pages
        assert any("guidance" in p.get("title", "").lower() for p in pages), pages

        browser = _descendants(con.pid)
        assert browser, "no browser process under the console"
        policies = {pid: os.sched_getscheduler(pid) for pid in browser if _alive(pid)}
        assert policies and set(policies.values()) == {os.SCHED_IDLE}, policies  # every chromium process, idle
        assert os.sched_getscheduler(con.pid) == os.SCHED_OTHER  # the console itself (and its sessions) are not
    finally:
        con.send_signal(signal.SIGINT)
        out, _ = con.communicate(timeout=30)
    assert con.returncode == 0, out[-2000:]
    t_end = time.monotonic() + 10
    while time.monotonic() < t_end and any(_alive(p) for p in browser):
        time.sleep(0.1)
    assert not any(_alive(p) for p in browser), "the kiosk browser outlived the console"


def test_kiosk_without_a_browser_is_a_one_line_error(tmp_path):
    r = subprocess.run(GUIDANCE + ["console", "--data", str(tmp_path / "d"), "--port", str(free_port()), "--kiosk",
                                   "--browser", "no-such-browser-xyz"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--browser" in r.stderr and "no-such-browser-xyz" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "d" / "kiosk-browser").exists()
