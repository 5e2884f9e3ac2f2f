"""One evaluation session, as the demo runs it, in separate processes: simulate, controller, run, re-judge.

1. `guidance simulate`: the path rendered into the face video at the camera's size, with ground truth;
2. `guidance controller-sim` in its own process, CURVE, trigger held: it fires whenever it holds a valid permit;
3. `guidance run` on the simulated video: headless, armed, realtime (it plays like a camera), publishing
   permits and recording;
4. `guidance reprocess --plan LIFTED` on the recording: every frame re-judged exactly from the recorded
   observations with the dose limits lifted (`max_passes` at the plan schema's maximum, no stop at target),
   so that only the mapping can keep the tip off an exclusion.

Every step is a child process whose failure becomes a `SessionFailed` naming the step and the child's last
line of output; the session's folder keeps what was made up to there.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from guidance.resources import sha256_file
from guidance.sim.demo import START_DELAY_NS, free_port_pair, stop_process
from guidance.zones.plan import PLAN_SCHEMA, TreatmentPlan

# The files of one session's folder.
SIMULATION = "simulation"
RECORDING = "session"
LIFTED = "lifted"
LIFTED_PLAN = "lifted_plan.yaml"
CONTROLLER_LOG = "controller.jsonl"
CONTROLLER_ERR = "controller.stderr.txt"
RUN_LOG = "run.txt"
OVERLAY = "overlay.mkv"

def _schema_max_passes() -> int:
    zone: Any = PLAN_SCHEMA["properties"]
    return int(zone["zones"]["items"]["properties"]["max_passes"]["maximum"])


MAX_PASSES_LIMIT = _schema_max_passes()


class SessionFailed(Exception):
    """A step of a session failed; the evaluation reports it and goes on with the others."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass(frozen=True)
class ChainSettings:
    keys: Path  # CURVE keys (`guidance keys generate`)
    size: tuple[int, int] = (640, 480)
    max_frames: int | None = None
    rate_hz: float = 8.0  # controller pulse rate while the trigger is held (as the demo)
    overlay: bool = False


