"""`guidance run`: the live guidance app (camera or video → permits, overlay, recording)."""

from __future__ import annotations

import argparse

from guidance.live.run import KEYS_HELP, RunOptions, run_session, summary_lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="live guidance: track, gate, publish permits, overlay, record",
                       description=f"Starts DISARMED. Window keys: {KEYS_HELP}.")
    p.add_argument("--source", required=True, help="camera index (0), stream URL, or video file")
    p.add_argument("--plan", required=True, help="treatment plan YAML")
    p.add_argument("--handpiece", help="handpiece profile YAML (default: the plan's handpiece_profile)")
    p.add_argument("--camera-calibration", metavar="CAM.yaml", help="camera intrinsics (default: uncalibrated)")
    p.add_argument("--publish", metavar="ENDPOINT", help="permit endpoint to bind, e.g. tcp://127.0.0.1:5571 "
                   "(reports on the next port unless --report)")
    p.add_argument("--report", metavar="ENDPOINT", help="pulse-report endpoint to bind")
    p.add_argument("--keys", metavar="DIR", help="CURVE key directory (from `guidance keys generate`)")
    p.add_argument("--insecure", action="store_true", help="no CURVE (development and tests only)")
    p.add_argument("--record", metavar="DIR", help="record the session into a new folder")
    p.add_argument("--headless", action="store_true", help="no window")
    p.add_argument("--out", metavar="VIDEO.mkv", help="write the overlay video (Matroska: stays playable if the run "
                   "is killed)")
    p.add_argument("--arm", action="store_true", help="arm at start (scripted sessions; live use arms with the key)")
    p.add_argument("--no-realtime", action="store_true", help="process a video file as fast as possible (each frame "
                   "stamped when read, as a camera stamps what it grabs)")
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--start-at-ns", type=int, metavar="T", help="a video file's playback starts at this monotonic "
                   "time (ns): frame i is released at T + i/fps (simulated sessions, with controller-sim --t0-ns)")
    p.add_argument("--head-band", metavar="BAND.yaml", help="scalp plans: the head band profile (a file, or a bundled "
                   "name; default head_band_default); see docs/scalp.md. Given for a plan with neck zones, the band "
                   "carries the head there too (docs/neck.md)")
    p.add_argument("--band-registration", choices=("touch", "face"), default="touch",
                   help="scalp plans: tie the band to the head by touching four face landmarks with the tip (touch, "
                        "the default: the overlay asks for each) or by the face pose alone (face: no touching, but "
                        "about 10 mm less accurate); see docs/scalp.md")
    p.add_argument("--face-lost-disarm-s", type=float, default=1.0, help="disarm after the face is lost this long")
    p.add_argument("--loop", action="store_true", help="play a video file again and again, like a camera (kiosk, demo)")
    p.add_argument("--operator", help="who treats (written into the recording and shown in its report)")
    p.add_argument("--client", help="the client's reference (written into the recording and shown in its report)")
    p.add_argument("--control", metavar="tcp://127.0.0.1:PORT",
                   help="let a console (`guidance console`) drive this session over a local channel: arm/disarm/pause/"
                        "resume/stop and a heartbeat; disarms when the console or its browser goes away")
    p.add_argument("--control-fps", type=float, default=15.0, help="overlay pictures a second to the console (default 15)")
    p.add_argument("--control-orphan-stop-s", type=float, default=30.0,
                   help="stop the session when no console has been heard for this long (default 30)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opts = RunOptions(source=args.source, plan=args.plan, handpiece=args.handpiece,
                      camera_calibration=args.camera_calibration, publish=args.publish, report=args.report,
                      keys=args.keys, insecure=args.insecure, record=args.record, headless=args.headless,
                      out=args.out, arm=args.arm, realtime=not args.no_realtime, max_frames=args.max_frames,
                      face_lost_disarm_s=args.face_lost_disarm_s, start_at_ns=args.start_at_ns,
                      operator=args.operator, client=args.client, control=args.control, control_fps=args.control_fps,
                      control_orphan_stop_s=args.control_orphan_stop_s, loop=args.loop,
                      head_band=args.head_band, band_registration=args.band_registration)
    s = run_session(opts)
    for line in summary_lines(s):
        print(line)
    if s.latency_ms_p50 is not None:
        print(f"latency capture→publish: median {s.latency_ms_p50:.2f} ms, p99 {s.latency_ms_p99:.2f} ms; "
              f"frames dropped by the source {s.dropped_frames}, overlay frames dropped {s.overlay_dropped}")
    if s.recording:
        print(f"recording: {s.recording}")
    if s.out_video:
        print(f"overlay video: {s.out_video}")
    note = face_pose_note(args.plan, args.head_band)
    if note:
        print(note)
    return 0


def face_pose_note(plan_name: str, head_band: str | None) -> str:
    """A face session with neck or décolletage zones: why most of them were denied, and what to do (docs/neck.md)."""
    if head_band is not None:
        return ""
    from guidance.zones.atlas import load_atlas
    from guidance.zones.plan import load_plan

    plan, atlas = load_plan(plan_name), load_atlas()
    if plan.area == "body" or not any(atlas.zones[z].surface in ("neck", "decolletage")
                                      for z in plan.zones if z in atlas.zones):
        return ""
    return ("note: without --head-band the neck and décolletage are placed by the face pose (9-14 mm and 19-28 mm "
            "off on unseen faces, docs/neck.md): the gate keeps most of them denied near_boundary; give --head-band "
            "to treat them")
