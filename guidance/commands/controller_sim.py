"""`guidance controller-sim`: a device controller process built on the reference gate.

It does what a handpiece controller does, minus the high voltage: a trigger
(held, pulsed on a schedule, or released), a pulse rate, skin contact (an
electroporation handpiece only switches on when it touches the skin), a
permit checked right before every pulse, a report for every pulse fired, a
status heartbeat.

Contact: with `--contact-truth SIM_DIR --t0-ns T` it follows the simulator's
ground truth — frame i of the simulated video is captured at host monotonic
time T + i/fps (CLOCK_MONOTONIC is shared by the processes of one machine),
and the tip is in contact while that frame's `contact` column says so (no
contact before the first frame and after the last). Without it, contact is
assumed throughout, and the log says so.

Fault knobs (clock offset and jump, a rogue unpermitted pulse, `--misbehave
lifted` to fire off the skin, `--misbehave overrate` to exceed the protocol's
pulse-rate limit, `--protocol 1.0` to speak the old protocol) exist so the
service side can be tested against a real process. `--log` writes one JSON
line per pulse, gate-state, contact and link change, flushed at once, with
both the controller clock and the host's monotonic clock. A refused key or a
failed CURVE handshake is also said once on stderr.
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
from guidance.device_bridge import protocol
from guidance.device_bridge.controller.gate import (LINK_HANDSHAKE_FAILED, LINK_KEY_REFUSED, ControllerGate,
                                                    ControllerLink, LinkKeys)
from guidance.errors import UserError

INPUT_POLL_NS = 5_000_000  # longest wait of the loop: trigger and contact are sampled at least this often


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller-sim", help="simulated pulse controller using the reference fail-closed gate")
    p.add_argument("--connect", required=True, metavar="ENDPOINT", help="service permit endpoint, e.g. tcp://127.0.0.1:5571")
    p.add_argument("--report", metavar="ENDPOINT", help="service report endpoint (default: same host, port + 1)")
    p.add_argument("--keys", metavar="DIR", help="key directory from `guidance keys generate` (service.key, controller.key_secret)")
    p.add_argument("--server-key", metavar="FILE", help="service public key file (overrides DIR/service.key)")
    p.add_argument("--key", metavar="FILE",
                   help="this controller's .key_secret file (default: DIR/ID.key_secret if --id is given and it "
                        "exists, else DIR/controller.key_secret)")
    p.add_argument("--insecure", action="store_true", help="no CURVE: accept unauthenticated permits (dev/test only)")
    p.add_argument("--id", default=None,
                   help="controller id in reports; must be the name its key is allow-listed under at the service "
                        "(default: the key file's name, e.g. 'controller'; 'controller-sim' with --insecure)")
    p.add_argument("--trigger", choices=["held", "schedule", "off"], default="held")
    p.add_argument("--schedule", default="200,100", metavar="ON_MS,OFF_MS", help="trigger pattern for --trigger schedule")
    p.add_argument("--rate-hz", type=float, default=20.0,
                   help=f"pulse rate while the trigger is down (at most {protocol.MAX_PULSE_RATE_HZ:g})")
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
    p.add_argument("--contact-truth", metavar="SIM_DIR",
                   help="skin contact from a `guidance simulate` folder (ground_truth.csv, info.json fps); needs --t0-ns")
    p.add_argument("--t0-ns", type=int, default=None, metavar="T",
                   help="host CLOCK_MONOTONIC time (ns) at which frame 0 of the simulated video is captured")
    p.add_argument("--misbehave", action="append", choices=["lifted", "overrate"], default=[],
                   help="fault injection: 'lifted' fires off the skin too (reported contact:false); 'overrate' "
                        "allows --rate-hz above the protocol limit")
    p.add_argument("--protocol", choices=["1.0", f"1.{protocol.PROTOCOL_MINOR}"], default=f"1.{protocol.PROTOCOL_MINOR}",
                   help="protocol version to speak (1.0: an old controller without contact sense)")
    p.set_defaults(func=run)


def _default_report(endpoint: str) -> str:
    u = urlsplit(endpoint)
    if u.scheme != "tcp" or u.port is None:
        raise UserError(f"cannot derive a report endpoint from {endpoint!r}; pass --report", field="--report")
    return f"tcp://{u.hostname}:{u.port + 1}"


def _link_keys(args: argparse.Namespace) -> tuple[LinkKeys | None, str]:
    """The CURVE keys, and the controller id they are meant for (the key file's name)."""
    if args.insecure:
        if args.keys or args.server_key or args.key:
            raise UserError("--insecure together with keys: choose one", field="--insecure")
        return None, "controller-sim"
    d = Path(args.keys) if args.keys else None
    server = args.server_key or (d / "service.key" if d else None)
    mine = args.key
    if mine is None and d is not None:
        own = d / f"{args.id}.key_secret" if args.id and protocol.valid_id(args.id) else None
        mine = own if own is not None and own.is_file() else d / f"{keyfiles.DEFAULT_CONTROLLER}.key_secret"
    if server is None or mine is None:
        raise UserError("no keys: pass --keys DIR (or --server-key and --key), or --insecure for dev/test")
    pair = keyfiles.load_pair(mine)
    name = Path(mine).name.removesuffix(".key_secret")
    return LinkKeys(keyfiles.load_public(server), pair.public, pair.secret), name


class ContactTruth:
    """Skin contact over host monotonic time, from a simulation's ground truth: frame i at t0 + i/fps."""

    def __init__(self, sim_dir: str, t0_ns: int):
        from guidance.sim.ground_truth import load_ground_truth

        d = Path(sim_dir)
        info_path = d / "info.json"
        try:
            info = json.loads(info_path.read_text())
        except OSError:
            raise UserError("not found (is this a `guidance simulate` folder?)", path=info_path) from None
        except json.JSONDecodeError:
            raise UserError("not JSON", path=info_path) from None
        fps = info.get("fps") if isinstance(info, dict) else None
        if not (type(fps) is int or type(fps) is float) or not fps > 0:
            raise UserError("missing or not a positive number", path=info_path, field="fps")
        self.fps = float(fps)
        self.t0_ns = t0_ns
        self.contact = [r.contact for r in load_ground_truth(d)]

    def frame(self, t_mono_ns: int) -> int:
        return int((t_mono_ns - self.t0_ns) * self.fps // 1_000_000_000)

    def at(self, t_mono_ns: int) -> bool:
        i = self.frame(t_mono_ns)
        return 0 <= i < len(self.contact) and self.contact[i]


def loop_wait_ms(now_ns: int, next_pulse_ns: int, next_status_ns: int) -> int:
    """How long the loop may sleep in poll (docs/protocol.md §9).

    Until the next status is due, or the next pulse falls due, at most 5 ms (trigger and contact are sampled that
    often). A pulse that is due but refused waits for a new permit, whose arrival ends the poll at once: the wait is
    never 0 then, or the loop spins a core while the trigger is held and the gate says no. Rounded up to whole ms, so
    a sub-millisecond wait does not become poll(0) either.
    """
    to_pulse = next_pulse_ns - now_ns
    wait_ns = min(next_status_ns - now_ns, to_pulse if to_pulse > 0 else INPUT_POLL_NS, INPUT_POLL_NS)
    return max(0, -(-wait_ns // 1_000_000))


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
    if args.rate_hz > protocol.MAX_PULSE_RATE_HZ and "overrate" not in args.misbehave:
        raise UserError(f"above the protocol's pulse-rate limit of {protocol.MAX_PULSE_RATE_HZ:g} Hz "
                        "(--misbehave overrate to test the service against it)", field="--rate-hz")
    if args.id is not None and not protocol.valid_id(args.id):
        raise UserError(f"{args.id!r} is not a controller id (1-64 of [A-Za-z0-9._-])", field="--id")
    if (args.contact_truth is None) != (args.t0_ns is None):
        raise UserError("--contact-truth and --t0-ns go together", field="--contact-truth" if args.t0_ns is not None
                        else "--t0-ns")
    truth = ContactTruth(args.contact_truth, args.t0_ns) if args.contact_truth else None
    on_ms, off_ms = _schedule(args.schedule)
    keys, key_name = _link_keys(args)
    controller_id = args.id or key_name
    lifted_ok = "lifted" in args.misbehave
    minor = int(args.protocol.split(".")[1])
    report = args.report or _default_report(args.connect)
    t_start = time.monotonic_ns()
    offset_ns = int(args.clock_offset_ms * 1e6)
    jump_at = None if args.clock_jump_at_s is None else t_start + int(args.clock_jump_at_s * 1e9)
    jump_ns = int(args.clock_jump_ms * 1e6)

    def ctrl_time(t: int) -> int:
        """The controller clock at host monotonic time t (the simulated offset and jump)."""
        return t + offset_ns + (jump_ns if jump_at is not None and t >= jump_at else 0)

    def clock() -> int:
        return ctrl_time(time.monotonic_ns())

    log = open(args.log, "a", buffering=1) if args.log else None  # line-buffered: each line reaches disk
    stop = {"flag": False}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    gate = ControllerGate(max_ttl_ms=args.max_ttl_ms, accept_unauthenticated=keys is None)
    link = ControllerLink(args.connect, report, controller_id=controller_id, keys=keys, insecure=keys is None,
                          clock=clock, gate=gate, protocol_minor=minor)

    def emit(event: str, **kw) -> None:
        if log:
            log.write(json.dumps({"event": event, "t_mono_ns": time.monotonic_ns(), **kw}) + "\n")

    contact_source = f"ground truth {args.contact_truth} (t0 {args.t0_ns} ns)" if truth else "assumed (no --contact-truth)"
    if minor == 0:
        contact_source = "not reported (protocol 1.0)" + ("" if truth else "; assumed for firing")
    emit("start", boot=link.boot, controller=controller_id, protocol=args.protocol, contact=contact_source,
         misbehave=list(args.misbehave))
    print(f"controller-sim {controller_id} boot {link.boot} (protocol {args.protocol}) connecting to {args.connect} "
          f"and {report}; contact: {contact_source}", flush=True)
    if keys is not None and args.id is not None and args.id != key_name:
        print(f"controller-sim {controller_id}: note: using key {key_name!r}; the service accepts reports only under "
              f"the id that key is allow-listed as", file=sys.stderr, flush=True)
    period_ns = int(1e9 / args.rate_hz)
    next_pulse = 0
    next_status = 0
    rogue_at = None if args.rogue_pulse_at_s is None else t_start + int(args.rogue_pulse_at_s * 1e9)
    end = None if args.duration_s <= 0 else t_start + int(args.duration_s * 1e9)
    last_state = None
    last_contact = None
    try:
        while not stop["flag"] and (end is None or time.monotonic_ns() < end):
            now = clock()
            for v in link.poll(loop_wait_ms(now, next_pulse, next_status)):
                if v.value not in ("accepted", "accepted_deny"):
                    emit("rejected", verdict=v.value)
            for lstate, detail in link.link_changes():
                emit("link", state=lstate, detail=detail)
                if lstate == LINK_KEY_REFUSED:
                    print(f"controller-sim {controller_id}: key refused by the service at {report} ({detail}); "
                          f"is this key in the service's authorized_controllers/ as {controller_id}.key?",
                          file=sys.stderr, flush=True)
                elif lstate == LINK_HANDSHAKE_FAILED:
                    print(f"controller-sim {controller_id}: CURVE handshake with the service failed ({detail}); "
                          "is --server-key / DIR/service.key the service's current public key?",
                          file=sys.stderr, flush=True)
            mono_now = time.monotonic_ns()  # one instant for the gate, the contact sense and the pulse
            now = ctrl_time(mono_now)
            state = gate.state(now)
            if state != last_state:
                emit("state", state=state.value, t_ctrl_ns=now)
                last_state = state
            contact = truth.at(mono_now) if truth else True
            if contact != last_contact:
                emit("contact", contact=contact, frame=truth.frame(mono_now) if truth else None)
                last_contact = contact
            mono = time.monotonic_ns() - t_start
            if args.trigger == "held":
                trigger = True
            elif args.trigger == "schedule":
                trigger = (mono / 1e6) % (on_ms + off_ms) < on_ms
            else:
                trigger = False
            if trigger and now >= next_pulse and (contact or lifted_ok):
                # the handpiece switches on only at skin contact (unless misbehaving), and never while a pulse report
                # is still waiting for room in the send queue (§4.3: a pulse that cannot be reported is not delivered)
                permit = gate.fire(now) if not link.backlog else None
                if permit is not None:
                    link.report_pulse(now, permit, duration_us=args.pulse_us, intensity_pct=args.intensity_pct,
                                      contact=contact)
                    emit("pulse", pulse_seq=link.pulse_seq, t_ctrl_ns=now, permit_seq=permit.seq,
                         permit_boot=permit.boot, contact=contact)
                    next_pulse = now + period_ns
            if rogue_at is not None and time.monotonic_ns() >= rogue_at:
                rogue_at = None
                now = clock()
                link.report_pulse(now, None, duration_us=args.pulse_us, intensity_pct=args.intensity_pct,
                                  contact=contact)
                emit("pulse", pulse_seq=link.pulse_seq, t_ctrl_ns=now, permit_seq=None, permit_boot=None, rogue=True,
                     contact=contact)
                next_pulse = max(next_pulse, now + period_ns)  # a rogue pulse is a pulse: the rate limit holds
            if now >= next_status:
                link.send_status(trigger)
                next_status = now + int(args.status_ms * 1e6)
    finally:
        try:
            link.send_status(False)  # the final count (§4.3): a lost last pulse report still shows up as `missing`
        except Exception:  # noqa: BLE001 - closing must not fail on a last status
            pass
        emit("stop", pulses=link.pulses)
        link.close(drain_ms=500)
        if log:
            log.close()
    print(f"controller-sim {controller_id}: {link.pulses} pulses (link {link.link_state})", file=sys.stderr, flush=True)
    return 0
