"""`guidance run`: the live session — start-up checks, the hot loop, display, recording.

Start-up refuses to run with a clear one-line error on anything a user can get
wrong (plan, handpiece profile, calibration, camera, busy port, models). Once
running, the service starts DISARMED; the practitioner arms it (key `a`, or
`--arm` for scripted sessions). It disarms on quit, on a fault, and when the
face has been lost for longer than `face_lost_disarm_s`.

With `--control tcp://127.0.0.1:PORT` a console (`guidance console`) drives the
session over a local channel (`guidance/live/control.py`): its commands are
applied between frames, where the window's keys are, and the session disarms
when the console's heartbeat stops or no browser watches it.
"""

from __future__ import annotations

import math
import os
import platform
import queue
import sys
import time
from collections import deque
import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from guidance import __version__
from guidance.device_bridge.attribution import OutcomeLedger
from guidance.errors import UserError
from guidance.live.display import Display
from guidance.outputs import new_folder, output_file
from guidance.live.overlay import OverlayState
from guidance.live.priority import GIL_SWITCH_S, gil_handoff
from guidance.live.touch_prompt import band_prompt, touch_target
from guidance.live.overlay_scene import (OverlayScene, project_decolletage_chart, project_neck_chart,
                                         project_scalp_chart)
from guidance.pipeline import FrameResult, GuidancePipeline, PipelineConfig
from guidance.resources import read_manifest, verified_path
from guidance.session import records as rec
from guidance.session.writer import SessionRecorder
from guidance.vision.capture.camera import check_camera_fits, load_camera
from guidance.vision.capture.sources import IMAGE_SUFFIXES, FrameSource, open_source
from guidance.vision.capture.video_out import STREAM_SUFFIXES
from guidance.vision.handpiece.profiles import load_handpiece_profile, load_head_band
from guidance.vision.rigid import RigidPose
from guidance.yamlfile import read_yaml
from guidance.zones.atlas import load_atlas
from guidance.zones.neck_twist import notch_point
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
    operator: str | None = None  # who treats (written into the recording's info)
    client: str | None = None  # whom (the console's client reference)
    control: str | None = None  # console control endpoint to bind, e.g. tcp://127.0.0.1:5580
    control_fps: float = 15.0  # overlay pictures a second to the console
    control_orphan_stop_s: float = 30.0  # stop when no console has been heard for this long
    loop: bool = False  # play a video file again and again, like a camera
    head_band: str | None = None  # scalp plans: the head band profile (default: the bundled head_band_default)
    band_registration: str = "touch"  # scalp plans: touch | face (PipelineConfig.band_registration)


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
    if opts.control and opts.arm:
        raise UserError("with a console, arming is the console's (confirmed) decision", field="--arm")
    _check_options(opts)
    plan = load_plan(opts.plan)
    profile = load_handpiece_profile(opts.handpiece or plan.handpiece_profile)
    camera = load_camera(opts.camera_calibration) if opts.camera_calibration else None
    config = PipelineConfig.for_plan(plan, face_lost_disarm_s=opts.face_lost_disarm_s)
    if opts.head_band is not None:
        # a neck plan with a band named: the band carries the head, the neck twists on the torso under it
        config = dataclasses.replace(config, head_band=opts.head_band, neck_on_band=True)
    if opts.band_registration not in ("touch", "face"):
        raise UserError(f"unknown band registration {opts.band_registration!r} (touch or face)",
                        field="--band-registration")
    config = dataclasses.replace(config, band_registration=opts.band_registration)
    atlas = load_atlas()
    if opts.head_band is not None or any(atlas.zones[z].surface == "scalp" for z in plan.zones if z in atlas.zones):
        load_head_band(config.head_band)  # a bad band profile ends here (one line, exit 2)
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
        "operator": opts.operator or "not recorded",
        "client": opts.client or "not recorded",
        # what the latency figures of this recording ran under
        "runtime": {"python": platform.python_version(), "gil_switch_s": sys.getswitchinterval(),
                    "cpus": os.cpu_count()},
    }


def run_session(opts: RunOptions) -> RunSummary:
    with gil_handoff(GIL_SWITCH_S):
        return _run_session(opts)


