"""Real recordings for the replay and report tests, made once per test run and shared.

- `live`: `guidance simulate` (a scripted handpiece path rendered into a real face
  video) → `guidance run --record --arm --publish` with `guidance controller-sim`
  as a separate process holding the trigger and firing one rogue pulse (a real
  violation);
- `with_pulses`: a copy of `live` with more coverage pulses added at tracked
  tip positions (the live run gets few or no permits on a loaded machine) and
  the end-of-session coverage rebuilt from all pulses the way the live app
  builds it;
- `killed`: `guidance run --record` stopped by `kill -9` part way.

Made in a folder under pytest's base temp with a marker file, so the two test
modules that use them build them once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from guidance.resources import verified_path
from guidance import samples
from guidance.sim.demo import free_port_pair, stop_process

ROOT = Path(__file__).resolve().parents[2]
PLAN = verified_path("full_face", kind="plans")
GUIDANCE = [sys.executable, "-m", "guidance.cli"]

PATH = {
    "path_version": 1, "name": "review-short", "plan": str(PLAN), "speed_mm_s": 30,
    "lead_in_s": 0.3, "lead_out_s": 0.2,
    "render": {"exposure_s": 0.012, "noise_sigma": 1.5, "seed": 7, "tilt_deg": 35},
    "start": [45.0, 30.0],
    "segments": [
        {"type": "line", "to": [45.0, 42.0]},
        {"type": "line", "toward": "periorbital_left", "depth_mm": 4},
        {"type": "lift", "duration_s": 0.3},
        {"type": "sweep", "zone": "forehead_central", "spacing_mm": 9, "inset_mm": 3, "max_lines": 2},
    ],
}


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(GUIDANCE + args, capture_output=True, text=True, cwd=ROOT, **kw)


def make_sessions(base: Path) -> dict[str, Path]:
    out = {"live": base / "live", "with_pulses": base / "with_pulses", "killed": base / "killed",
           "sim": base / "sim"}
    if (base / "done").exists():
        return out
    base.mkdir(parents=True, exist_ok=True)
    path_file = base / "path.yaml"
    path_file.write_text(yaml.safe_dump(PATH, sort_keys=False))
    r = _run(["simulate", "--face-video", str(samples.fetch("single_face.mp4")), "--path", str(path_file),
              "-o", str(out["sim"]), "--max-frames", "150"])
    assert r.returncode == 0, r.stderr
    video = out["sim"] / "simulated.avi"
    port = free_port_pair()
    ctrl = subprocess.Popen(GUIDANCE + ["controller-sim", "--connect", f"tcp://127.0.0.1:{port}", "--insecure",
                                        "--trigger", "held", "--rate-hz", "8", "--rogue-pulse-at-s", "3.0"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = _run(["run", "--source", str(video), "--plan", str(PLAN), "--headless", "--record", str(out["live"]),
                  "--arm", "--publish", f"tcp://127.0.0.1:{port}", "--insecure"], timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        stop_process(ctrl)
    add_pulses(out["live"], out["with_pulses"])
    # kill -9 part way through a recording
    proc = subprocess.Popen(GUIDANCE + ["run", "--source", str(video), "--plan", str(PLAN), "--headless",
                                        "--record", str(out["killed"]), "--arm"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t_end = time.monotonic() + 60
        frames = out["killed"] / "frames.jsonl"
        while time.monotonic() < t_end:
            if frames.exists() and frames.read_bytes().count(b"\n") >= 40:
                break
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    (base / "done").write_text("ok")
    return out


def add_pulses(src: Path, dst: Path, every: int = 3) -> list[dict]:
    """Copy a recording, adding a coverage pulse after every `every`-th frame with a tracked chart position.

    The end-of-session coverage event is rebuilt the way the live app does it
    (CoverageMap.for_plan + deposit_pulse with the profile's electrode) so the
    report's "identical to the live coverage" check has something true to find.
    """
    from guidance.zones.coverage import CoverageMap
    from guidance.zones.plan import load_plan

    shutil.copytree(src, dst)
    frames = [json.loads(line) for line in (dst / "frames.jsonl").read_text().splitlines()]
    events = [json.loads(line) for line in (dst / "events.jsonl").read_text().splitlines()]
    info = json.loads((dst / "info.json").read_text())
    diameter = info["handpiece"]["content"]["electrode_diameter_mm"]
    cov = CoverageMap.for_plan(load_plan(PLAN))
    added = []
    for k, f in enumerate(frames):  # after_frame counts processed (= recorded) frames, not source indices
        z = f.get("zone") or {}
        if k % every == 0 and z.get("chart_mm"):
            u, v = z["chart_mm"]
            added.append({"kind": "pulse", "t_ns": f["t_published_ns"] + 1000, "after_frame": k,
                          "controller": "test", "controller_boot": "0" * 16, "pulse_seq": 1000 + len(added),
                          "outcome": "coverage", "reason": "ok", "t_ctrl_ns": None, "time_source": "permit",
                          "permit_seq": f["gate"]["seq"], "zone": z.get("zone"), "tip_u": u, "tip_v": v,
                          "duration_us": 2000, "intensity_pct": 60.0, "energy_mj": None,
                          "contact": True})  # in skin contact: deposits, as the live rule (PulseEvent.deposit) says
    assert len(added) >= 3, "the simulated session should track the tip on the face"
    body = [e for e in events if e["kind"] not in ("coverage", "session_end", "disarm")]
    tail = [e for e in events if e["kind"] in ("disarm",)]
    end = next(e for e in events if e["kind"] == "session_end")
    merged = sorted(body + added, key=lambda e: e["t_ns"])
    pulses = [e for e in merged if e["kind"] == "pulse"]  # the live run's own pulses too, in order
    for e in pulses:  # the live app's rule (PulseEvent.deposit): only pulses in skin contact deposit
        if e.get("contact") is False:
            cov.lifted_pulses += 1
        elif e.get("contact") is None:
            cov.contact_unknown_pulses += 1
        elif e.get("tip_u") is not None:
            cov.deposit_pulse(e["tip_u"], e["tip_v"], diameter)
        else:
            cov.unplaced_pulses += 1
    end["summary"]["pulses"] = len(pulses)
    merged += tail + [{"kind": "coverage", "t_ns": end["t_ns"] - 1, "coverage": cov.to_dict()}, end]
    (dst / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in merged))
    return added
