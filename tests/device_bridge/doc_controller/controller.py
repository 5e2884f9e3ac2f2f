"""A device controller written from docs/protocol.md (pulse-permit protocol 1.1) alone, on raw pyzmq.

Nothing here imports or was read from the `guidance` package: it is a conformance check of the document.

Doc gaps, ambiguities and contradictions met while writing and running it (section: problem -> what this file assumed),
and how each was closed. All are CLOSED: the doc now says each of them (the section named), the vectors pin the gate
behaviour (docs/protocol_vectors.json), and this file follows the doc, still without reading or importing our code.
Checked against the doc's vectors and the real service: tests/device_bridge/test_doc_controller.py.
  G0  header: the doc named a reference (`ControllerGate`, "meant to be ported line by line") for details it left out;
      the vectors' gate options were that class's arguments.
      CLOSED - header (the doc is complete; our code is an implementation of it, never the reference), §5.2 (the gate
      in full, with pseudo-code; parameters `max_ttl_ms`, `expect_service`, `accept_unauthenticated` are doc terms), §8
      (every vector field described).
  G1  §5.2 r4: verdict of the confirming frame / what if it then fails rules 5-7. -> assumed: confirm, then rules 5-8.
      CLOSED - §5.2 rule 4a: exactly that; the boot stays confirmed whatever the verdict (accepted, accepted_deny, stale).
      Vectors confirm_by_deny, confirm_by_stale_frame.
  G2  §5.2 r4: a second unknown boot, or a same-boot frame with a lower seq / older capture, vs a pending candidate.
      CLOSED - §5.2 rule 4b: it replaces the candidate (boot_unconfirmed); frames of the current boot are judged as usual
      meanwhile. Vectors candidate_replaced, current_boot_while_candidate_pending.
  G3  §5.2 r4: last_seq / last_t_capture_ns on confirmation.
      CLOSED - §5.2 rule 4a: the candidate's; rule 8: only an accepted frame moves them. Vector confirm_by_stale_frame.
  G4  §7.2: no mapping from events to gate states. -> assumed: any reject after an accept -> revoked.
      CLOSED - §7.2 table (+ §5.2 step 0 and rule 9): revoked only when a held permit is dropped by a rejected frame; a
      reject with nothing held leaves the state (expired/denied/no_permit stay); the held permit is judged at a frame's
      arrival first. This file changed to follow it. Vector gate_states; every state is in a vector.
  G5  §4.3: what `rejected` counts. -> assumed: boot_unconfirmed and bad DEALER frames count.
      CLOSED - §4.3 (`rejected` paragraph), §7.2: both count; every SUB verdict but accepted/accepted_deny.
  G6  §5.1 vs §5.2 r9: a bad ping on the DEALER.
      CLOSED - §5.1 ("A bad message on the controller's DEALER"): counted, logged, no revocation.
  G7  §1: linger given for the SUB only.
      CLOSED - §1 socket table, §4.3 "Stopping": DEALER linger 0 while running, >= 500 ms at close, after a final
      status (trigger false) with the final pulse count.
  G8  §1/§10: how `guidance run` picks its report endpoint. -> assumed port + 1.
      CLOSED - §10.1: --report, else the --publish text with port + 1; no --publish: no bridge; a non-:PORT endpoint needs
      --report. §1: 5571/5572 are only the Python API's defaults.
  G9  §2.1: key file format not given; NAME.key_secret holding both halves not said; who checks at load.
      CLOSED - §2.1: the certificate format and how to read it, which two files a controller needs, the load checks
      (mode & 066, derivation) for the service (must) and a controller (should). Vectors key_files.
  G10 §3.1: a message without minor carrying 1.1 fields. -> assumed ignored.
      CLOSED - §3.1: read as 1.0, the field is an ignored unknown key (not malformed). Vector pulse_1_0_extra_contact.
  G11 §4.2: permit_boot null with permit_seq non-null (or the reverse). -> assumed each judged alone.
      CLOSED - §4.2, §6.1: senders set both or neither; receivers judge each alone; attributed no_permit / unknown_permit.
      Vector pulse_half_null.
  G12 §2.3: what a controller does after `key refused`. -> assumed log, stay in deny, keep running.
      CLOSED - §2.3 "What a controller does then": that, logged once in one line saying what to check; libzmq does not
      retry, so the allow-list fix needs a service and a controller restart. The service's key_refused records follow
      §7.3 (first count 1; both sockets are refused, 2 in all).
  G13 §4.4/§5.2 r7: pings of a service boot other than the permits'.
      CLOSED - §4.4: answer every valid ping; one window of 8 per service boot, for the 4 most recently pinging boots; a
      permit is bounded by its own boot's window only. Our code used one window reset by any other boot's ping (changed
      to follow the doc). Vector ping_bound.
  G14 §6.2 "allowed" lifted pulse vs fire only in contact.
      CLOSED - §6.2, §4.2, §5.3: a controller must fire only in contact (contact is always true from a conforming one);
      §6.2 is how the service records a faulty controller's lifted pulse. --misbehave lifted stays fault injection.
  G15 §4.1 "ttl_ms default 50" vs the plan's 60; the final service_stopping deny carried 50.
      CLOSED - §4.1 (`ttl_ms` paragraph): the plan's ttl_ms for every permit of the session; 50 only without a plan.
      The final deny now carries the session's TTL (service fix, tested).
  G16 §7.3 "the first at once": observed first record with count 2, shared t_ns.
      CLOSED - service fixed to match the doc: the first reject of a code and sender is a record of its own with count 1;
      §7.3 now also says when later records come, that t_ns is when a record was made (shared within a receive turn),
      and to sum `count`. Tested (unit, service, and here in the live run).
  G17 §4.3 end of session: does the service stop granting before end_session()?
      CLOSED - §4.3 "End of a session": end_session() publishes the final deny first, publishes only denies after,
      keeps receiving until the last grant's window (or 10 ms after the deny) plus the 300 ms grace, then closes the
      books. Service fixed to do so (it used to stop reading at once), tested.
  G18 §1: DEALER high-water mark / full report queue. -> assumed default HWM, drop and log.
      CLOSED - §4.3 "The report queue": SNDHWM >= 10000, an own FIFO for what libzmq will not take, never drop a pulse
      report (statuses may go), do not fire while anything waits (and should not while the DEALER is unconnected).
      This file changed to follow it.
  G19 §9: the loop's timeout taken literally busy-spins with the trigger held.
      CLOSED - §9 (loop and "The wait"): a due but refused pulse waits up to 5 ms for a permit; waits round up to
      whole ms. guidance controller-sim fixed the same way (it spun too).
  G20 recording.md: events.jsonl not in t_ns order; link/key_refused before session_start.
      CLOSED - docs/recording.md "Events", "Order": file order is write order; why; sort by t_ns for a timeline.
  G21 recording.md `lifted_pulses` / `contact_unknown_pulses` vs the summary's `pulses_lifted` / `pulses_contact_unknown`.
      CLOSED - docs/recording.md "Pulse counts: which name counts what": three counters in three places, what each counts
      (the raster's count only permitted pulses; the summary's include violations).
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
INPUT_POLL_NS = 5_000_000  # §9: the longest wait; trigger and contact are sampled at least this often
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


def decode(frame: bytes | list[bytes], expect: set[str] | frozenset[str]) -> dict[str, Any]:
    """Checks of §5.1 steps 2-8 in order; returns the fields plus `minor` (as read); raises ProtocolError(code)."""
    if isinstance(frame, list):  # step 2: one message is one frame (§1)
        if len(frame) != 1:
            raise ProtocolError("malformed", f"{len(frame)} frames")
        frame = frame[0]
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
    """§5.2: the fail-closed permit gate. No clock, no sockets: times are passed in. State names: §7.2."""

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
        self.pings: dict[str, collections.deque[int]] = {}  # §4.4: per service boot, the 4 most recently pinging
        self.last: dict[str, Any] | None = None  # the last decoded permit (for logging)

    def note_ping(self, service_boot: str, t1_ns: int, t2_ns: int) -> None:
        window = self.pings.pop(service_boot, None) or collections.deque(maxlen=8)
        while len(self.pings) >= 4:
            self.pings.pop(next(iter(self.pings)))  # the boot whose last ping is oldest
        window.append(t2_ns - t1_ns)
        self.pings[service_boot] = window

    def offer(self, frame: bytes | list[bytes], t_recv: int, authenticated: bool = True) -> str:
        self.last = None
        self._check_held(t_recv)  # §5.2 step 0
        verdict = self._judge(frame, t_recv, authenticated)
        if verdict == "accepted_deny":
            self.held, self.state = None, "denied"
        elif verdict != "accepted":  # rule 9: every other verdict drops the held permit
            self.rejected += 1
            if self.held is not None:
                self.state = "revoked"
            self.held = None
        return verdict

    def _judge(self, frame: bytes | list[bytes], t_recv: int, authenticated: bool) -> str:
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
            if c is None or c[0] != boot or seq <= c[1] or cap < c[2]:  # r4b
                self.candidate = (boot, seq, cap)
                return "boot_unconfirmed"
            if self.boot is not None:  # r4a: confirmed; the frame goes on to r5
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

    def _check_held(self, now: int) -> None:
        h = self.held
        if h is not None and now < h.t_recv:
            self.held, self.state = None, "clock_backwards"
        elif h is not None and now >= h.t_expiry:
            self.held, self.state = None, "expired"

    def may_fire(self, now: int) -> bool:
        self._check_held(now)
        return self.held is not None

    def state_at(self, now: int) -> str:
        """The gate state (§7.2) after may_fire(now), as a status reports it (§4.3)."""
        self.may_fire(now)
        return self.state

    def fire(self, now: int) -> Held | None:
        return self.held if self.may_fire(now) else None


# ---------------------------------------------------------------- keys (§2.1)

def parse_cert(text: str) -> tuple[bytes | None, bytes | None]:
    """§2.1: per line, stripped; `public-key` / `secret-key` = the value after the first '=', spaces and quotes stripped."""
    keys: dict[str, bytes] = {}
    for line in text.splitlines():
        line = line.strip()
        for name in ("public-key", "secret-key"):
            if line.startswith(name) and "=" in line:
                keys[name] = line.split("=", 1)[1].strip(' \t"').encode("ascii")
    return keys.get("public-key"), keys.get("secret-key")


def read_cert(path: str) -> tuple[bytes, bytes | None]:
    pub, sec = parse_cert(open(path, encoding="ascii").read())
    if pub is None or len(pub) != 40:
        raise SystemExit(f"{path}: public-key is missing or not 40 Z85 characters")
    if sec is not None and len(sec) != 40:
        raise SystemExit(f"{path}: secret-key is not 40 Z85 characters")
    return pub, sec


def check_pair(path: str, pub: bytes, sec: bytes) -> None:
    """§2.1: the secret must derive the public key written next to it."""
    try:
        derived = zmq.curve_public(sec)
    except zmq.ZMQError:
        derived = b""
    if derived != pub:
        raise SystemExit(f"{path}: secret-key does not derive public-key (edited or mixed-up pair)")


def load_keys(keys_dir: str, ident: str) -> tuple[bytes, bytes, bytes]:
    server_pub, _ = read_cert(os.path.join(keys_dir, "service.key"))
    path = os.path.join(keys_dir, f"{ident}.key_secret")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o044:
        raise SystemExit(f"{path}: readable by others (chmod 600)")
    if mode & 0o022:
        raise SystemExit(f"{path}: writable by others (chmod 600)")
    pub, sec = read_cert(path)
    if sec is None:
        raise SystemExit(f"{path}: no secret-key (is this the .key_secret file?)")
    check_pair(path, pub, sec)
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
        self.fifo: collections.deque[tuple[str, bytes]] = collections.deque()  # §4.3: what libzmq would not take yet
        self.report_up = False  # §4.3 (should): the DEALER has a connection
        self.link_said: dict[str, str] = {}  # socket -> the refusal already said on stderr (§2.3: once)
        ctx: zmq.Context = zmq.Context.instance()
        self.period_ns = max(int(1e9 / a.rate_hz), MIN_PULSE_GAP_NS)  # §4.5: never closer than 5 ms
        self.sub, self.dlr = ctx.socket(zmq.SUB), ctx.socket(zmq.DEALER)
        for s in (self.sub, self.dlr):  # §1 socket options
            s.setsockopt(zmq.MAXMSGSIZE, MAX_MSG)
            s.setsockopt(zmq.RECONNECT_IVL, 20)
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
            s.setsockopt(zmq.LINGER, 0)
            if not a.insecure:
                s.curve_serverkey, s.curve_publickey, s.curve_secretkey = load_keys(a.keys, a.id)
        self.sub.setsockopt(zmq.CONFLATE, 1)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.dlr.setsockopt(zmq.SNDHWM, 100_000)
        self.mons = {self.sub.get_monitor_socket(): "permit", self.dlr.get_monitor_socket(): "report"}
        self.sub.connect(a.connect)
        self.dlr.connect(a.report)
        self.poller = zmq.Poller()
        for s in [self.sub, self.dlr, *self.mons]:
            self.poller.register(s, zmq.POLLIN)

    def log(self, event: str, **kw: Any) -> None:
        self.log_f.write(json.dumps({"event": event, "t_ns": time.monotonic_ns(), **kw}) + "\n")

    def send(self, mtype: str, **fields: Any) -> None:
        """§4.3: DONTWAIT; what libzmq will not take waits in our FIFO, in order (statuses may go, pulses never)."""
        self.fifo.append((mtype, encode(mtype, {"controller": self.a.id, "boot": self.boot, **fields})))
        self.flush()

    def flush(self) -> None:
        while self.fifo:
            try:
                self.dlr.send(self.fifo[0][1], zmq.NOBLOCK)
            except zmq.Again:
                if len(self.fifo) > 10_000:  # bounded: drop waiting statuses (each repeats the whole count)
                    kept = [m for m in self.fifo if m[0] != "status"]
                    self.log("report_backlog", waiting=len(self.fifo), statuses_dropped=len(self.fifo) - len(kept))
                    self.fifo = collections.deque(kept)
                return
            self.fifo.popleft()

    def on_permit(self, frames: list[bytes]) -> None:
        now = time.monotonic_ns()
        verdict = self.gate.offer(frames, now, authenticated=not self.a.insecure)
        m = self.gate.last or {}
        if m and self.service_minor != m["minor"]:
            self.service_minor = m["minor"]
            self.log("service_version", protocol=f"1.{m['minor']}", boot=m["boot"])
        self.log("permit", verdict=verdict, boot=m.get("boot"), seq=m.get("seq"), permit=m.get("permit"), reason=m.get("reason"),
                 ttl_ms=m.get("ttl_ms"), age_ms=(m["t_publish_ns"] - m["t_capture_ns"]) / 1e6 if m else None)

    def on_report_socket(self, frames: list[bytes]) -> None:
        t2 = time.monotonic_ns()
        try:
            p = decode(frames, {"ping"})
        except ProtocolError as e:  # §5.1: counted, logged, no revocation
            self.gate.rejected += 1
            self.log("rejected_report_socket", code=e.code, why=str(e))
            return
        self.gate.note_ping(p["boot"], p["t1_ns"], t2)
        self.send("pong", ping_seq=p["ping_seq"], t1_ns=p["t1_ns"], t2_ns=t2, t3_ns=time.monotonic_ns())

    def on_monitor(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        ev = parse_monitor_message(frames)
        what = _event_name(ev["event"])
        if not (what.startswith("HANDSHAKE") or what in ("CONNECTED", "DISCONNECTED")):  # §2.3; not the retry chatter
            return
        name = self.mons[sock]
        state = {"HANDSHAKE_FAILED_AUTH": "key refused", "HANDSHAKE_FAILED_NO_DETAIL": "handshake failed",
                 "HANDSHAKE_FAILED_PROTOCOL": "handshake failed"}.get(what, what.lower())
        endpoint = ev["endpoint"].decode(errors="replace")
        self.log("link", socket=name, what=what, state=state, value=ev["value"], endpoint=endpoint)
        if name == "report" and what in ("HANDSHAKE_SUCCEEDED", "DISCONNECTED"):
            self.report_up = what == "HANDSHAKE_SUCCEEDED"
        if state in ("key refused", "handshake failed") and self.link_said.get(name) != state:
            self.link_said[name] = state
            hint = (f"is this key in the service's authorized_controllers/ as {self.a.id}.key?" if state == "key refused"
                    else "is the configured service.key the service's current public key?")
            print(f"{self.a.id}: {state} at {endpoint} ({name} socket): {hint}", file=sys.stderr, flush=True)

    def send_status(self, now: int, trigger: bool) -> None:
        self.status_seq += 1
        may = self.gate.may_fire(now)  # first: permit_seq is null exactly when may_fire is false (§4.3)
        held = self.gate.held
        self.send("status", status_seq=self.status_seq, t_ctrl_ns=now, may_fire=may, gate=self.gate.state, trigger=trigger,
                  permit_seq=held.seq if held else None, pulses=self.pulse_seq, rejected=self.gate.rejected)

    def step(self, now: int, trigger: bool, contact: bool) -> None:
        if not trigger or now - self.last_pulse < self.period_ns:
            return
        if not contact and self.a.misbehave != "lifted":
            self.refuse("no_contact")
            return
        if self.fifo:  # §4.3: a pulse that cannot be reported is not followed by another
            self.refuse("report_backlog")
            return
        if not self.report_up:  # §4.3 (should): reports would pile up unseen
            self.refuse("report_link_down")
            return
        now = time.monotonic_ns()  # check immediately before triggering (§5.3)
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
            wait_ns = min(self.next_status - now, to_pulse if to_pulse > 0 else INPUT_POLL_NS, INPUT_POLL_NS)  # §9
            for sock, _ in self.poller.poll(-(-max(wait_ns, 0) // 1_000_000)):  # rounded up (§9)
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
                        self.on_monitor(sock, frames)
            self.flush()
            now = time.monotonic_ns()
            trigger, contact = is_on(trig, now - t_start), is_on(cont, now - t_start)
            self.step(now, trigger, contact)
            if now >= self.next_status:
                self.send_status(now, trigger)
                self.next_status = now + STATUS_EVERY_NS
        self.send_status(time.monotonic_ns(), False)  # §4.3 stopping: the final count of pulses
        self.log("stop", pulses=self.pulse_seq, rejected=self.gate.rejected, statuses=self.status_seq, unsent=len(self.fifo))
        for m in self.mons:
            m.close(0)
        self.sub.close(0)
        self.dlr.close(1000)  # §4.3 stopping: linger >= 500 ms, queued reports still go out


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
