"""The reference controller-side gate: fire only on an authentic, newest, unexpired permit.

`ControllerGate` is the whole safety decision of a controller and owns no
sockets and no clock: the caller hands it each received frame with its own
receive time, and asks `may_fire(now_ns)` right before it would pulse. That
keeps it small enough to port to firmware line by line and to test without
timing luck. `ControllerLink` wires it to ZeroMQ (SUB for permits, DEALER for
pulse reports, status and clock echoes) the way docs/protocol.md describes.

Fail closed: the only path to `True` is a permit with `permit=true` that
passed every check and whose window, counted on the controller's own clock
from the moment it arrived, has not run out. Any rejected input also revokes
the permit held so far, because a link that carries garbage is not trusted.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Sequence

import zmq
from zmq.utils.monitor import parse_monitor_message

from guidance.device_bridge import protocol
from guidance.device_bridge.protocol import Permit, ProtocolError
from guidance.errors import UserError


class Verdict(str, Enum):
    """What the gate did with one received frame (stable names, counted)."""

    ACCEPTED = "accepted"  # a permit=true that now may be fired under
    ACCEPTED_DENY = "accepted_deny"  # a valid permit=false: revokes
    BOOT_UNCONFIRMED = "boot_unconfirmed"  # first permit of a new service boot: wait for the next
    UNAUTHENTICATED = "unauthenticated"
    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    WRONG_VERSION = "wrong_version"
    UNEXPECTED_TYPE = "unexpected_type"
    WRONG_SERVICE = "wrong_service"
    OLD_BOOT = "old_boot"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    STALE = "stale"


class GateState(str, Enum):
    """Why `may_fire` says what it says right now."""

    OK = "ok"
    NO_PERMIT = "no_permit"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"
    CLOCK_BACKWARDS = "clock_backwards"


@dataclass
class HeldPermit:
    permit: Permit
    t_recv_ns: int
    t_expiry_ns: int


@dataclass
class ControllerGate:
    """Latest-wins permit state with sequence, boot and expiry checks.

    `max_ttl_ms` caps any window the service asks for; `expect_service`, when
    set, rejects permits naming another service id.
    """

    max_ttl_ms: int = 100
    accept_unauthenticated: bool = False
    expect_service: str | None = None
    retired_boot_memory: int = 16
    boot: str | None = None
    last_seq: int | None = None
    last_t_capture_ns: int | None = None
    held: HeldPermit | None = None
    last_state: GateState = GateState.NO_PERMIT
    counters: collections.Counter = field(default_factory=collections.Counter)
    ping_window: int = 8  # pings per service boot the offset bound is taken over
    ping_boots: int = 4  # service boots a ping window is kept for (the most recently pinging ones)
    _candidate: tuple[str, int, int] | None = None  # (boot, seq, t_capture_ns)
    _pings: dict[str, collections.deque] = field(default_factory=dict)  # service boot -> recent (t2 - t1)
    _retired: collections.deque = field(default_factory=collections.deque)

    # -- input -------------------------------------------------------------
    def note_ping(self, service_boot: str, t1_service_ns: int, t2_ctrl_ns: int) -> None:
        """Learn an upper bound of (controller clock − service clock) from a service ping.

        t2 − t1 = offset + one-way delay ≥ offset, so the minimum over recent pings
        bounds the offset from above; with it, a permit's age is never
        overestimated as younger than it is by more than the fastest delivery,
        and a permit delayed in transit gets no fresh window. A short window lets
        a stepped controller clock recover.
        """
        window = self._pings.pop(service_boot, None)  # re-inserted last: the dict is ordered by the latest ping
        if window is None:
            window = collections.deque(maxlen=self.ping_window)
            while len(self._pings) >= self.ping_boots:
                self._pings.pop(next(iter(self._pings)))  # forget the boot that pinged longest ago
        window.append(t2_ctrl_ns - t1_service_ns)
        self._pings[service_boot] = window

    def offset_bound_ns(self, service_boot: str) -> int | None:
        """min(t2 − t1) over the last `ping_window` pings of this service boot; None if it never pinged."""
        window = self._pings.get(service_boot)
        return min(window) if window else None

    def offer(self, data: bytes | Sequence[bytes], t_recv_ns: int, authenticated: bool) -> Verdict:
        """Judge one received message; anything but a valid permit=true leaves may_fire False.

        `data` is the message's one frame, or the list of its frames as read
        (more than one: `malformed`). docs/protocol.md §5.2 and §7.2: the held
        permit is first judged at `t_recv_ns` (expired, clock ran backwards),
        then the frame; the gate state changes only as §7.2 lists.
        """
        self.state(t_recv_ns)
        verdict = self._judge(data, t_recv_ns, authenticated)
        self.counters[verdict.value] += 1
        if verdict not in (Verdict.ACCEPTED,):
            if self.held is not None:
                self.last_state = GateState.DENIED if verdict == Verdict.ACCEPTED_DENY else GateState.REVOKED
            elif verdict == Verdict.ACCEPTED_DENY:
                self.last_state = GateState.DENIED
            self.held = None
        return verdict

    def _judge(self, data: bytes | Sequence[bytes], t_recv_ns: int, authenticated: bool) -> Verdict:
        if not authenticated and not self.accept_unauthenticated:
            return Verdict.UNAUTHENTICATED
        if isinstance(data, (bytes, bytearray, memoryview)):
            frame = bytes(data)
        else:
            parts = list(data)
            if len(parts) != 1:  # one message is one frame (docs/protocol.md §1)
                return Verdict.MALFORMED
            frame = bytes(parts[0])
        try:
            msg = protocol.decode(frame, expect=("permit",))
        except ProtocolError as exc:
            return Verdict(exc.code)
        assert isinstance(msg, Permit)
        if msg.t_publish_ns < msg.t_capture_ns or msg.ttl_ms <= 0:
            return Verdict.MALFORMED
        if self.expect_service is not None and msg.service != self.expect_service:
            return Verdict.WRONG_SERVICE
        if msg.boot in self._retired:
            return Verdict.OLD_BOOT
        if msg.boot != self.boot:
            # A new service boot (service restarted, or our own first contact).
            # Its first permit never grants: only the next, newer one confirms it.
            cand = self._candidate
            if cand is None or cand[0] != msg.boot or not (msg.seq > cand[1] and msg.t_capture_ns >= cand[2]):
                self._candidate = (msg.boot, msg.seq, msg.t_capture_ns)
                return Verdict.BOOT_UNCONFIRMED
            if self.boot is not None:
                self._retired.append(self.boot)
                while len(self._retired) > self.retired_boot_memory:
                    self._retired.popleft()
            self.boot, self.last_seq, self.last_t_capture_ns = msg.boot, cand[1], cand[2]
            self._candidate = None
        assert self.last_seq is not None and self.last_t_capture_ns is not None
        if msg.seq == self.last_seq:
            return Verdict.DUPLICATE
        if msg.seq < self.last_seq:
            return Verdict.OUT_OF_ORDER
        if msg.t_capture_ns < self.last_t_capture_ns:
            return Verdict.STALE
        age_ns = msg.t_publish_ns - msg.t_capture_ns
        ttl_ns = min(msg.ttl_ms, self.max_ttl_ms) * 1_000_000
        if age_ns >= ttl_ns:
            return Verdict.STALE
        t_expiry = t_recv_ns + ttl_ns - age_ns
        bound = self.offset_bound_ns(msg.boot)
        if bound is not None:
            t_expiry = min(t_expiry, msg.t_capture_ns + bound + ttl_ns)
        if t_expiry <= t_recv_ns:  # rule 7, for a deny too: only an accepted frame advances the sequence
            return Verdict.STALE
        self.last_seq, self.last_t_capture_ns = msg.seq, msg.t_capture_ns
        if not msg.permit:
            return Verdict.ACCEPTED_DENY
        self.held = HeldPermit(msg, t_recv_ns, t_expiry)
        self.last_state = GateState.OK
        return Verdict.ACCEPTED

    # -- decision ------------------------------------------------------------
    def state(self, now_ns: int) -> GateState:
        held = self.held
        if held is None:
            return self.last_state if self.last_state != GateState.OK else GateState.NO_PERMIT
        if now_ns < held.t_recv_ns:
            self.held, self.last_state = None, GateState.CLOCK_BACKWARDS
            return self.last_state
        if now_ns >= held.t_expiry_ns:
            self.held, self.last_state = None, GateState.EXPIRED
            return self.last_state
        return GateState.OK

    def may_fire(self, now_ns: int) -> bool:
        """True only while an accepted permit=true is held and unexpired at `now_ns`."""
        return self.state(now_ns) == GateState.OK

    def fire(self, now_ns: int) -> Permit | None:
        """Check and claim in one step: the permit to report the pulse under, or None (do not fire)."""
        return self.held.permit if self.may_fire(now_ns) and self.held is not None else None


def _load_curve_client(sock: zmq.Socket, server_public: bytes, client_public: bytes, client_secret: bytes) -> None:
    sock.curve_serverkey = server_public
    sock.curve_publickey = client_public
    sock.curve_secretkey = client_secret


@dataclass
class LinkKeys:
    """What a controller needs for CURVE: the service's public key and its own pair."""

    server_public: bytes
    client_public: bytes
    client_secret: bytes