def _run_session(opts: RunOptions) -> RunSummary:
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
    source: FrameSource | None = None
    recorder = None
    display = None
    control = None
    try:
        if opts.control:
            from guidance.live.control import ControlServer
            control = ControlServer(opts.control, frame_fps=opts.control_fps, orphan_stop_s=opts.control_orphan_stop_s)
        if opts.loop:
            if not _is_video_file(opts.source):
                raise UserError("only for a video file", field="--loop")
            from guidance.live.looping import LoopingVideoSource
            source = LoopingVideoSource(opts.source, realtime=opts.realtime)
        else:
            source = open_source(opts.source, **_source_kwargs(opts))
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
        if window or opts.out or control:
            display = Display(window=window, out=opts.out, fps=source.fps or 30.0, control=control)
        if control is not None:
            control.publish_session(_console_info(opts, plan, camera, profile, recorder, bridge, source))
        if opts.arm:
            pipeline.set_armed(True, "--arm")
        return _loop(opts, source, pipeline, scene, bridge, recorder, display, control)
    finally:
        if control is not None:
            control.close()
        if bridge is not None:
            bridge.close(final_deny=True)
        if source is not None:
            source.close()


def _next_port(endpoint: str) -> str:
    head, _, port = endpoint.rpartition(":")
    if not port.isdigit():
        raise UserError("expected tcp://HOST:PORT", field="--publish")
    return f"{head}:{int(port) + 1}"


def _console_info(opts: RunOptions, plan: Any, camera: Any, profile: Any, recorder: Any, bridge: Any, source: Any) -> dict:
    """What the console shows about the session besides its state (sent once, and to each new console)."""
    return {"protocol": "guidance-control/1", "plan_id": plan.plan_id, "plan_zones": sorted(plan.zones),
            "plan_file": str(plan.source), "operator": opts.operator, "client": opts.client, "source": str(opts.source),
            "recording": opts.record, "session_id": recorder.info.get("session_id") if recorder else None,
            "camera_calibrated": camera is not None, "handpiece": str(profile.source),
            "permit_endpoint": bridge.permit_endpoint if bridge else None, "fps": source.fps}


def _loop(opts, source, pipeline: GuidancePipeline, scene: OverlayScene, bridge, recorder, display,
          control=None) -> RunSummary:
    lat: deque[float] = deque(maxlen=300)
    all_lat: list[float] = []
    fps_t: deque[int] = deque(maxlen=30)
    summary = RunSummary(recording=opts.record, out_video=opts.out)
    outcomes = OutcomeLedger()
    link = "no controller" if bridge is None else "waiting"
    quit_requested = False
    layers = OverlayState().layers
    layer_keys = {ord("z"): "zones", ord("c"): "coverage", ord("i"): "inset", ord("m"): "mesh"}
    key_refusals = 0
    t_start = time.monotonic_ns()

    def may_arm() -> str:
        """Why the session may not be armed now ("" if it may): with a console, only while it watches."""
        if control is None:
            return ""
        w = control.watch()
        return "" if w.ok else w.cause

    def arm(cause: str) -> str:
        why = may_arm()
        if not why:
            pipeline.set_armed(True, cause)
        return why

    def apply_console(frame) -> None:
        """The console's commands, between frames (where the window's keys are applied)."""
        nonlocal quit_requested
        assert control is not None
        while True:
            try:
                cmd = control.commands.get_nowait()
            except queue.Empty:
                break
            c = cmd.get("cmd")
            if c == "arm":
                why = arm("console")
                control.reply(cmd, not why, why or "armed")
            elif c == "disarm":
                pipeline.set_armed(False, "console")
                control.reply(cmd, True, "disarmed")
            elif c in ("pause", "resume"):
                pipeline.set_paused(c == "pause")
                control.reply(cmd, True, "paused" if c == "pause" else "resumed")
            elif c == "stop":
                quit_requested = True
                control.reply(cmd, True, "stopping")
            elif c == "grab":
                control.grab(cmd, frame.image)
            elif c == "note":
                text = str(cmd.get("text", ""))[:2000]
                if recorder:
                    recorder.add_event(rec.Note(time.monotonic_ns(), text=text))
                control.reply(cmd, True, "noted")
        w = control.watch()
        if not w.ok and pipeline.state.armed:
            pipeline.set_armed(False, f"console: {w.cause}")
        if control.orphaned():
            quit_requested = True
            pipeline.set_armed(False, "console: none for {:g} s".format(opts.control_orphan_stop_s))

    def drain_events() -> None:
        while pipeline.events:
            ev = pipeline.events.popleft()
            if recorder:
                recorder.add_event(ev)

    def take_reports() -> None:
        nonlocal link, key_refusals
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
                assert ev.tip_u is not None and ev.tip_v is not None, "a deposited pulse has its chart position"
                scene.add_pulse(ev.tip_u, ev.tip_v)
            if recorder:
                recorder.add_event(ev)
        if pulses:
            pipeline.refresh_completion()
        for e in bridge_events:
            if e.event == "key_refused":
                key_refusals += int(getattr(e, "count", 1) or 1)
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
                        if pipeline.state.armed:
                            pipeline.set_armed(False, "key")
                        else:
                            arm("key")
                    elif k == ord("p"):
                        pipeline.set_paused(not pipeline.state.paused)
                    elif k in layer_keys:
                        layers[layer_keys[k]] = not layers[layer_keys[k]]
            if control is not None:
                apply_console(frame)
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
                st.frame_index, st.key_refusals = frame.index, key_refusals
                st.elapsed_s = (time.monotonic_ns() - t_start) / 1e9
                lm = result.face.landmarks if result.face.found else None
                ppm = _px_per_mm(result, pipeline)
                proj = _patch_projector(result, pipeline)
                offmesh = _offmesh_projectors(result, pipeline)
                display.submit(frame.image, st,
                               lambda s, lm=lm, ppm=ppm, uv=st_uv(result), proj=proj, off=offmesh:
                               _finish(scene, s, lm, ppm, uv, proj, off),
                               behind=result.latency_ms > 1000.0 / (source.fps or 30.0))  # late: the overlay yields
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
        if control is not None:
            control.publish_end(dict(summary.__dict__))
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
        link=link, pulses=summary.pulses, violations=summary.violations, prompt=band_prompt(result.head_band),
        target_px=touch_target(result.head_band, result.face.landmarks if result.face.found else None,
                               _notch_px(result, pipeline)),
    )