def guidance_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "guidance.cli", *args]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _step(stage: str, cmd: list[str], timeout_s: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout_s, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise SessionFailed(stage, f"no result after {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        raise SessionFailed(stage, f"exit code {proc.returncode}: {_last_line(proc.stderr or proc.stdout)}")
    return proc


def write_lifted_plan(plan: TreatmentPlan, out: Path) -> Path:
    """The plan with its dose limits lifted: every zone's max_passes at the schema maximum, stop_at_target off.

    Zones, exclusions, margin and TTL are unchanged, so the gate's spatial decisions are the same.
    """
    doc = {
        "plan_version": 1,
        "plan_id": f"{plan.plan_id}-dose-limits-lifted"[:100],
        "area": plan.area,
        "description": f"{plan.plan_id} with the dose limits lifted (guidance evaluate)",
        "handpiece_profile": str(Path(plan.handpiece_profile).resolve()),
        "margin_mm": plan.margin_mm,
        "ttl_ms": plan.ttl_ms,
        "stop_at_target": False,
        "zones": [{"zone": z.zone, "target_passes": min(z.target_passes, MAX_PASSES_LIMIT),
                   "max_passes": MAX_PASSES_LIMIT} for z in plan.zones.values()],
        "exclusions": list(plan.exclusions),
    }
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def simulation_matches(sim: Path, face: str, path: str, settings: ChainSettings) -> bool:
    """Is `sim` a complete simulation of this face and path file at these settings (so a re-run may keep it)?

    The simulation is deterministic and does not depend on the machine's load (only the realtime run does).
    """
    try:
        info = json.loads((sim / "info.json").read_text())
        full = int(math.floor(float(info["path"]["duration_s"]) * float(info["fps"]) + 1e-9)) + 1
        expected = min(full, settings.max_frames) if settings.max_frames else full
        return (info["path"]["sha256"] == sha256_file(path) and info["face_video"]["name"] == Path(face).name
                and list(info["frame_size"]) == list(settings.size) and int(info["frames"]) == expected
                and (sim / "ground_truth.csv").is_file() and (sim / "simulated.avi").is_file())
    except (OSError, KeyError, TypeError, ValueError):
        return False


def run_chain(face: str, path: str, plan: TreatmentPlan, folder: Path, settings: ChainSettings,
              run_slots: threading.Semaphore, log: Callable[[str], None], *, keep_simulation: bool = False
              ) -> dict[str, float]:
    """Simulate, run with the controller, re-judge with lifted limits; returns seconds per step.

    `keep_simulation`: re-use a matching simulation already in the folder (`--resume`); everything after it
    is made afresh.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sim, rec, lifted = folder / SIMULATION, folder / RECORDING, folder / LIFTED
    times: dict[str, float] = {}
    for old in (rec, lifted):
        shutil.rmtree(old, ignore_errors=True)
    for name in (CONTROLLER_LOG, CONTROLLER_ERR, RUN_LOG, OVERLAY, LIFTED_PLAN):
        (folder / name).unlink(missing_ok=True)

    if keep_simulation and simulation_matches(sim, face, path, settings):
        log("simulation kept from the earlier run")
    else:
        shutil.rmtree(sim, ignore_errors=True)
        t = time.monotonic()
        cmd = guidance_cmd("simulate", "--face-video", face, "--path", path, "-o", str(sim),
                           "--size", f"{settings.size[0]}x{settings.size[1]}")
        if settings.max_frames:
            cmd += ["--max-frames", str(settings.max_frames)]
        out = _step("simulate", cmd, timeout_s=3600)
        times["simulate_s"] = time.monotonic() - t
        log(f"simulated in {times['simulate_s']:.0f} s: {_last_line(out.stdout).split(': ', 1)[-1]}")

    port = free_port_pair()
    permit_ep, report_ep = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}"
    with run_slots:  # a realtime run needs its core; never more of them at once than the machine has to spare
        t = time.monotonic()
        # One start time for both, as in the demo: frame i is captured at t0 + i/fps, and the controller reports
        # skin contact from the simulation's truth at the same instant (electroporation switches on at contact).
        t0 = time.monotonic_ns() + START_DELAY_NS
        with open(folder / CONTROLLER_ERR, "w") as err:
            ctrl = subprocess.Popen(guidance_cmd("controller-sim", "--connect", permit_ep, "--report", report_ep,
                                                 "--keys", str(settings.keys), "--trigger", "held",
                                                 "--rate-hz", f"{settings.rate_hz:g}",
                                                 "--contact-truth", str(sim), "--t0-ns", str(t0),
                                                 "--log", str(folder / CONTROLLER_LOG)),
                                    env=_env(), stdout=subprocess.DEVNULL, stderr=err)
            try:
                cmd = guidance_cmd("run", "--source", str(sim / "simulated.avi"), "--plan", str(plan.source),
                                   "--publish", permit_ep, "--report", report_ep, "--keys", str(settings.keys),
                                   "--record", str(rec), "--headless", "--arm", "--start-at-ns", str(t0))
                if settings.overlay:
                    cmd += ["--out", str(folder / OVERLAY)]
                run = _step("run", cmd, timeout_s=3600)
                (folder / RUN_LOG).write_text(run.stdout)
                died = ctrl.poll()  # the controller must still be there, holding the trigger
            finally:
                stop_process(ctrl)
        if died is not None:
            raise SessionFailed("controller-sim", f"exited early (code {died}): "
                                                  f"{_last_line((folder / CONTROLLER_ERR).read_text())}")
        times["run_s"] = time.monotonic() - t
    log(f"ran in {times['run_s']:.0f} s: {_last_line(run.stdout.splitlines()[0] if run.stdout else '')}")

    t = time.monotonic()
    lifted_plan = write_lifted_plan(plan, folder / LIFTED_PLAN)
    _step("reprocess", guidance_cmd("reprocess", str(rec), "--plan", str(lifted_plan), "-o", str(lifted)),
          timeout_s=3600)
    times["reprocess_s"] = time.monotonic() - t
    return times
