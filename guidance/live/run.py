"""`guidance run`: the live session — start-up checks, the hot loop, display, recording.

Start-up refuses to run with a clear one-line error on anything a user can get
wrong (plan, handpiece profile, calibration, camera, busy port, models). Once
running, the service starts DISARMED; the practitioner arms it (key `a`, or
`--arm` for scripted sessions). It disarms on quit, on a fault, and when the
face has been lost for longer than `face_lost_disarm_s`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from guidance import __version__
from guidance.device_bridge.attribution import OutcomeLedger
from guidance.errors import UserError
from guidance.live.display import Display
from guidance.outputs import new_folder, output_file
from guidance.live.overlay import OverlayState
from guidance.live.overlay_scene import OverlayScene
from guidance.pipeline import FrameResult, GuidancePipeline, PipelineConfig
from guidance.resources import read_manifest, verified_path
from guidance.session import records as rec
from guidance.session.writer import SessionRecorder
from guidance.vision.capture.camera import check_camera_fits, load_camera
from guidance.vision.capture.sources import IMAGE_SUFFIXES, open_source
from guidance.vision.capture.video_out import STREAM_SUFFIXES
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.yamlfile import read_yaml
from guidance.zones.plan import load_plan

KEYS_HELP = "a arm/disarm  p pause  z zones  c coverage  i inset  m mesh  q quit"


@dataclass
class RunOptions:
    source: str
    plan: str
    handpiece: str | None = None
    camera_calibration: str | None = None
    publish: str | None = None  # permit endpoint, e.g. tcp://127.0.0.1:5571
    report: str | None = None  # report endpoint (default: permit port + 1)
    keys: str | None = None
    insecure: bool = False
    record: str | None = None
    headless: bool = False
    out: str | None = None
    arm: bool = False
    realtime: bool = True
    start_at_ns: int | None = None  # a video file's playback starts at this monotonic time (simulated sessions)
    max_frames: int | None = None
    face_lost_disarm_s: float = 1.0
    linger_s: float = 0.5  # keep taking pulse reports after the last frame
    quiet: bool = False


@dataclass
class RunSummary:
    frames: int = 0
    permits: int = 0
    denies: dict[str, int] = field(default_factory=dict)
    pulses: int = 0
    violations: int = 0
    violation_reasons: dict[str, int] = field(default_factory=dict)
    pulses_lifted: int = 0  # permitted pulses fired without skin contact (no coverage)
    pulses_contact_unknown: int = 0  # from controllers that do not report contact (no coverage)
    bridge: dict = field(default_factory=dict)  # rejects by code and sender, link per controller, refused keys
    coverage: dict[str, float] = field(default_factory=dict)
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    dropped_frames: int = 0
    overlay_dropped: int = 0
    recording: str | None = None
    out_video: str | None = None


def _snapshot_yaml(path: Path) -> dict:
    return {"path": str(Path(path).resolve()), "content": read_yaml(path)}


def _startup(opts: RunOptions):
    """Everything a user can get wrong in the files and numbers, checked before anything starts."""
    _check_options(opts)
    plan = load_plan(opts.plan)
    profile = load_handpiece_profile(opts.handpiece or plan.handpiece_profile)
    camera = load_camera(opts.camera_calibration) if opts.camera_calibration else None
    config = PipelineConfig.for_plan(plan, face_lost_disarm_s=opts.face_lost_disarm_s)
    manifest = read_manifest()
    for name in ("face_detection_short_range", config.tracker.landmark_model):
        verified_path(name)
    return plan, profile, camera, config, manifest


def _check_options(opts: RunOptions) -> None:
    """The numbers and the output paths: a wrong one ends here, before a port, a camera or a file is opened."""
    if opts.max_frames is not None and opts.max_frames < 1:
        raise UserError("must be at least 1", field="--max-frames")
    if not (math.isfinite(opts.face_lost_disarm_s) and 0 < opts.face_lost_disarm_s <= 3600):
        raise UserError("must be a number of seconds above 0 (at most 3600)", field="--face-lost-disarm-s")
    if opts.start_at_ns is not None and not _is_video_file(opts.source):
        raise UserError("only for a video file played in real time", field="--start-at-ns")
    if opts.start_at_ns is not None and not opts.realtime:
        raise UserError("only for a video file played in real time (not with --no-realtime)", field="--start-at-ns")
    if opts.record:
        new_folder(opts.record, "--record")
    if opts.out:
        if Path(opts.out).suffix.lower() not in STREAM_SUFFIXES:
            raise UserError("the overlay video is Matroska, which stays playable if the run is killed: "
                            "give a name ending in .mkv", path=opts.out, field="--out")
        output_file(opts.out, "--out", what="video file")
    if not opts.headless and sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                                       or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("no display for the window (set DISPLAY, or run --headless)", field="--headless")


def _is_video_file(source: str) -> bool:
    s = str(source)
    return not s.isdigit() and "://" not in s and Path(s).suffix.lower() not in IMAGE_SUFFIXES \
        and not any(ch in s for ch in "*?[") and not Path(s).is_dir()


def _source_kwargs(opts: RunOptions) -> dict[str, Any]:
    """How the source keeps time: a video file in real time keeps its own clock (or the given start time);
    a file or images read as fast as possible are stamped when read (no clock of their own); a camera
    stamps what it grabs."""
    s = str(opts.source)
    if s.isdigit() or "://" in s:
        return {}
    if _is_video_file(s) and opts.realtime:
        return {"realtime": True} if opts.start_at_ns is None else {"realtime": True, "start_at_ns": opts.start_at_ns}
    return {"stamp_on_read": True}


def session_info(opts: RunOptions, plan: Any, profile: Any, camera: Any, config: PipelineConfig, manifest: dict,
                 pipeline: GuidancePipeline, fps: float | None, permit_endpoint: str | None) -> dict:
    """info.json: the whole configuration and snapshots of every file the session depended on."""
    return {
        "source": str(opts.source),
        "plan": _snapshot_yaml(Path(plan.source)),
        "handpiece": _snapshot_yaml(Path(profile.source)),
        "camera": camera.to_dict() if camera else {"calibrated": False, "default": "f = image width, centred principal point"},
        "models": {k: v["sha256"] for k, v in manifest["models"].items()},
        "landmark_model": config.tracker.landmark_model,
        "atlas_version": pipeline.atlas.atlas_version,
        "chart_version": pipeline.atlas.chart_version,
        "config": config.to_json(),
        "fps": fps,
        "permit_endpoint": permit_endpoint,
    }


def run_session(opts: RunOptions) -> RunSummary:
    plan, profile, camera, config, manifest = _startup(opts)
    bridge = None
    if opts.publish:
        from guidance.device_bridge.keys import load_service_keys
        from guidance.device_bridge.service import BridgeService
        report = opts.report or _next_port(opts.publish)
        keys = load_service_keys(opts.keys) if opts.keys else None
        if keys is None and not opts.insecure:
            raise UserError("publishing permits needs CURVE keys (--keys DIR from `guidance keys generate`) "
                            "or an explicit --insecure for development", field="--keys")
        bridge = BridgeService(opts.publish, report, keys=keys, insecure=opts.insecure,
                               service_id="guidance")
    source = None
    recorder = None
    display = None
    try:
        kwargs = _source_kwargs(opts)
        source = open_source(opts.source, **kwargs)
        if camera is not None and source.size is not None:
            check_camera_fits(camera, *source.size)
        pipeline = GuidancePipeline(plan, profile, config=config, camera=camera,
                                    publish=bridge.publish if bridge else None)
        scene = OverlayScene(plan, pipeline.mapper.chart, pipeline.coverage, profile.electrode_diameter_mm)
        if opts.record:
            info = session_info(opts, plan, profile, camera, config, manifest, pipeline, source.fps,
                                bridge.permit_endpoint if bridge else None)
            recorder = SessionRecorder(opts.record, info)
            recorder.add_event(rec.SessionStart(time.monotonic_ns(), version=__version__))
        window = not opts.headless
        if window or opts.out:
            display = Display(window=window, out=opts.out, fps=source.fps or 30.0)
        if opts.arm:
            pipeline.set_armed(True, "--arm")
        return _loop(opts, source, pipeline, scene, bridge, recorder, display)
    finally:
        if bridge is not None:
            bridge.close(final_deny=True)
        if source is not None:
            source.close()


def _next_port(endpoint: str) -> str:
    head, _, port = endpoint.rpartition(":")
    if not port.isdigit():
        raise UserError("expected tcp://HOST:PORT", field="--publish")
    return f"{head}:{int(port) + 1}"


def _loop(opts, source, pipeline: GuidancePipeline, scene: OverlayScene, bridge, recorder, display) -> RunSummary:
    lat: deque[float] = deque(maxlen=300)
    all_lat: list[float] = []
    fps_t: deque[int] = deque(maxlen=30)
    summary = RunSummary(recording=opts.record, out_video=opts.out)
    outcomes = OutcomeLedger()
    link = "no controller" if bridge is None else "waiting"
    quit_requested = False
    layers = OverlayState().layers
    layer_keys = {ord("z"): "zones", ord("c"): "coverage", ord("i"): "inset", ord("m"): "mesh"}

    def drain_events() -> None:
        while pipeline.events:
            ev = pipeline.events.popleft()
            if recorder:
                recorder.add_event(ev)

    def take_reports() -> None:
        nonlocal link
        if bridge is None:
            return
        pulses, bridge_events = bridge.poll()
        for p in pulses:
            # Pulses reach coverage here, on the capture thread between two frames (never while
            # the gate is deciding), so a re-processing can apply them at the same point
            # (after_frame: the pulse reached coverage after this frame's decision).
            ev = rec.PulseEvent.from_attributed(p, after_frame=pipeline.state.frames - 1, now_ns=time.monotonic_ns())
            # A late report replaces the `missing` it was counted as: one pulse, counted once.
            outcomes.add_pulse(p)
            summary.pulses, summary.violations = outcomes.pulses, outcomes.violations
            summary.violation_reasons = dict(outcomes.violation_reasons)
            summary.pulses_lifted, summary.pulses_contact_unknown = outcomes.lifted, outcomes.contact_unknown
            if ev.kind == "pulse" and ev.deposit(pipeline.coverage, pipeline.profile.electrode_diameter_mm) == "deposited":
                scene.add_pulse(ev.tip_u, ev.tip_v)
            if recorder:
                recorder.add_event(ev)
        if pulses:
            pipeline.refresh_completion()
        for e in bridge_events:
            if e.event == "link":
                link = f"{e.kind} ({e.controller})"
            elif e.event in ("key_refused", "handshake_failed") and link in ("waiting", "no controller"):
                link = "controller key refused" if e.event == "key_refused" else "handshake failed (service key?)"
            if recorder:
                recorder.add_event(rec.bridge_event(e))
        if bridge.heartbeat is not None and link == "waiting" and bridge.receiver.peers:
            link = "connected"

    try:
        for frame in source:
            # keys from the window (previous frame), before the gate decides this one
            if display is not None:
                while not display.keys.empty():
                    k = display.keys.get()
                    if k in (ord("q"), 27):
                        quit_requested = True
                    elif k == ord("a"):
                        pipeline.set_armed(not pipeline.state.armed, "key")
                    elif k == ord("p"):
                        pipeline.set_paused(not pipeline.state.paused)
                    elif k in layer_keys:
                        layers[layer_keys[k]] = not layers[layer_keys[k]]
            if quit_requested:
                break
            result = pipeline.process(frame)  # ---- hot path ends at publish ----
            lat.append(result.latency_ms)
            all_lat.append(result.latency_ms)
            fps_t.append(frame.t_capture_ns)
            take_reports()
            drain_events()
            if recorder:
                face = result.face
                recorder.add_frame(result.record(), frame.image, face.landmarks if face.found else None)
            if display is not None:
                st = _overlay_state(result, pipeline, lat, fps_t, link, summary)
                st.layers = dict(layers)
                lm = result.face.landmarks if result.face.found else None
                ppm = _px_per_mm(result, pipeline)
                display.submit(frame.image, st, lambda s, lm=lm, ppm=ppm, uv=st_uv(result): _finish(scene, s, lm, ppm, uv))
            if opts.max_frames and result.frame.index + 1 >= opts.max_frames:
                break
    except KeyboardInterrupt:
        pass
    finally:
        pipeline.set_armed(False, "quit")
        pipeline.close()
        if bridge is not None:
            # a final deny goes out on close; keep taking reports a moment so none is lost
            t_end = time.monotonic() + opts.linger_s
            while time.monotonic() < t_end:
                take_reports()
                time.sleep(0.01)
            bridge.end_session()  # pulses a status announced but never reported: `missing`, while the record is open
            take_reports()
            summary.bridge = bridge.summary()
        drain_events()
        summary.frames = pipeline.state.frames
        summary.permits = pipeline.state.permits
        summary.denies = dict(pipeline.state.denies)
        summary.dropped_frames = getattr(source, "dropped", 0)
        if all_lat:
            summary.latency_ms_p50 = float(np.median(all_lat))
            summary.latency_ms_p99 = float(np.percentile(all_lat, 99))
        summary.coverage = {z: pipeline.coverage.zone(z).fraction_at_target for z in pipeline.plan.zones}
        if display is not None:
            display.close()
            summary.overlay_dropped = display.dropped
        if recorder:
            recorder.add_event(rec.CoverageSnapshot(time.monotonic_ns(), coverage=pipeline.coverage.to_dict()))
            recorder.add_event(rec.SessionEnd(time.monotonic_ns(), summary=dict(summary.__dict__)))
            recorder.close()
    return summary


def st_uv(result: FrameResult):
    z = result.lookup
    return z.chart_mm if z is not None and z.chart_mm is not None else None


def _px_per_mm(result: FrameResult, pipeline: GuidancePipeline) -> float | None:
    tip = result.tip
    if tip is None or not tip.valid or tip.tip_mm is None or pipeline.hand is None:
        return None
    return pipeline.hand.camera.fx / max(tip.tip_mm[2], 1.0)


def _overlay_state(result: FrameResult, pipeline: GuidancePipeline, lat, fps_t, link, summary) -> OverlayState:
    d = result.decision
    fps = 0.0
    if len(fps_t) > 1:
        fps = (len(fps_t) - 1) / ((fps_t[-1] - fps_t[0]) / 1e9)
    arr = np.asarray(lat)
    return OverlayState(
        armed=pipeline.state.armed, paused=pipeline.state.paused, permit=d.permit, reason=d.reason.value,
        zone=d.zone, boundary_mm=d.boundary_mm,
        tip_px=result.tip.tip_px if result.tip is not None and result.tip.valid else None,
        fps=fps, latency_ms_p50=float(np.median(arr)) if arr.size else None,
        latency_ms_p99=float(np.percentile(arr, 99)) if arr.size else None,
        link=link, pulses=summary.pulses, violations=summary.violations,
    )


def _finish(scene: OverlayScene, st: OverlayState, landmarks, px_per_mm, tip_uv) -> None:
    scene.fill(st, landmarks, px_per_mm)
    if st.layers.get("inset"):
        st.chart_inset = scene.inset(tip_uv)


def summary_lines(s: RunSummary) -> list[str]:
    denied = ", ".join(f"{k} {v}" for k, v in sorted(s.denies.items(), key=lambda kv: -kv[1])) or "none"
    cov = ", ".join(f"{k} {100 * v:.0f}%" for k, v in s.coverage.items() if v > 0) or "none yet"
    lifted = (f" ({s.pulses_lifted} fired lifted and {s.pulses_contact_unknown} without a contact report: no coverage)"
              if s.pulses_lifted or s.pulses_contact_unknown else "")
    return [
        f"pulses delivered {s.pulses}{lifted}, violations {s.violations}; frames permitted {s.permits} of {s.frames}",
        f"frames denied by reason: {denied}",
        f"coverage at target: {cov}",
    ]