def _notch_px(result: FrameResult, pipeline: GuidancePipeline) -> tuple[float, float] | None:
    """Where the model's sternal notch is in the picture through this frame's face pose (a band session with neck
    zones; roughly: the face pose's bias is 10-20 mm there): the ring for the notch's touch."""
    pose = result.face.head_pose if result.face.found else None
    if not pipeline.neck_planned or pipeline.hand is None or pose is None or not pose.valid:
        return None
    p = RigidPose(pose.R, np.asarray(pose.tvec_mm, float)).apply(
        notch_point(pipeline.mapper.chart.surfaces["neck"])[None])
    cam = pipeline.hand.camera.scaled_to(*result.frame.size)
    px, _ = cv2.projectPoints(p.reshape(1, 1, 3), np.zeros(3), np.zeros(3), cam.K, cam.dist)
    x, y = px.reshape(2)
    return float(x), float(y)


def _patch_projector(result: FrameResult, pipeline: GuidancePipeline):
    """Body plans: chart mm -> image px through this frame's patch pose (for the overlay thread), else None."""
    patch, mapper, hand = result.patch, pipeline.patch_mapper, pipeline.hand
    if patch is None or not patch.found or mapper is None or hand is None:
        return None
    camera = hand.camera
    return lambda uv: mapper.project(patch, uv, camera)


def _offmesh_projectors(result: FrameResult, pipeline: GuidancePipeline) -> dict:
    """Chart mm -> image px for this frame's off-mesh surfaces (for the overlay thread): the scalp through the band's
    head (scalp sessions, band carrying the head now), the neck twisted on the torso and the décolletage on it
    (plans with neck or décolletage zones, the rest pose made). NaN where the skin faces away."""
    out: dict = {}
    hand = pipeline.hand
    if hand is None:
        return out
    surfaces = pipeline.mapper.chart.surfaces
    band = result.head_band
    if band is not None and band.state == "ok" and band.pose is not None:
        out["scalp"] = functools.partial(project_scalp_chart, band.pose, surfaces["scalp"], hand.camera)
    torso = result.torso
    if torso is not None and torso.reference is not None:
        out["neck"] = functools.partial(project_neck_chart, torso.reference, surfaces["neck"], hand.camera)
        out["decolletage"] = functools.partial(project_decolletage_chart, torso.reference, surfaces["decolletage"],
                                               hand.camera)
    return out


def _finish(scene: OverlayScene, st: OverlayState, landmarks, px_per_mm, tip_uv, project=None,
            offmesh=None) -> None:
    scene.fill(st, landmarks, px_per_mm, project, offmesh)
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
