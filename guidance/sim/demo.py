"""The demo (the README's first command): a simulated treatment session, end to end, with its proof.

1. `guidance simulate`: a scripted handpiece path rendered into a real face
   video, with ground truth per frame;
2. `guidance keys generate`: CURVE keys, so the demo runs the way a clinic does;
3. `guidance controller-sim` as a separate process with the trigger held: it
   fires whenever (and only when) it holds a valid permit;
4. `guidance run` on the simulated video, headless, armed, publishing permits,
   recording, writing the overlay video;
5. `guidance report` on the recording;
6. the acceptance check (`verify`): every pulse the controller fired is placed
   on the ground truth — none may land in an exclusion or outside the plan by
   more than the margin — and coverage computed from the true tip positions of
   those pulses is compared zone by zone with what the service recorded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


from guidance.errors import UserError
from guidance.session.reader import open_session
from guidance.session.records import CoverageSnapshot, PulseEvent
from guidance.sim.ground_truth import GTFrame, load_ground_truth
from guidance.zones.coverage import CoverageMap
from guidance.zones.plan import load_plan

# The simulated video starts this long after the controller simulator: time for `guidance run` to load its models.
START_DELAY_NS = 4_000_000_000
DEFAULT_PLAN = "full_face"  # bundled example plan (guidance/data/plans)
DEFAULT_PATH = "demo_full_face"  # bundled simulation path (guidance/data/paths)


@dataclass
class Acceptance:
    pulses_fired: int = 0
    pulses_placed: int = 0  # pulses whose time fell inside the simulated video
    pulses_in_exclusion: list[dict] = field(default_factory=list)
    pulses_outside_plan: list[dict] = field(default_factory=list)  # beyond the margin
    pulses_lifted: int = 0  # fired while the true tip was off the skin (see docs/demo.md)
    coverage_service: dict[str, float] = field(default_factory=dict)
    coverage_truth: dict[str, float] = field(default_factory=dict)
    coverage_max_diff_pp: float = 0.0
    violations_recorded: int = 0
    # Where the service put each pulse fired in contact on the chart vs where the true tip was (mm): what the
    # coverage difference is made of. Matched by (boot, pulse_seq) between the controller's log and the
    # recording. Lifted pulses are left out: a hovering tip maps through the skin at an angle, several mm off.
    pulse_error_mm: dict[str, float] = field(default_factory=dict)  # n, median, p90, max

    @property
    def safe(self) -> bool:
        """The safety property: no pulse landed in an exclusion or outside the plan beyond the margin."""
        return not self.pulses_in_exclusion and not self.pulses_outside_plan

    @property
    def coverage_ok(self) -> bool:
        return self.coverage_max_diff_pp <= 5.0

    @property
    def passed(self) -> bool:
        return self.safe and self.coverage_ok


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Ask a child process to stop; kill it if it has not within the timeout."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


_PORT_LOCK = threading.Lock()
_PORTS_GIVEN: set[int] = set()


def free_port_pair() -> int:
    """A local port p with p + 1 free too, never handed out twice by this process (sessions run side by side)."""
    with _PORT_LOCK:
        for _ in range(200):
            with socket.socket() as a:
                a.bind(("127.0.0.1", 0))
                port = a.getsockname()[1]
            if port in _PORTS_GIVEN or port + 1 in _PORTS_GIVEN:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            _PORTS_GIVEN.update((port, port + 1))
            return port
    raise UserError("no free pair of local ports for the permit and report sockets")


def _controller_pulses(log: Path) -> list[tuple[int, tuple[str, int] | None]]:
    """(time fired, (boot, pulse_seq)) of every pulse the controller simulator fired."""
    out = []
    boot = None
    for line in log.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("event") == "start":
            boot = e.get("boot")
        if e.get("event") == "pulse" and not e.get("rogue"):
            seq = e.get("pulse_seq")
            out.append((int(e["t_mono_ns"]), (boot, int(seq)) if boot and seq is not None else None))
    return out


def _truth_at(gt: list[GTFrame], t_first_ns: int, first_index: int, fps: float, t_ns: int) -> tuple[GTFrame, GTFrame, float] | None:
    """The two ground-truth frames around time t (service clock) and the weight of the second."""
    x = (t_ns - t_first_ns) * fps / 1e9 + first_index
    i = int(math.floor(x))
    if i < 0 or i + 1 >= len(gt):
        return None
    return gt[i], gt[i + 1], x - i


def verify(sim_dir: str | Path, session_dir: str | Path, controller_log: str | Path,
           plan_path: str | Path = DEFAULT_PLAN) -> Acceptance:
    gt = load_ground_truth(sim_dir)
    session = open_session(session_dir, quiet=True)
    plan = load_plan(plan_path)
    info = json.loads((Path(sim_dir) / "info.json").read_text())
    fps = float(info.get("fps") or session.info.get("fps") or 30.0)
    first = session.frames[0]
    t_first, first_index = first.t_capture_ns, first.index
    diameter = session.electrode_diameter_mm()
    truth_cov = CoverageMap.for_plan(plan)
    acc = Acceptance()
    fired = _controller_pulses(Path(controller_log))
    acc.pulses_fired = len(fired)
    placed_by_service = {(e.controller_boot, e.pulse_seq): (e.tip_u, e.tip_v)
                         for e in session.events if isinstance(e, PulseEvent) and e.kind == "pulse"}
    errors = []
    for t, key in fired:
        around = _truth_at(gt, t_first, first_index, fps, t)
        if around is None:
            continue
        a, b, w = around
        acc.pulses_placed += 1
        u = a.chart_u_mm + w * (b.chart_u_mm - a.chart_u_mm)
        v = a.chart_v_mm + w * (b.chart_v_mm - a.chart_v_mm)
        where = {"t_ns": t, "frames": [a.frame_index, b.frame_index], "zones": [a.true_zone, b.true_zone],
                 "plan_distance_mm": [a.plan_distance_mm, b.plan_distance_mm], "chart_mm": [u, v]}
        if a.true_kind == "exclusion" or b.true_kind == "exclusion":
            acc.pulses_in_exclusion.append(where)
        if min(a.plan_distance_mm, b.plan_distance_mm) < -plan.margin_mm:
            acc.pulses_outside_plan.append(where)
        if not (a.contact and b.contact):
            acc.pulses_lifted += 1
        truth_cov.deposit_pulse(u, v, diameter)
        su, sv = placed_by_service.get(key, (None, None)) if key is not None else (None, None)
        if su is not None and sv is not None and a.contact and b.contact:
            errors.append(math.hypot(su - u, sv - v))
    if errors:
        acc.pulse_error_mm = {"n": len(errors), "median": float(np.median(errors)),
                              "p90": float(np.percentile(errors, 90)), "max": float(np.max(errors))}
    cov_event = next((e for e in reversed(session.events) if isinstance(e, CoverageSnapshot)), None)
    service_cov = CoverageMap.from_dict(cov_event.coverage) if cov_event else CoverageMap.for_plan(plan)
    service_cov.targets = truth_cov.targets
    for z in plan.zones:
        acc.coverage_service[z] = service_cov.zone(z).fraction_at_target
        acc.coverage_truth[z] = truth_cov.zone(z).fraction_at_target
    acc.coverage_max_diff_pp = max((100 * abs(acc.coverage_service[z] - acc.coverage_truth[z]) for z in plan.zones), default=0.0)
    acc.violations_recorded = sum(1 for e in session.events if e.kind == "violation")
    return acc


def _guidance(*args: str) -> list[str]:
    return [sys.executable, "-m", "guidance.cli", *args]


def _step(args: list[str], env: dict, what: str, *, stdout=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """Run one `guidance` subcommand; if it fails, its own last line on stderr is the demo's error (exit 2)."""
    r = subprocess.run(args, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise UserError(f"{what} failed: {_last_line(r.stderr, r.returncode)}")
    return r


def _last_line(stderr: str, returncode: int) -> str:
    """The child's one-line error, without its `guidance COMMAND: error: ` prefix (we add our own)."""
    lines = [x.strip() for x in (stderr or "").strip().splitlines() if x.strip()]
    if not lines:
        return f"exit code {returncode}, nothing on stderr"
    last = lines[-1]
    head, sep, rest = last.partition(": error: ")
    return rest if sep and head.startswith("guidance") else last


def run_demo(out: str | Path, *, face_video: str = "single_face.mp4", path: str | Path = DEFAULT_PATH,
             plan: str | Path = DEFAULT_PLAN, max_frames: int | None = None, rate_hz: float = 8.0,
             report: bool = True, log=print) -> Acceptance:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError("demo output folder exists and is not empty (choose another or remove it)", path=out)
    # The files the demo reads are checked before its folder is made: a typo ends here, with nothing written.
    from guidance.sim.path import load_path
    from guidance.zones.atlas import load_atlas
    load_plan(plan)
    load_path(path, load_atlas())
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t_start = time.monotonic()
    try:
        run, sim, session = _simulate_and_run(out, env, face_video, path, plan, max_frames, rate_hz, log)
    except BaseException:
        # a step failed (its own one line is the error): leave no half-made demo behind
        if made:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    report_path = None
    if report:
        log("[4/5] report ...")
        from guidance.cli import COMMAND_MODULES
        if "report" in COMMAND_MODULES:
            report_path = out / "report.html"
            _step(_guidance("report", str(session), "-o", str(report_path), "--quiet"), env, "guidance report")
    log("[5/5] checking the session against the ground truth ...")
    acc = verify(sim, session, out / "controller.jsonl", plan)
    (out / "acceptance.json").write_text(json.dumps({**asdict(acc), "safe": acc.safe, "coverage_ok": acc.coverage_ok,
                                                     "passed": acc.passed}, indent=2))
    log("")
    log(f"done in {time.monotonic() - t_start:.0f} s; outputs in {out.resolve()}:")
    log(f"  overlay video  {out / 'overlay.mkv'}")
    log(f"  recording      {session}")
    if report_path:
        log(f"  report         {report_path}")
    log(f"  acceptance     {out / 'acceptance.json'}")
    log("")
    for line in run.stdout.strip().splitlines()[:3]:
        log(line)
    log(f"ground truth: {acc.pulses_fired} pulses fired, {len(acc.pulses_in_exclusion)} in an exclusion, "
        f"{len(acc.pulses_outside_plan)} outside the plan beyond the margin -> safety {'PASS' if acc.safe else 'FAIL'}; "
        f"coverage per zone within {acc.coverage_max_diff_pp:.1f} percentage points of the truth "
        f"(target 5) -> {'PASS' if acc.coverage_ok else 'FAIL'}")
    if acc.pulse_error_mm:
        e = acc.pulse_error_mm
        log(f"pulses in contact, placed by the service vs the true tip: median {e['median']:.1f} mm, "
            f"p90 {e['p90']:.1f}, max {e['max']:.1f} ({e['n']} pulses)")
    return acc


def _simulate_and_run(out: Path, env: dict, face_video: str, path: str | Path, plan: str | Path,
                      max_frames: int | None, rate_hz: float, log,
                      simulated: Path | None = None, run_args: tuple[str, ...] = (),
                      arm_at_s: tuple[float, ...] | None = None
                      ) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """Steps 1-3: simulate, keys, controller simulator and `guidance run`; a failing step raises its own line.

    `simulated`: a simulation folder made already (e.g. `sim/scalp.py`): step 1 is skipped. `run_args`: more
    arguments for `guidance run`. `arm_at_s`: instead of `--arm`, a scripted practitioner at the console arms the
    session at these times (s into the session) over its control channel (sim/practitioner.py); what each arm
    got is written to OUT/practitioner.json."""
    sim, keys, session = out / "simulation", out / "keys", out / "session"
    if simulated is not None:
        sim = simulated
    else:
        log(f"[1/5] simulating the handpiece path {Path(path).name} on {face_video} ...")
        # 640x480: the resolution the performance budget is stated for
        cmd = _guidance("simulate", "--face-video", face_video, "--path", str(path), "-o", str(sim), "--size",
                        "640x480")
        if max_frames:
            cmd += ["--max-frames", str(max_frames)]
        _step(cmd, env, "guidance simulate")
    _step(_guidance("keys", "generate", str(keys)), env, "guidance keys generate")
    port = free_port_pair()
    permit_ep, report_ep = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}"
    log(f"[2/5] controller simulator (separate process, trigger held, {rate_hz:g} Hz, CURVE) on {permit_ep} ...")
    # One start time for both: the video's frame i is captured at t0 + i/fps, and the controller's contact
    # sense follows the ground truth of that frame (the handpiece fires only in skin contact).
    t0 = time.monotonic_ns() + START_DELAY_NS
    ctrl = subprocess.Popen(_guidance("controller-sim", "--connect", permit_ep, "--report", report_ep, "--keys", str(keys),
                                      "--trigger", "held", "--rate-hz", str(rate_hz), "--log", str(out / "controller.jsonl"),
                                      "--contact-truth", str(sim), "--t0-ns", str(t0)),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    arming: tuple[str, ...] = ("--arm",)
    practitioner = None
    run_env = env
    if arm_at_s is not None:
        from guidance.live.control import TOKEN_ENV
        from guidance.sim.practitioner import Practitioner
        control_ep = f"tcp://127.0.0.1:{free_port_pair()}"
        practitioner = Practitioner(control_ep, t0, tuple(arm_at_s))
        run_env = dict(env, **{TOKEN_ENV: practitioner.token})
        arming = ("--control", control_ep, "--control-fps", "5")
    try:
        armed = "armed" if arm_at_s is None else f"armed by the practitioner at {', '.join(f'{a:g}' for a in arm_at_s)} s"
        log(f"[3/5] guidance run (headless, {armed}, recording) ...")
        if practitioner is not None:
            practitioner.start()
        run = subprocess.run(_guidance("run", "--source", str(sim / "simulated.avi"), "--plan", str(plan),
                                       "--publish", permit_ep, "--report", report_ep, "--keys", str(keys),
                                       "--record", str(session), "--headless", "--out", str(out / "overlay.mkv"),
                                       *arming, "--start-at-ns", str(t0), *run_args), env=run_env,
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise UserError(f"guidance run failed: {_last_line(run.stderr, run.returncode)}")
        (out / "run.txt").write_text(run.stdout)
    finally:
        stop_process(ctrl)
        if practitioner is not None:
            practitioner.stop()
            (out / "practitioner.json").write_text(json.dumps([asdict(a) for a in practitioner.attempts],
                                                              indent=2) + "\n")
    return run, sim, session
