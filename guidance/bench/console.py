"""`guidance bench VIDEO --stage run --console`: what a console and its browser watching cost the hot path.

Two sessions of the same length on the same video (played in real time, looping, like a camera), each with
a `guidance controller-sim` linked over CURVE and recording on, armed:

- without: `guidance run` alone (headless);
- with: `guidance console` starts the same `guidance run` (with `--control`), a headless chromium
  keeps the live page open (overlay pictures as MJPEG, state over the websocket), the bench arms it
  through the console's HTTP API as the page's ARM button does.

Both read capture→publish latency back from their recordings; the difference of the p99s is the
console's cost. The machine's load average is reported with it: on a shared machine the figure
moves with what else runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from guidance.errors import UserError

def _guidance(*args: str) -> list[str]:
    return [sys.executable, "-m", "guidance.cli", *args]


def _latency(recording: Path, skip: int = 30) -> dict:
    lat = []
    for line in (recording / "frames.jsonl").read_text().splitlines()[skip:]:
        try:
            f = json.loads(line)
        except json.JSONDecodeError:
            continue
        if f.get("armed"):
            lat.append((f["t_published_ns"] - f["t_capture_ns"]) / 1e6)
    a = np.asarray(lat)
    return {"frames": int(a.size), "median_ms": float(np.median(a)) if a.size else float("nan"),
            "p99_ms": float(np.percentile(a, 99)) if a.size else float("nan")}


def _frames(recording: Path) -> int:
    try:
        return (recording / "frames.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


class _Http:
    def __init__(self, base: str):
        self.base = base
        self.token = ""

    def get(self, path: str) -> str:
        html = urllib.request.urlopen(self.base + path, timeout=30).read().decode()
        m = re.search(r'name="csrf" content="([^"]+)"', html)
        if m:
            self.token = m.group(1)
        return html

    def post(self, path: str, *, form: dict | None = None, data: dict | None = None) -> str:
        from urllib.parse import urlencode
        if form is not None:
            body, ctype = urlencode({**form, "csrf": self.token}).encode(), "application/x-www-form-urlencoded"
        else:
            body, ctype = json.dumps(data or {}).encode(), "application/json"
        req = urllib.request.Request(self.base + path, data=body, method="POST",
                                     headers={"Content-Type": ctype, "X-Guidance-Token": self.token})
        return urllib.request.urlopen(req, timeout=60).read().decode()


def _wait(cond, timeout_s: float, what: str) -> None:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if cond():
            return
        time.sleep(0.1)
    raise UserError(f"bench: timed out waiting for {what}")


def bench_console(video: str | Path, *, frames: int = 600, rounds: int = 1, browser: str | None = None,
                  plan_zones: tuple[str, ...] = ("forehead_central", "cheek_left", "cheek_right", "nose", "chin")) -> dict:
    """`rounds` pairs, alternating without / with (so a change in the machine's load hits both alike)."""
    from guidance.device_bridge.keys import generate
    from guidance.sim.demo import free_port_pair, stop_process

    video = str(Path(video).resolve())
    from guidance.console.kiosk import find_browser
    exe = find_browser(browser)
    out: dict = {"video": video, "frames": frames, "load_before": list(os.getloadavg()), "rounds": [],
                 "control_check": control_check_cost(), "pictures": picture_cost(video)}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        generate(str(tmp / "keys"))
        port = free_port_pair()
        permit = f"tcp://127.0.0.1:{port}"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        plan = tmp / "plan.yaml"
        from guidance.resources import verified_path
        doc = {"plan_version": 1, "plan_id": "bench", "area": "face", "handpiece_profile":
               str(verified_path("handpiece_default", kind="profiles")), "margin_mm": 2.0, "ttl_ms": 60,
               "stop_at_target": False, "zones": [{"zone": z, "target_passes": 2, "max_passes": 50} for z in plan_zones]}
        import yaml
        plan.write_text(yaml.safe_dump(doc))
        from guidance.console.sessions import free_port
        cport = free_port()
        data = tmp / "console"
        ctrl = subprocess.Popen(_guidance("controller-sim", "--connect", permit, "--keys", str(tmp / "keys"), "--trigger",
                                          "held", "--rate-hz", "8"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        con = subprocess.Popen(_guidance("console", "--data", str(data), "--port", str(cport), "--source", video,
                                         "--loop", "--publish", permit, "--keys", str(tmp / "keys")),
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            http = _Http(f"http://127.0.0.1:{cport}")
            _wait(lambda: _try(http.get, "/clients"), 60, "the console")
            http.post("/clients", form={"name": "Bench", "consent_given": "on"})
            http.get("/clients/1")
            http.post("/clients/1/plans", data={"name": "bench", "stop_at_target": False, "zones": {
                z: {"target_passes": 2, "max_passes": 50} for z in plan_zones}})
            for k in range(rounds):
                pair: dict = {"without": _run_alone(tmp / f"without-{k}", video, plan, permit, tmp / "keys", frames, env),
                        "with_console": _run_in_console(http, exe, tmp / f"chromium-{k}", data, con.pid, cport, frames)}
                pair["load"] = list(os.getloadavg())
                out["rounds"].append(pair)
        finally:
            stop_process(con, timeout_s=20)
            stop_process(ctrl)
    out["load_after"] = list(os.getloadavg())
    rs = out["rounds"]
    out["without"] = {k: float(np.median([r["without"][k] for r in rs])) for k in ("median_ms", "p99_ms")}
    out["with_console"] = {k: float(np.median([r["with_console"][k] for r in rs])) for k in ("median_ms", "p99_ms")}
    out["p99_cost_ms"] = float(np.median([r["with_console"]["p99_ms"] - r["without"]["p99_ms"] for r in rs]))
    out["median_cost_ms"] = float(np.median([r["with_console"]["median_ms"] - r["without"]["median_ms"] for r in rs]))
    return out


def control_check_cost(n: int = 20000) -> dict:
    """What `--control` adds on the capture thread per frame, between two frames: the command queue and the
    heartbeat watch (`apply_console` in live/run.py with nothing to do), timed alone with a console connected."""
    import queue as _queue

    from guidance.live.control import ControlClient, ControlServer
    server = ControlServer("tcp://127.0.0.1:*", token="bench")
    client = ControlClient(server.endpoint, token="bench")
    try:
        _wait(lambda: server.watch().ok, 10, "the control channel")
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            try:
                server.commands.get_nowait()
            except _queue.Empty:
                pass
            w = server.watch()
            server.orphaned()
            times.append((time.perf_counter_ns() - t0) / 1e3)
            assert w.ok
    finally:
        client.close()
        server.close()
    a = np.asarray(times)
    return {"n": n, "median_us": float(np.median(a)), "p99_us": float(np.percentile(a, 99))}


def picture_cost(video: str, n: int = 100, fps: float = 15.0) -> dict:
    """The console's pictures, off the hot path on the overlay thread: draw the overlay and JPEG-encode it."""
    import cv2

    from guidance.live.control import state_json
    from guidance.live.overlay import OverlayState, ZoneProgress, draw_overlay
    from guidance.vision.capture.sources import open_source
    with open_source(video) as src:
        img = next(iter(src)).image
    st = OverlayState(armed=True, permit=False, reason="near_boundary",
                      progress=[ZoneProgress(f"zone_{k}", 0.3) for k in range(8)])
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        pic = draw_overlay(img, st)
        cv2.imencode(".jpg", pic, [cv2.IMWRITE_JPEG_QUALITY, 75])
        state_json(st)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    med = float(np.median(times))
    return {"n": n, "median_ms": med, "p99_ms": float(np.percentile(times, 99)), "core_share_at_fps": med * fps / 1000.0,
            "fps": fps}


def _run_alone(rec: Path, video: str, plan: Path, permit: str, keys: Path, frames: int, env: dict) -> dict:
    run = subprocess.Popen(_guidance("run", "--source", video, "--loop", "--plan", str(plan), "--headless", "--arm",
                                     "--record", str(rec), "--publish", permit, "--keys", str(keys)),
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cores = 0.0
    try:
        _wait(lambda: _frames(rec) >= 30 or run.poll() is not None, 120, "the session's first frames")
        cpu0, t0 = _proc_table().get(run.pid, (0, 0.0))[1], time.monotonic()
        _wait(lambda: _frames(rec) >= frames + 30 or run.poll() is not None, frames / 5 + 120, "the session's frames")
        cores = (_proc_table().get(run.pid, (0, 0.0))[1] - cpu0) / (time.monotonic() - t0)
    finally:
        run.send_signal(signal.SIGINT)  # Ctrl-C: the run loop ends and closes its recording
        _, err = run.communicate(timeout=60)
    if _frames(rec) < frames:
        raise UserError(f"bench: guidance run failed: {(err.strip().splitlines() or ['?'])[-1]}")
    return {**_latency(rec), "cores": {"run": round(cores, 3)}}


def _run_in_console(http: _Http, exe: str, profile: Path, data: Path, console_pid: int, cport: int, frames: int) -> dict:
    from guidance.console.kiosk import start_browser
    from guidance.sim.demo import stop_process
    recs = data / "recordings"
    before = {p for p in recs.glob("*/*") if p.is_dir()}
    http.get("/clients/1")
    http.post("/clients/1/sessions", form={"plan": "1", "operator": "bench"})
    # the browser as `guidance console --kiosk` starts it (idle priority), headless here
    browser = start_browser(exe, f"http://127.0.0.1:{cport}/live", profile, headless=True)
    try:
        def new_rec() -> Path | None:
            fresh = [p for p in recs.glob("*/*") if p.is_dir() and p not in before]
            return fresh[0] if fresh and _frames(fresh[0]) > 5 else None
        _wait(lambda: new_rec() is not None, 120, "the console's session to run")
        rec = new_rec()
        assert rec is not None

        def armed() -> bool:
            return bool(json.loads(http.post("/live/arm")).get("ok"))
        _wait(armed, 60, "arming through the console (browser watching, controller linked)")
        start = _frames(rec)
        cpu0, t0 = _cpu_by_part(console_pid, browser.pid), time.monotonic()
        _wait(lambda: _frames(rec) >= start + frames, frames / 5 + 120, "the session's frames")
        cpu1, wall = _cpu_by_part(console_pid, browser.pid), time.monotonic() - t0
        http.post("/live/stop")
    finally:
        stop_process(browser)
    return {**_latency(rec), "cores": {k: round((cpu1[k] - cpu0.get(k, 0.0)) / wall, 3) for k in cpu1}}


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds so far) for every process (Linux /proc; empty elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    table = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def _cpu_by_part(console_pid: int, browser_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the console server itself, its `guidance run`, and the browser with its children."""
    table = _proc_table()

    def tree(root: int) -> set[int]:
        found, todo = {root}, [root]
        while todo:
            p = todo.pop()
            kids = [c for c, (pp, _) in table.items() if pp == p]
            found.update(kids)
            todo.extend(kids)
        return found & table.keys()
    run = tree(console_pid) - {console_pid}
    return {"console_server": table.get(console_pid, (0, 0.0))[1], "run": sum(table[p][1] for p in run),
            "browser": sum(table[p][1] for p in tree(browser_pid))}


def _try(fn, *a) -> bool:
    try:
        fn(*a)
        return True
    except OSError:
        return False


def format_console(r: dict) -> str:
    a, b = r["without"], r["with_console"]
    lines = [f"console cost on the hot path ({r['frames']} armed frames a run, real time, recording, CURVE, controller linked; "
             f"{len(r['rounds'])} round(s), medians over rounds):",
             f"  without a console          median {a['median_ms']:.2f} ms  p99 {a['p99_ms']:.2f} ms",
             f"  console + browser watching median {b['median_ms']:.2f} ms  p99 {b['p99_ms']:.2f} ms"]
    for k, x in enumerate(r["rounds"], 1):
        lines.append(f"  round {k}: p99 {x['without']['p99_ms']:.2f} -> {x['with_console']['p99_ms']:.2f} ms, median "
                     f"{x['without']['median_ms']:.2f} -> {x['with_console']['median_ms']:.2f} ms, load "
                     f"{'/'.join(f'{v:.1f}' for v in x['load'])}; cores used: run alone {x['without']['cores']['run']:.2f}; "
                     "with the console "
                     + ", ".join(f"{name} {v:.2f}" for name, v in x["with_console"].get("cores", {}).items()))
    c = r["control_check"]
    lines.append(f"  the console's check on the capture thread between frames: median {c['median_us']:.1f} us, "
                 f"p99 {c['p99_us']:.1f} us ({c['n']} checks)")
    p = r["pictures"]
    lines.append(f"  its pictures, on the overlay thread (off the hot path): {p['median_ms']:.2f} ms each (p99 {p['p99_ms']:.2f}), "
                 f"{100 * p['core_share_at_fps']:.0f}% of a core at {p['fps']:g}/s")
    return ("\n".join(lines) + "\n"
            f"  cost: p99 {r['p99_cost_ms']:+.2f} ms, median {r['median_cost_ms']:+.2f} ms; load average (1/5/15 min) "
            f"before {'/'.join(f'{x:.1f}' for x in r['load_before'])}, after {'/'.join(f'{x:.1f}' for x in r['load_after'])}")
