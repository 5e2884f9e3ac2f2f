"""`guidance controller-sim`: a device controller process built on the reference gate.

It does what a handpiece controller does, minus the high voltage: a trigger
(held, pulsed on a schedule, or released), a pulse rate, `may_fire` checked
right before every pulse, a report for every pulse fired, a status heartbeat.
Fault knobs (clock offset and jump, a rogue unpermitted pulse) exist so the
service side can be tested against a real process. `--log` writes one JSON
line per pulse and per gate-state change, flushed at once, with both the
controller clock and the host's monotonic clock.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from guidance.device_bridge import keys as keyfiles
from guidance.device_bridge.controller.gate import ControllerGate, ControllerLink, LinkKeys
from guidance.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller-sim", help="simulated pulse controller using the reference fail-closed gate")
    p.add_argument("--connect", required=True, metavar="ENDPOINT", help="service permit endpoint, e.g. tcp://127.0.0.1:5571")
    p.add_argument("--report", metavar="ENDPOINT", help="service report endpoint (default: same host, port + 1)")
    p.add_argument("--keys", metavar="DIR", help="key directory from `guidance keys generate` (service.key, controller.key_secret)")
    p.add_argument("--server-key", metavar="FILE", help="service public key file (overrides DIR/service.key)")
    p.add_argument("--key", metavar="FILE", help="this controller's .key_secret file (overrides DIR/controller.key_secret)")
    p.add_argument("--insecure", action="store_true", help="no CURVE: accept unauthenticated permits (dev/test only)")
    p.add_argument("--id", default="controller-sim", help="controller id in reports")
    p.add_argument("--trigger", choices=["held", "schedule", "off"], default="held")
    p.add_argument("--schedule", default="200,100", metavar="ON_MS,OFF_MS", help="trigger pattern for --trigger schedule")
    p.add_argument("--rate-hz", type=float, default=20.0, help="pulse rate while the trigger is down")
    p.add_argument("--pulse-us", type=int, default=2000, help="pulse duration reported")
    p.add_argument("--intensity-pct", type=float, default=60.0)
    p.add_argument("--status-ms", type=float, default=100.0, help="heartbeat interval")
    p.add_argument("--max-ttl-ms", type=int, default=100, help="cap on any permit window")
    p.add_argument("--duration-s", type=float, default=0.0, help="stop after this long (0: until SIGTERM/SIGINT)")
    p.add_argument("--log", metavar="FILE", help="JSON-lines log of pulses and gate-state changes")
    p.add_argument("--clock-offset-ms", type=float, default=0.0, help="simulate a controller clock offset")
    p.add_argument("--clock-jump-at-s", type=float, default=None, help="simulate a clock step at this time")
    p.add_argument("--clock-jump-ms", type=float, default=0.0)
    p.add_argument("--rogue-pulse-at-s", type=float, default=None, help="fault injection: fire one pulse without a permit")
    p.set_defaults(func=run)


def _default_report(endpoint: str) -> str:
    u = urlsplit(endpoint)
    if u.scheme != "tcp" or u.port is None:
        raise UserError(f"cannot derive a report endpoint from {endpoint!r}; pass --report", field="--report")
    return f"tcp://{u.hostname}:{u.port + 1}"


def _link_keys(args: argparse.Namespace) -> LinkKeys | None:
    if args.insecure:
        if args.keys or args.server_key or args.key:
            raise UserError("--insecure together with keys: choose one", field="--insecure")
        return None
    d = Path(args.keys) if args.keys else None
    server = args.server_key or (d / "service.key" if d else None)
    mine = args.key or (d / "controller.key_secret" if d else None)
    if server is None or mine is None:
        raise UserError("no keys: pass --keys DIR (or --server-key and --key), or --insecure for dev/test")
    pair = keyfiles.load_pair(mine)
    return LinkKeys(keyfiles.load_public(server), pair.public, pair.secret)


def _schedule(text: str) -> tuple[float, float]:
    try:
        on, off = (float(x) for x in text.split(","))
        if on <= 0 or off < 0:
            raise ValueError
    except ValueError:
        raise UserError(f"expected ON_MS,OFF_MS with ON_MS > 0, got {text!r}", field="--schedule") from None
    return on, off


def run(args: argparse.Namespace) -> int:
    if not args.rate_hz > 0:
        raise UserError("must be > 0", field="--rate-hz")
    on_ms, off_ms = _schedule(args.schedule)
    keys = _link_keys(args)
    report = args.report or _default_report(args.connect)
    t_start = time.monotonic_ns()
    offset_ns = int(args.clock_offset_ms * 1e6)
    jump_at = None if args.clock_jump_at_s is None else t_start + int(args.clock_jump_at_s * 1e9)
    jump_ns = int(args.clock_jump_ms * 1e6)

    def clock() -> int:
        t = time.monotonic_ns()
        return t + offset_ns + (jump_ns if jump_at is not None and t >= jump_at else 0)

    log = open(args.log, "a", buffering=1) if args.log else None  # line-buffered: each line reaches disk
    stop = {"flag": False}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    gate = ControllerGate(max_ttl_ms=args.max_ttl_ms, accept_unauthenticated=keys is None)
    link = ControllerLink(args.connect, report, controller_id=args.id, keys=keys, insecure=keys is None,
                          clock=clock, gate=gate)

    def emit(event: str, **kw) -> None:
        if log:
            log.write(json.dumps({"event": event, "t_mono_ns": time.monotonic_ns(), **kw}) + "\n")

    emit("start", boot=link.boot, controller=args.id)
    print(f"controller-sim {args.id} boot {link.boot} connected to {args.connect} and {report}", flush=True)
    period_ns = int(1e9 / args.rate_hz)
    next_pulse = 0
    next_status = 0
    rogue_at = None if args.rogue_pulse_at_s is None else t_start + int(args.rogue_pulse_at_s * 1e9)
    end = None if args.duration_s <= 0 else t_start + int(args.duration_s * 1e9)
    last_state = None
    try:
        while not stop["flag"] and (end is None or time.monotonic_ns() < end):
            now = clock()
            wait_ns = max(0, min(next_pulse - now, next_status - now, 5_000_000))
            for v in link.poll(int(wait_ns // 1_000_000)):
                if v.value not in ("accepted", "accepted_deny"):
                    emit("rejected", verdict=v.value)
            now = clock()
            state = gate.state(now)
            if state != last_state:
                emit("state", state=state.value, t_ctrl_ns=now)
                last_state = state
            mono = time.monotonic_ns() - t_start
            if args.trigger == "held":
                trigger = True
            elif args.trigger == "schedule":
                trigger = (mono / 1e6) % (on_ms + off_ms) < on_ms
            else:
                trigger = False
            if trigger and now >= next_pulse:
                permit = gate.fire(now)
                if permit is not None:
                    link.report_pulse(now, permit, duration_us=args.pulse_us, intensity_pct=args.intensity_pct)
                    emit("pulse", pulse_seq=link.pulse_seq, t_ctrl_ns=now, permit_seq=permit.seq,
                         permit_boot=permit.boot)
                    next_pulse = now + period_ns
            if rogue_at is not None and time.monotonic_ns() >= rogue_at:
                rogue_at = None
                now = clock()
                link.report_pulse(now, None, duration_us=args.pulse_us, intensity_pct=args.intensity_pct)
                emit("pulse", pulse_seq=link.pulse_seq, t_ctrl_ns=now, permit_seq=None, permit_boot=None, rogue=True)
            if now >= next_status:
                link.send_status(trigger)
                next_status = now + int(args.status_ms * 1e6)
    finally:
        emit("stop", pulses=link.pulses)
        link.close(drain_ms=500)
        if log:
            log.close()
    print(f"controller-sim {args.id}: {link.pulses} pulses", file=sys.stderr, flush=True)
    return 0
