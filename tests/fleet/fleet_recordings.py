"""Real recordings for the fleet tests, made once per test run (a marker file under pytest's base temp).

- `guidance simulate --max-frames 60`: a scripted handpiece on the `single_face.mp4` sample;
- `guidance run --record --arm --publish` on it, three times: the full-face plan, a full-face plan with a
  wider margin (another plan id), and the neck/décolletage plan (its pose model runs, so the recording
  keeps a shoulder line);
- a copy of the full-face one with coverage pulses added at tracked tip positions (tests/review's
  `add_pulses`), so that re-judging has pulses to keep or block;
- `guidance reprocess` of those with other plans and margins, until there are 22: each a real recording
  with its own session id. Some get an operator, client and clinic in info.json (as a later writer may
  record them), the others have none.

They are laid out as a tree (clinic folders, a nested year folder) for the discovery to find.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from guidance import samples
from guidance.resources import verified_path
from guidance.sim.demo import free_port_pair
from review.review_sessions import add_pulses

ROOT = Path(__file__).resolve().parents[2]
GUIDANCE = [sys.executable, "-m", "guidance.cli"]
FULL_FACE = verified_path("full_face", kind="plans")
NECK = verified_path("neck_decolletage", kind="plans")
COUNT = 22

PATH = {
    "path_version": 1, "name": "fleet-short", "plan": str(FULL_FACE), "speed_mm_s": 30,
    "lead_in_s": 0.3, "lead_out_s": 0.2,
    "render": {"exposure_s": 0.012, "noise_sigma": 1.5, "seed": 7, "tilt_deg": 35},
    "start": [45.0, 30.0],
    "segments": [
        {"type": "line", "to": [45.0, 42.0]},
        {"type": "sweep", "zone": "forehead_central", "spacing_mm": 9, "inset_mm": 3, "max_lines": 2},
    ],
}
PEOPLE = [  # (operator, client, clinic), or None: not recorded
    ("anna", "c-001", "north"), ("ben", "c-002", "north"), None, ("anna", "c-003", "south"),
]


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(GUIDANCE + args, capture_output=True, text=True, cwd=ROOT, **kw)


def _plan_variant(base: Path, dst: Path, **changes) -> Path:
    data = yaml.safe_load(base.read_text())
    data["handpiece_profile"] = str(verified_path("handpiece_default", kind="profiles"))
    data.update(changes)
    dst.write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


def make_recordings(base: Path) -> dict:
    """{"root": the tree, "recordings": [folders], "plans": {name: file}}; built once."""
    root = base / "tree"
    plans = {"full_face": FULL_FACE, "wide": base / "plan_wide.yaml", "forehead": base / "plan_forehead.yaml",
             "neck": NECK}
    out = {"root": root, "plans": plans}
    if (base / "done").exists():
        out["recordings"] = json.loads((base / "done").read_text())
        return out
    base.mkdir(parents=True, exist_ok=True)
    _plan_variant(FULL_FACE, plans["wide"], plan_id="full-face-wide", margin_mm=3.5)
    _plan_variant(FULL_FACE, plans["forehead"], plan_id="forehead", zones=[
        {"zone": z, "target_passes": 1, "max_passes": 2} for z in ("forehead_central", "forehead_left", "forehead_right")])
    (base / "path.yaml").write_text(yaml.safe_dump(PATH, sort_keys=False))
    sim = base / "sim"
    r = _run(["simulate", "--face-video", str(samples.fetch("single_face.mp4")), "--path", str(base / "path.yaml"),
              "-o", str(sim), "--max-frames", "60"])
    assert r.returncode == 0, r.stderr
    live = []
    for k, plan in enumerate(("full_face", "wide", "neck")):
        dst = root / ("north" if k % 2 == 0 else "south") / "2024" / f"live-{plan}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        port = free_port_pair()
        r = _run(["run", "--source", str(sim / "simulated.avi"), "--plan", str(plans[plan]), "--headless",
                  "--record", str(dst), "--arm", "--publish", f"tcp://127.0.0.1:{port}", "--insecure"], timeout=180)
        assert r.returncode == 0, r.stderr
        live.append(dst)
    pulses = root / "north" / "2024" / "live-full_face-pulses"
    add_pulses(live[0], pulses)
    recordings = live + [pulses]
    sources = [pulses, live[0], live[1], live[2]]
    variants = [(p, m) for p in ("full_face", "wide", "forehead", None) for m in (None, 1.0, 3.0, 5.0, 8.0)]
    k = 0
    while len(recordings) < COUNT:
        src = sources[k % len(sources)]
        plan, margin = variants[k % len(variants)]
        dst = root / ("south" if k % 3 else "north") / f"copy-{k:02d}"
        args = ["reprocess", str(src), "-o", str(dst)]
        if plan:
            args += ["--plan", str(plans[plan])]
        if margin is not None:
            args += ["--margin", str(margin)]
        from guidance.cli import main

        assert main(args) == 0
        recordings.append(dst)
        k += 1
    for k, rec in enumerate(recordings):
        who = PEOPLE[k % len(PEOPLE)]
        if who is not None:
            info = json.loads((rec / "info.json").read_text())
            info.update(operator=who[0], client=who[1], clinic=who[2])
            (rec / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    names = sorted(str(p) for p in recordings)
    (base / "done").write_text(json.dumps(names))
    out["recordings"] = names
    return out
