"""A device controller written from docs/protocol.md (pulse-permit protocol 1.1) alone, on raw pyzmq.

Nothing here imports or was read from the `guidance` package: it is a conformance check of the document.

Doc gaps, ambiguities and contradictions met while writing and running it (section: problem -> what this file assumes).
Checked against the service: tests/device_bridge/test_doc_controller.py.
  G0  header: the doc names a reference (`ControllerGate`, "meant to be ported line by line") for details it leaves out;
      a doc-only implementer cannot see it. G1-G4 are such details. The vectors' gate options (`expect_service`) are
      that class's constructor arguments, not a doc term.
  G1  §5.2 r4: the verdict of the frame that *confirms* a candidate boot is not named, nor what happens if that frame then
      fails rules 5-7 -> the boot is confirmed first (previous boot retired), then the frame runs rules 5-8 like any other
      (the vectors only show the accepted case).
  G2  §5.2 r4: what a second unknown boot, or a same-boot frame with a lower seq / older capture, does to a pending
      candidate is not said -> it replaces the candidate (boot_unconfirmed again).
  G3  §5.2 r4: on confirmation, what last_seq / last_t_capture_ns become is not said -> the candidate's seq and capture time.
  G4  §7.2: no mapping from events to gate states (status.gate), e.g. is `boot_unconfirmed` at first contact (nothing held)
      `revoked` or `no_permit`? -> no_permit until something was accepted; afterwards every rejected verdict -> `revoked`,
      accepted_deny -> `denied`, now >= expiry -> `expired`, now < t_recv -> `clock_backwards`.
  G5  §4.3: `rejected` ("inputs rejected this boot") does not say whether boot_unconfirmed (which §5.2 r4 calls "a rejected
      frame") and bad frames on the DEALER count -> both count.
  G6  §5.1 says "both sides" check every frame, §5.2 r9 revokes on a rejected frame "received on SUB": a bad ping on the
      DEALER -> counted and logged, does not revoke the held permit.
  G7  §1: linger is given for the SUB only; the DEALER must deliver queued reports -> LINGER 1000 ms, final status at exit.
  G8  §1/§10: how `guidance run` picks its report endpoint is not in the doc (only `--help`: "next port unless --report"),
      and §10 shows the service only as Python; `guidance run` also needs `--plan` -> --report defaults to port + 1.
  G9  §2.1: the key *file format* is not given ("ZeroMQ certificate files"), nor that NAME.key_secret holds both halves
      of the pair the client needs -> parsed zcert text (`public-key = "Z85"`, `secret-key = ...`) after looking at a
      generated file. "Loading refuses" (0600, derivation) reads as both programs -> this controller refuses too.
  G10 §3.1: "a message without minor ... must not carry 1.1's required fields" - receiver action unstated (malformed, or an
      ignored unknown key?) -> ignored (§3: unknown extra keys are ignored).
  G11 §4.2: permit_boot null with permit_seq non-null (or the reverse) is not ruled out -> each field judged alone.
  G12 §2.3: what a controller should do after `key refused` (stop? keep retrying?) -> log it (state "key refused"), stay in
      deny, keep running. Observed: libzmq does not retry; the service records one key_refused (count 2: both sockets).
  G13 §4.4/§5.2 r7: pings of a service boot other than the permits' one -> always answered; the r7 bound is kept per boot.
  G14 §6.2 calls a lifted pulse under a valid permit "allowed" (coverage + contact:false) while the top rule and §9 fire
      only in contact -> conforming mode never fires lifted; `--misbehave lifted` is a test-only fault injection.
  G15 §4.1 "ttl_ms default 50": `guidance run --plan full_face` publishes 60 (the plan's value; the doc does not say the
      plan sets it) and its final `service_stopping` deny carries 50. Only max_ttl_ms (100) caps it here.
  G16 §7.3 "the first [reject] at once, then at most one per code and sender per second": observed, the first `rejected`
      record already carried count 2 (two frames in one receive batch), and all codes share one t_ns -> a reader must
      sum `count`, never count records.
  G17 §4.3 end of session: the doc does not say whether the service stops granting before end_session(); a pulse fired
      under a still-valid permit after it would be neither recorded nor `missing`. Observed: disarm (`quit`) and denies
      come ~0.5 s before session_end, so no pulse was lost.
  G18 §1: DEALER high-water mark / what to do when the report queue is full (service away for minutes: ~1000 statuses
      queue up) is not said -> libzmq default HWM; a send that would block is dropped and logged (a dropped pulse report
      then surfaces as `missing` through the status count). Statuses queued before the service binds are delivered in a
      burst on connect; the service accepted them (no rejects, one `connected`).
  G19 §9: the loop polls with "timeout = min(time to next pulse, 5 ms)": taken literally, while the trigger is held and
      the gate refuses, the next pulse is always overdue, the timeout is 0 and the controller busy-spins (a first version
      of this file did: 3 controllers starved the service into `camera_stalled`) -> an overdue pulse waits up to 5 ms
      for a permit (a frame on SUB wakes the poll at once).
  G20 recording.md: events.jsonl is not in t_ns order; `link connected` and `key_refused` carry times before
      `session_start` (written after it).
  G21 recording.md (PulseEvent.deposit) names the counters `lifted_pulses` / `contact_unknown_pulses`; the session_end
      summary the service writes has `pulses_lifted` / `pulses_contact_unknown` (and bridge.pulses.lifted, as §6.2 says).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import secrets
import signal
import stat
import sys
import time
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

MAX_MSG = 4096
MAX_PULSE_RATE_HZ = 200
MIN_PULSE_GAP_NS = 5_000_000
STATUS_EVERY_NS = 100_000_000
INT_MAX = 2**63
ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
HEX16_RE = re.compile(r"[0-9a-f]{16}\Z")

# Every message type: (field, kind, nullable, first minor). Kinds: int, seq, num, bool, id, hex16.  (§4, wire order)
FIELDS: dict[str, list[tuple[str, str, bool, int]]] = {
    "permit": [("service", "id", False, 0), ("boot", "hex16", False, 0), ("seq", "seq", False, 0),
               ("t_capture_ns", "int", False, 0), ("t_publish_ns", "int", False, 0), ("ttl_ms", "int", False, 0),
               ("permit", "bool", False, 0), ("reason", "id", False, 0), ("zone", "id", True, 0),
               ("tip_u", "num", True, 0), ("tip_v", "num", True, 0), ("boundary_mm", "num", True, 0),
               ("required_mm", "num", True, 0), ("speed_mm_s", "num", True, 0)],
    "pulse": [("controller", "id", False, 0), ("boot", "hex16", False, 0), ("pulse_seq", "seq", False, 0),
              ("t_ctrl_ns", "int", False, 0), ("duration_us", "int", False, 0), ("intensity_pct", "num", False, 0),
              ("energy_mj", "num", True, 0), ("permit_boot", "hex16", True, 0), ("permit_seq", "seq", True, 0),
              ("contact", "bool", False, 1)],
    "status": [("controller", "id", False, 0), ("boot", "hex16", False, 0), ("status_seq", "seq", False, 0),
               ("t_ctrl_ns", "int", False, 0), ("may_fire", "bool", False, 0), ("gate", "id", False, 0),
               ("trigger", "bool", False, 0), ("permit_seq", "seq", True, 0), ("pulses", "int", False, 0),
               ("rejected", "int", False, 0)],
    "ping": [("service", "id", False, 0), ("boot", "hex16", False, 0), ("ping_seq", "seq", False, 0), ("t1_ns", "int", False, 0)],
    "pong": [("controller", "id", False, 0), ("boot", "hex16", False, 0), ("ping_seq", "seq", False, 0),
             ("t1_ns", "int", False, 0), ("t2_ns", "int", False, 0), ("t3_ns", "int", False, 0)],
}
OUR_MINOR = 1


class ProtocolError(Exception):
    def __init__(self, code: str, why: str = ""):
        super().__init__(f"{code}: {why}")
        self.code = code


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ValueError("duplicate key")
    return d


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _field_ok(kind: str, x: Any) -> bool:
    if kind == "bool":
        return type(x) is bool
    if kind in ("int", "seq"):
        return type(x) is int and (1 if kind == "seq" else 0) <= x < INT_MAX
    if kind == "num":
        return type(x) in (int, float) and math.isfinite(x) and abs(x) < 1e12
    if kind == "id":
        return type(x) is str and ID_RE.match(x) is not None
    if kind == "hex16":
        return type(x) is str and HEX16_RE.match(x) is not None
    raise AssertionError(kind)


def decode(frame: bytes, expect: set[str] | frozenset[str]) -> dict[str, Any]:
    """Checks of §5.1 steps 2-7 in order; returns the fields plus `minor` (as read); raises ProtocolError(code)."""
    if len(frame) > MAX_MSG:
        raise ProtocolError("oversize", f"{len(frame)} bytes")
    try:
        if any(b > 0x7F for b in frame):
            raise ValueError("non-ASCII byte")
        m = json.loads(frame.decode("ascii"), object_pairs_hook=_pairs, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise ProtocolError("malformed", str(e)) from None
    if not isinstance(m, dict):
        raise ProtocolError("malformed", "not an object")
    v = m.get("v")
    if type(v) is not int:
        raise ProtocolError("malformed", "v")
    if v != 1:
        raise ProtocolError("wrong_version", f"v={v}")
    t = m.get("type")
    if type(t) is not str or t not in FIELDS:
        raise ProtocolError("malformed", "type")
    if t not in expect:
        raise ProtocolError("unexpected_type", t)
    minor = m.get("minor", 0)
    if type(minor) is not int or minor < 0:
        raise ProtocolError("malformed", "minor")
    out: dict[str, Any] = {"type": t, "minor": min(minor, OUR_MINOR)}
    for name, kind, nullable, since in FIELDS[t]:
        if since > out["minor"]:
            continue
        if name not in m:
            raise ProtocolError("malformed", f"{name} missing")
        x = m[name]
        if x is None and nullable:
            out[name] = None
        elif x is None or not _field_ok(kind, x):
            raise ProtocolError("malformed", f"{name}={x!r}")
        else:
            out[name] = float(x) if kind == "num" else x
    return out


def fmt_num(x: float) -> str:
    """§3: printf("%.3f"), strip trailing zeros but keep one digit, -0.0 -> 0.0."""
    if not math.isfinite(x) or abs(x) >= 1e12:
        raise ValueError(f"not sendable: {x}")
    s = ("%.3f" % x).rstrip("0")
    s = s + "0" if s.endswith(".") else s
    return "0.0" if s == "-0.0" else s


def encode(mtype: str, fields: dict[str, Any], minor: int = OUR_MINOR) -> bytes:
    parts = ['"v":1', f'"type":"{mtype}"'] + ([f'"minor":{minor}'] if minor else [])
    for name, kind, nullable, since in FIELDS[mtype]:
        if since > minor:
            continue
        x = fields[name]
        if x is None:
            assert nullable, name
            parts.append(f'"{name}":null')
        elif kind == "bool":
            parts.append(f'"{name}":{"true" if x else "false"}')
        elif kind == "num":
            parts.append(f'"{name}":{fmt_num(x)}')
        elif kind in ("int", "seq"):
            parts.append(f'"{name}":{int(x)}')
        else:
            parts.append(f'"{name}":{json.dumps(x)}')
    return ("{" + ",".join(parts) + "}").encode("ascii")


@dataclass
class Held:
    boot: str
    seq: int
    t_recv: int
    t_expiry: int


class Gate:
    """§5.2: the fail-closed permit gate. No clock, no sockets: times are passed in."""

    def __init__(self, max_ttl_ms: int = 100, expect_service: str | None = None, accept_unauthenticated: bool = False):
        self.max_ttl_ns = max_ttl_ms * 1_000_000
        self.expect_service = expect_service
        self.accept_unauthenticated = accept_unauthenticated
        self.boot: str | None = None
        self.last_seq = 0
        self.last_cap = -1
        self.retired: collections.deque[str] = collections.deque(maxlen=16)
        self.candidate: tuple[str, int, int] | None = None
        self.held: Held | None = None
        self.state = "no_permit"
        self.rejected = 0
        self.pings: dict[str, collections.deque[int]] = {}
        self.last: dict[str, Any] | None = None  # the last decoded permit (for logging)

    def note_ping(self, service_boot: str, t1_ns: int, t2_ns: int) -> None:
        if service_boot not in self.pings and len(self.pings) >= 4:
            self.pings.pop(next(iter(self.pings)))
        self.pings.setdefault(service_boot, collections.deque(maxlen=8)).append(t2_ns - t1_ns)

    def offer(self, frame: bytes, t_recv: int, authenticated: bool = True) -> str:
        self.last = None
        verdict = self._judge(frame, t_recv, authenticated)
        if verdict == "accepted_deny":
            self.held, self.state = None, "denied"
        elif verdict != "accepted":  # rule 9: every other verdict drops the held permit
            self.rejected += 1
            if self.held is not None or self.state != "no_permit":
                self.state = "revoked"
            self.held = None
        return verdict

    def _judge(self, frame: bytes, t_recv: int, authenticated: bool) -> str:
        if not authenticated and not self.accept_unauthenticated:
            return "unauthenticated"
        try:
            m = decode(frame, {"permit"})
        except ProtocolError as e:
            return e.code
        self.last = m
        cap, pub, seq, boot = m["t_capture_ns"], m["t_publish_ns"], m["seq"], m["boot"]
        if pub < cap or m["ttl_ms"] <= 0:  # r1
            return "malformed"
        if self.expect_service is not None and m["service"] != self.expect_service:  # r2
            return "wrong_service"
        if boot in self.retired:  # r3
            return "old_boot"
        if boot != self.boot:  # r4
            c = self.candidate
            if c is None or c[0] != boot or seq <= c[1] or cap < c[2]:
                self.candidate = (boot, seq, cap)
                return "boot_unconfirmed"
            if self.boot is not None:
                self.retired.append(self.boot)
            self.boot, self.last_seq, self.last_cap, self.candidate = boot, c[1], c[2], None
        if seq == self.last_seq:  # r5
            return "duplicate"
        if seq < self.last_seq:
            return "out_of_order"
        if cap < self.last_cap:
            return "stale"
        ttl = min(m["ttl_ms"] * 1_000_000, self.max_ttl_ns)  # r6
        age = pub - cap
        if age >= ttl:
            return "stale"
        t_expiry = t_recv + ttl - age  # r7
        if self.pings.get(boot):
            t_expiry = min(t_expiry, cap + min(self.pings[boot]) + ttl)
        if t_expiry <= t_recv:
            return "stale"
        self.last_seq, self.last_cap = seq, cap  # r8
        if not m["permit"]:
            return "accepted_deny"
        self.held, self.state = Held(boot, seq, t_recv, t_expiry), "ok"
        return "accepted"

    def may_fire(self, now: int) -> bool:
        h = self.held
        if h is None:
            return False
        if now < h.t_recv:
            self.held, self.state = None, "clock_backwards"
            return False
        if now >= h.t_expiry:
            self.held, self.state = None, "expired"
            return False
        return True

    def fire(self, now: int) -> Held | None:
        return self.held if self.may_fire(now) else None


# ---------------------------------------------------------------- keys (§2.1)

def read_cert(path: str) -> tuple[bytes, bytes | None]:
    text = open(path, encoding="ascii").read()
    pub = re.search(r'public-key\s*=\s*"([^"]{40})"', text)
    sec = re.search(r'secret-key\s*=\s*"([^"]{40})"', text)
    if pub is None:
        raise SystemExit(f"{path}: no public-key")
    return pub.group(1).encode(), sec.group(1).encode() if sec else None


def load_keys(keys_dir: str, ident: str) -> tuple[bytes, bytes, bytes]:
    server_pub, _ = read_cert(os.path.join(keys_dir, "service.key"))
    path = os.path.join(keys_dir, f"{ident}.key_secret")
    if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SystemExit(f"{path}: readable by others (chmod 600)")
    pub, sec = read_cert(path)
    if sec is None:
        raise SystemExit(f"{path}: no secret-key")
    if zmq.curve_public(sec) != pub:
        raise SystemExit(f"{path}: secret-key does not derive public-key")
    return server_pub, pub, sec


# ---------------------------------------------------------------- the device

def schedule(spec: str) -> tuple[int, int] | None:
    if spec in ("held", "always"):
        return None
    on, off = (int(x) for x in spec.split(","))
    return on * 1_000_000, off * 1_000_000


def is_on(sched: tuple[int, int] | None, t: int) -> bool:
    return sched is None or t % (sched[0] + sched[1]) < sched[0]


class Controller:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.boot = secrets.token_hex(8)
        self.gate = Gate(max_ttl_ms=a.max_ttl_ms, expect_service=a.expect_service, accept_unauthenticated=a.insecure)
        self.log_f = open(a.log, "a", buffering=1) if a.log else sys.stdout
        self.pulse_seq = self.status_seq = 0
        self.last_pulse = -(10**18)
        self.next_status = 0
        self.last_refusal: str | None = None
        self.service_minor: int | None = None
        ctx: zmq.Context = zmq.Context.instance()
        self.period_ns = max(int(1e9 / a.rate_hz), MIN_PULSE_GAP_NS)  # §4.5: never closer than 5 ms
        self.sub, self.dlr = ctx.socket(zmq.SUB), ctx.socket(zmq.DEALER)
        for s in (self.sub, self.dlr):
            s.setsockopt(zmq.MAXMSGSIZE, MAX_MSG)
            s.setsockopt(zmq.RECONNECT_IVL, 20)
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
            if not a.insecure:
                s.curve_serverkey, s.curve_publickey, s.curve_secretkey = load_keys(a.keys, a.id)
        self.sub.setsockopt(zmq.CONFLATE, 1)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.dlr.setsockopt(zmq.LINGER, 1000)
        self.mons = {self.sub.get_monitor_socket(): "permit", self.dlr.get_monitor_socket(): "report"}
        self.sub.connect(a.connect)
        self.dlr.connect(a.report)
        self.poller = zmq.Poller()
        for s in [self.sub, self.dlr, *self.mons]:
            self.poller.register(s, zmq.POLLIN)

    def log(self, event: str, **kw: Any) -> None:
        self.log_f.write(json.dumps({"event": event, "t_ns": time.monotonic_ns(), **kw}) + "\n")

    def send(self, mtype: str, **fields: Any) -> None:
        try:
            self.dlr.send(encode(mtype, {"controller": self.a.id, "boot": self.boot, **fields}), zmq.NOBLOCK)
        except zmq.Again:  # DEALER queue full (service away for long): a lost pulse report shows as `missing` (§4.3)
            self.log("report_dropped", type=mtype, seq=fields.get("pulse_seq") or fields.get("status_seq"))

    def on_permit(self, frames: list[bytes]) -> None:
        now = time.monotonic_ns()
        if len(frames) != 1:  # §1: one frame per message
            self.gate.rejected += 1
            self.gate.held, self.gate.state = None, "revoked"
            verdict = "malformed"
        else:
            verdict = self.gate.offer(frames[0], now, authenticated=not self.a.insecure)
        m = self.gate.last or {}
        if m and self.service_minor != m["minor"]:
            self.service_minor = m["minor"]
            self.log("service_version", protocol=f"1.{m['minor']}", boot=m["boot"])
        self.log("permit", verdict=verdict, boot=m.get("boot"), seq=m.get("seq"), permit=m.get("permit"), reason=m.get("reason"),
                 ttl_ms=m.get("ttl_ms"), age_ms=(m["t_publish_ns"] - m["t_capture_ns"]) / 1e6 if m else None)

    def on_report_socket(self, frames: list[bytes]) -> None:
        t2 = time.monotonic_ns()
        try:
            if len(frames) != 1:
                raise ProtocolError("malformed", "multipart")
            p = decode(frames[0], {"ping"})
        except ProtocolError as e:
            self.gate.rejected += 1
            self.log("rejected_report_socket", code=e.code, why=str(e))
            return
        self.gate.note_ping(p["boot"], p["t1_ns"], t2)
        self.send("pong", ping_seq=p["ping_seq"], t1_ns=p["t1_ns"], t2_ns=t2, t3_ns=time.monotonic_ns())

    def send_status(self, now: int, trigger: bool) -> None:
        self.status_seq += 1
        may = self.gate.may_fire(now)
        held = self.gate.held
        self.send("status", status_seq=self.status_seq, t_ctrl_ns=now, may_fire=may, gate=self.gate.state, trigger=trigger,
                  permit_seq=held.seq if held else None, pulses=self.pulse_seq, rejected=self.gate.rejected)

    def step(self, now: int, trigger: bool, contact: bool) -> None:
        if not trigger or now - self.last_pulse < self.period_ns:
            return
        if not contact and self.a.misbehave != "lifted":
            self.refuse("no_contact")
            return
        now = time.monotonic_ns()  # check immediately before triggering
        p = self.gate.fire(now)
        if p is None:
            self.refuse(self.gate.state)
            return
        # -- the pulse would be triggered here --
        self.pulse_seq += 1
        self.last_pulse = now
        self.last_refusal = None
        self.send("pulse", pulse_seq=self.pulse_seq, t_ctrl_ns=now, duration_us=self.a.pulse_us, intensity_pct=self.a.intensity_pct,
                  energy_mj=None, permit_boot=p.boot, permit_seq=p.seq, contact=contact)
        self.log("pulse", boot=self.boot, pulse_seq=self.pulse_seq, t_ctrl_ns=now, permit_boot=p.boot, permit_seq=p.seq, contact=contact)

    def refuse(self, reason: str) -> None:
        if reason != self.last_refusal:
            self.last_refusal = reason
            self.log("refused", reason=reason)

    def run(self) -> None:
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        t_start = time.monotonic_ns()
        t_end = t_start + int(self.a.duration_s * 1e9) if self.a.duration_s else None
        trig, cont = schedule(self.a.trigger), schedule(self.a.contact)
        self.log("start", controller=self.a.id, boot=self.boot, connect=self.a.connect, report=self.a.report)
        while not stop and (t_end is None or time.monotonic_ns() < t_end):
            now = time.monotonic_ns()
            to_pulse = self.last_pulse + self.period_ns - now  # <= 0: due (but maybe refused): a new permit wakes the poll
            wait_ns = min(self.next_status - now, to_pulse if to_pulse > 0 else 5_000_000, 5_000_000)  # §9, see G20
            for sock, _ in self.poller.poll(-(-max(wait_ns, 0) // 1_000_000)):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if sock is self.sub:
                        self.on_permit(frames)
                    elif sock is self.dlr:
                        self.on_report_socket(frames)
                    else:
                        ev = parse_monitor_message(frames)
                        what = _event_name(ev["event"])
                        if what.startswith("HANDSHAKE") or what in ("CONNECTED", "DISCONNECTED"):  # §2.3; not the retry chatter
                            state = {"HANDSHAKE_FAILED_AUTH": "key refused", "HANDSHAKE_FAILED_NO_DETAIL": "handshake failed",
                                     "HANDSHAKE_FAILED_PROTOCOL": "handshake failed"}.get(what, what.lower())
                            self.log("link", socket=self.mons[sock], what=what, state=state, value=ev["value"],
                                     endpoint=ev["endpoint"].decode(errors="replace"))
            now = time.monotonic_ns()
            trigger, contact = is_on(trig, now - t_start), is_on(cont, now - t_start)
            self.step(now, trigger, contact)
            if now >= self.next_status:
                self.send_status(now, trigger)
                self.next_status = now + STATUS_EVERY_NS
        self.send_status(time.monotonic_ns(), False)  # the final count of pulses (§4.3)
        self.log("stop", pulses=self.pulse_seq, rejected=self.gate.rejected, statuses=self.status_seq)
        for m in self.mons:
            m.close(0)
        self.sub.close()
        self.dlr.close()  # linger: queued reports still go out


def _event_name(num: int) -> str:
    try:
        return str(zmq.Event(num).name)
    except ValueError:
        return str(num)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connect", required=True, help="service permit endpoint (PUB)")
    ap.add_argument("--report", help="service report endpoint (ROUTER); default permit port + 1")
    ap.add_argument("--keys", help="key dir: service.key and ID.key_secret")
    ap.add_argument("--id", default="controller", help="controller id = the name the key is allow-listed under")
    ap.add_argument("--insecure", action="store_true", help="no CURVE; accept unauthenticated permits")
    ap.add_argument("--rate-hz", type=float, default=20.0)
    ap.add_argument("--trigger", default="held", help="held | ON_MS,OFF_MS")
    ap.add_argument("--contact", default="always", help="always | ON_MS,OFF_MS (simulated skin contact)")
    ap.add_argument("--pulse-us", type=int, default=2000)
    ap.add_argument("--intensity-pct", type=float, default=60.0)
    ap.add_argument("--max-ttl-ms", type=int, default=100)
    ap.add_argument("--expect-service", help="pin the service id")
    ap.add_argument("--duration-s", type=float, default=0.0, help="0: until SIGTERM/SIGINT")
    ap.add_argument("--log", help="JSON-lines log (default stdout)")
    ap.add_argument("--misbehave", choices=["lifted"], help="fault injection: fire off the skin too (reports contact:false)")
    a = ap.parse_args(argv)
    if not 0 < a.rate_hz <= MAX_PULSE_RATE_HZ:
        ap.error(f"--rate-hz must be in (0, {MAX_PULSE_RATE_HZ}] (§4.5)")
    if not a.insecure and not a.keys:
        ap.error("--keys DIR is required unless --insecure (§2)")
    if not ID_RE.match(a.id):
        ap.error("--id must be 1-64 of [A-Za-z0-9._-]")
    if a.report is None:
        host, port = a.connect.rsplit(":", 1)
        a.report = f"{host}:{int(port) + 1}"
    Controller(a).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