# Link states a controller can see from its own sockets (libzmq socket monitor), worst first.
LINK_KEY_REFUSED = "key refused"  # the service's ZAP handler refused this controller's key (not on its allow-list)
LINK_HANDSHAKE_FAILED = "handshake failed"  # CURVE handshake broke off: most often the wrong service public key
LINK_DISCONNECTED = "disconnected"
LINK_CONNECTING = "connecting"
LINK_CONNECTED = "connected"
_LINK_ORDER = (LINK_KEY_REFUSED, LINK_HANDSHAKE_FAILED, LINK_DISCONNECTED, LINK_CONNECTING, LINK_CONNECTED)
_MONITORED = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_DISCONNECTED)


class ControllerLink:
    """A controller's two sockets around a `ControllerGate`.

    SUB (CONFLATE: only the newest permit is kept) connects to the permit
    endpoint; DEALER connects to the report endpoint and carries pulses and
    status out, and answers clock pings. Without keys it refuses to start
    unless `insecure=True` was asked for explicitly, and then the gate
    accepts unauthenticated permits only because that flag said so.

    `controller_id` must be the id its key is allow-listed under at the
    service (authorized_controllers/ID.key), or every report is rejected
    there as `identity_mismatch`. `protocol_minor=0` makes it speak 1.0 (no
    `contact` in pulse reports), to test a service against an old controller.

    `link_state` follows a libzmq socket monitor on both sockets: "connected"
    once both handshakes succeeded, "key refused" when the service refused
    this controller's key (libzmq does not retry that connection), "handshake
    failed" when the CURVE handshake broke off (typically the wrong service
    public key), "disconnected", or "connecting". `link_changes()` hands out
    each change once, for a log.
    """

    def __init__(
        self,
        permit_endpoint: str,
        report_endpoint: str,
        *,
        controller_id: str,
        keys: LinkKeys | None,
        insecure: bool = False,
        clock: Callable[[], int] = time.monotonic_ns,
        gate: ControllerGate | None = None,
        boot: str | None = None,
        protocol_minor: int = protocol.PROTOCOL_MINOR,
    ):
        if keys is None and not insecure:
            raise UserError("no CURVE keys configured; pass keys or run explicitly insecure (dev/test only)")
        if keys is not None and not zmq.has("curve"):
            raise UserError("this libzmq has no CURVE support")
        if not protocol.valid_id(controller_id):
            raise UserError(f"controller id {controller_id!r} must be 1-64 of [A-Za-z0-9._-]", field="controller_id")
        if protocol_minor not in (0, protocol.PROTOCOL_MINOR):
            raise UserError(f"protocol 1.{protocol_minor} is not spoken here (1.0 or 1.{protocol.PROTOCOL_MINOR})",
                            field="protocol")
        self.controller_id = controller_id
        self.minor = protocol_minor
        self.boot = boot or _new_boot()
        self.clock = clock
        self.gate = gate or ControllerGate(accept_unauthenticated=insecure and keys is None)
        self.authenticated = keys is not None
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.dealer = self.ctx.socket(zmq.DEALER)
        for s in (self.sub, self.dealer):
            s.linger = 0
            s.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
            s.setsockopt(zmq.RECONNECT_IVL, 20)
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
            if keys is not None:
                _load_curve_client(s, keys.server_public, keys.client_public, keys.client_secret)
        self.sub.setsockopt(zmq.CONFLATE, 1)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.dealer.setsockopt(zmq.SNDHWM, 100_000)
        self._monitors = {self.sub.get_monitor_socket(_MONITORED): "permit",
                          self.dealer.get_monitor_socket(_MONITORED): "report"}
        self._sock_state = {"permit": LINK_CONNECTING, "report": LINK_CONNECTING}
        self.link_state = LINK_CONNECTING
        self.link_detail = ""
        self._link_changes: list[tuple[str, str]] = []
        self.outbox: collections.deque[bytes] = collections.deque()
        try:
            self.sub.connect(permit_endpoint)
            self.dealer.connect(report_endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise UserError(f"cannot connect: {exc}", field="endpoint") from None
        self.pulse_seq = 0
        self.status_seq = 0
        self.pulses = 0
        self.rejected_inbound = 0
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)
        self.poller.register(self.dealer, zmq.POLLIN)
        for mon in self._monitors:
            self.poller.register(mon, zmq.POLLIN)

    def _on_monitor(self, mon: zmq.Socket) -> None:
        name = self._monitors[mon]
        while True:
            try:
                ev = parse_monitor_message(mon.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            e = ev["event"]
            prev = self._sock_state[name]
            if e == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                state, detail = LINK_CONNECTED, ""
            elif e == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                state, detail = LINK_KEY_REFUSED, f"{name} socket: the service refused this key (ZAP status {ev['value']})"
            elif e in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                state, detail = LINK_HANDSHAKE_FAILED, f"{name} socket: CURVE handshake failed ({zmq.Event(e).name})"
            elif e == zmq.EVENT_DISCONNECTED:
                if prev in (LINK_KEY_REFUSED, LINK_HANDSHAKE_FAILED):
                    continue  # the disconnect that follows a failed handshake says nothing new
                state, detail = LINK_DISCONNECTED, f"{name} socket disconnected"
            else:
                continue
            self._sock_state[name] = state
            self._update_link(detail)

    def _update_link(self, detail: str) -> None:
        states = list(self._sock_state.values())
        state = next(s for s in _LINK_ORDER if s in states)  # the worse of the two sockets
        if state != self.link_state:
            self.link_state, self.link_detail = state, detail
            self._link_changes.append((state, detail))

    def link_changes(self) -> list[tuple[str, str]]:
        """(state, detail) for each change of `link_state` since the last call."""
        out, self._link_changes = self._link_changes, []
        return out

    def poll(self, timeout_ms: int) -> list[Verdict]:
        """Wait up to timeout_ms for input; feed permits to the gate, answer pings."""
        verdicts: list[Verdict] = []
        events = dict(self.poller.poll(timeout_ms))
        if self.sub in events:
            while True:
                try:
                    frames = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                verdicts.append(self.gate.offer(frames, self.clock(), self.authenticated or self.gate.accept_unauthenticated))
        if self.dealer in events:
            while True:
                try:
                    frames = self.dealer.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_service_message(frames)
        for mon in self._monitors:
            if mon in events:
                self._on_monitor(mon)
        self.flush()
        return verdicts

    def _on_service_message(self, frames: list[bytes]) -> None:
        t2 = self.clock()
        try:
            if len(frames) != 1:
                raise ProtocolError("malformed", "multipart")
            ping = protocol.decode(frames[0], expect=("ping",))
        except ProtocolError:
            self.rejected_inbound += 1
            return
        assert isinstance(ping, protocol.Ping)
        self.gate.note_ping(ping.boot, ping.t1_ns, t2)
        pong = protocol.Pong(self.controller_id, self.boot, ping.ping_seq, ping.t1_ns, t2, self.clock(),
                              minor=self.minor)
        self._send(pong.encode())

    def report_pulse(self, t_ctrl_ns: int, permit: Permit | None, *, duration_us: int, intensity_pct: float,
                     contact: bool | None, energy_mj: float | None = None) -> protocol.Pulse:
        """Report one delivered pulse: the permit it fired under (None: none) and the skin-contact sense then.

        `contact` is required in 1.1 (a bool); a 1.0 link drops it from the wire.
        """
        msg = protocol.Pulse(
            self.controller_id, self.boot, self.pulse_seq + 1, t_ctrl_ns, duration_us, intensity_pct, energy_mj,
            permit.boot if permit else None, permit.seq if permit else None,
            contact if self.minor >= 1 else None, minor=self.minor,
        )
        data = msg.encode()  # raises before anything is counted if the report is not sendable
        self.pulse_seq += 1
        self.pulses += 1
        self._send(data)
        return msg

    @property
    def rejected(self) -> int:
        """`status.rejected` (docs/protocol.md §4.3): every received message not accepted, on either socket."""
        return sum(v for k, v in self.gate.counters.items() if k not in ("accepted", "accepted_deny")) \
            + self.rejected_inbound

    def send_status(self, trigger: bool) -> protocol.Status:
        now = self.clock()
        self.status_seq += 1
        may_fire = self.gate.may_fire(now)  # first: it drops an expired permit, so permit_seq is null iff not may_fire
        held = self.gate.held
        msg = protocol.Status(
            self.controller_id, self.boot, self.status_seq, now, may_fire,
            self.gate.state(now).value, bool(trigger), held.permit.seq if held else None, self.pulses,
            self.rejected, minor=self.minor,
        )
        self._send(msg.encode())
        return msg

    @property
    def backlog(self) -> int:
        """Reports ZeroMQ would not take yet (its queue is full): while any waits, a controller must not fire (§4.3)."""
        return len(self.outbox)

    def _send(self, data: bytes) -> None:
        self.outbox.append(data)
        self.flush()

    def flush(self) -> None:
        """Hand queued reports to ZeroMQ; what it will not take now stays queued, in order."""
        while self.outbox:
            try:
                self.dealer.send(self.outbox[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            self.outbox.popleft()

    def close(self, drain_ms: int = 0) -> None:
        """Close; `drain_ms` > 0 gives queued pulse reports that long to leave."""
        self.flush()
        for s in (self.sub, self.dealer):
            try:
                s.disable_monitor()
            except zmq.ZMQError:
                pass
        for mon in self._monitors:
            mon.close(0)
        self.sub.close(0)
        self.dealer.close(drain_ms)
        self.ctx.term()


def _new_boot() -> str:
    import secrets

    return secrets.token_hex(protocol.BOOT_HEX_CHARS // 2)
