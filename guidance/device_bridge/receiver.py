"""Pulse receiver: pulse reports, status heartbeats and clock echoes from controllers (ROUTER).

ROUTER/DEALER rather than PUB/SUB because reports must not be dropped
silently: DEALER queues while the service is away, and every malformed,
unexpected or misattributed frame is counted here instead of raising.

Two steps per batch: `read()` takes frames off the socket, decodes them and
checks the sender's identity without any lock (decoding is pure, and a flood
of garbage must not hold up the permit hot path, which shares the lock);
`apply()` then updates heartbeats, clocks and attribution under the lock.

Identity: with CURVE, the service's ZAP handler (`zap.py`) sets each
connection's ZMTP `User-Id` metadata to the controller id its key is bound to
(the allow-list file name). A pulse, status or pong whose `controller`
differs is rejected as `identity_mismatch`. Without CURVE (insecure mode)
there is no User-Id and no binding.

Rejects are counted in `counters` (every code and message type, for tests
and the bench), in `rejects.totals` ((code, source) -> count, for the
session summary) and released as `RejectEvent`s at most once per code and
source per second (`reject_events()`), so 10,000 bad frames make a handful
of records, not 10,000.
"""

from __future__ import annotations

import collections
import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

import zmq

from guidance.device_bridge import protocol
from guidance.device_bridge.attribution import AttributedPulse, PulseAttributor
from guidance.device_bridge.clock import ClockOffsetEstimator
from guidance.device_bridge.events import RateLimitedCounter, RejectEvent
from guidance.device_bridge.heartbeat import HeartbeatMonitor
from guidance.device_bridge.protocol import Ping, Pong, ProtocolError, Pulse, Status

YIELD_EVERY = 16  # frames decoded between two offers of the GIL to the frame loop (a flood must not delay it)
REJECT_CODES = ("oversize", "malformed", "wrong_version", "unexpected_type", "identity_mismatch", "pong_unmatched")


@dataclass
class PeerState:
    routing_id: bytes
    boot: str
    clock: ClockOffsetEstimator = field(default_factory=ClockOffsetEstimator)


@dataclass(frozen=True)
class _Received:
    t_rx_ns: int
    routing_id: bytes
    msg: Pulse | Status | Pong
    key: str | None


class PulseReceiver:
    def __init__(self, sock: zmq.Socket, attributor: PulseAttributor, heartbeat: HeartbeatMonitor, *,
                 service_id: str, boot: str, ping_interval_ms: float = 200.0,
                 clock: Callable[[], int] = time.monotonic_ns, bind_identity: bool = False,
                 lock: contextlib.AbstractContextManager | None = None, reject_window_ms: float = 1000.0):
        self.sock = sock
        self.attributor = attributor
        self.heartbeat = heartbeat
        self.service_id = service_id
        self.boot = boot
        self.clock = clock
        self.bind_identity = bind_identity
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.ping_interval_ns = int(ping_interval_ms * 1e6)
        self.peers: dict[str, PeerState] = {}
        self.counters: collections.Counter = collections.Counter()
        self.rejects = RateLimitedCounter(int(reject_window_ms * 1e6))
        self._ping_seq = 0
        self._pings: dict[int, tuple[str, int]] = {}  # ping_seq -> (controller, t1)
        self._t_last_ping = 0

    def poll(self, max_messages: int = 1000, ping: bool = True) -> list[AttributedPulse]:
        """Handle whatever has arrived (non-blocking); flag announced pulses overdue; send pings when due."""
        batch = self.read(max_messages)
        with self.lock:
            out = self.apply(batch)
            now = self.clock()
            out.extend(self.attributor.flag_overdue(now))
            if ping and now - self._t_last_ping >= self.ping_interval_ns:
                self._t_last_ping = now
                self._send_pings(now)
        return out

    # -- step 1: off the socket, decoded, identity checked (no lock) ---------------------------------------------------
    def read(self, max_messages: int = 1000) -> list[_Received]:
        batch: list[_Received] = []
        for i in range(max_messages):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            r = self._decode(frames)
            if r is not None:
                batch.append(r)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                time.sleep(0)  # let the frame loop have the GIL now, not at the next 5 ms switch interval
        return batch

    def _reject(self, code: str, key: str | None, t_ns: int, detail: str) -> None:
        self.counters[code] += 1
        self.rejects.add((code, key), t_ns, detail[:120])

    def _decode(self, frames: list) -> _Received | None:
        t_rx = self.clock()
        key = _user_id(frames[-1]) if frames else None
        if len(frames) != 2:
            self._reject("malformed", key, t_rx, f"{max(0, len(frames) - 1)} frames, not 1")
            return None
        rid, frame = frames[0].bytes, frames[1]
        try:
            msg = protocol.decode(frame.bytes, expect=("pulse", "status", "pong"))
        except ProtocolError as exc:
            self._reject(exc.code, key, t_rx, exc.detail)
            return None
        assert isinstance(msg, (Pulse, Status, Pong)), "decode refuses the types not expected"
        if self.bind_identity and msg.controller != key:
            self._reject("identity_mismatch", key, t_rx,
                         f"{msg.TYPE} names controller {msg.controller!r}; the key is {key!r}'s")
            return None
        self.counters[msg.TYPE] += 1
        return _Received(t_rx, rid, msg, key)

    # -- step 2: state (under the bridge lock) -------------------------------------------------------------------------
    def apply(self, batch: list[_Received]) -> list[AttributedPulse]:
        out: list[AttributedPulse] = []
        for r in batch:
            out.extend(self._handle(r))
        return out

    def _handle(self, r: _Received) -> list[AttributedPulse]:
        msg, t_rx, rid = r.msg, r.t_rx_ns, r.routing_id
        if isinstance(msg, Status):
            peer = self.peers.get(msg.controller)
            if peer is None or peer.boot != msg.boot:
                # New controller or restarted one: its clock may be anything now.
                self.peers[msg.controller] = PeerState(rid, msg.boot)
            else:
                peer.routing_id = rid
            self.heartbeat.on_status(msg, t_rx, r.key)
            self.attributor.on_status(msg, t_rx)  # status.pulses reveals a lost last report
            return []
        if isinstance(msg, Pong):
            pending = self._pings.pop(msg.ping_seq, None)
            peer = self.peers.get(msg.controller)
            if pending is None or pending[0] != msg.controller or pending[1] != msg.t1_ns or peer is None \
                    or peer.boot != msg.boot:
                self._reject("pong_unmatched", r.key, t_rx, f"ping_seq {msg.ping_seq} from {msg.controller}")
                return []
            peer.clock.add(msg.t1_ns, msg.t2_ns, msg.t3_ns, t_rx)
            return []
        assert isinstance(msg, Pulse)
        peer = self.peers.get(msg.controller)
        est = peer.clock if peer is not None and peer.boot == msg.boot else None
        t_s = est.to_service_ns(msg.t_ctrl_ns) if est is not None else None
        return self.attributor.on_pulse(msg, t_s, est.uncertainty_ns if est is not None else None)

    def _send_pings(self, now: int) -> None:
        for name, peer in self.peers.items():
            self._ping_seq += 1
            t1 = self.clock()
            self._pings[self._ping_seq] = (name, t1)
            try:
                self.sock.send_multipart([peer.routing_id, Ping(self.service_id, self.boot, self._ping_seq, t1).encode()],
                                         zmq.NOBLOCK)
            except zmq.ZMQError:
                self.counters["ping_unsent"] += 1
        if len(self._pings) > 256:  # never answered: forget the oldest
            for k in sorted(self._pings)[:-256]:
                del self._pings[k]

    # -- rejects as records --------------------------------------------------------------------------------------------
    def reject_events(self, now_ns: int, flush: bool = False) -> list[RejectEvent]:
        """Rejects counted since the last record of their (code, source), at most one record each per window."""
        due = self.rejects.flush(now_ns) if flush else self.rejects.due(now_ns)
        return [RejectEvent(now_ns, code, count, total, source, t_first, t_last, detail)
                for (code, source), count, total, t_first, t_last, detail in due]

    def reject_totals(self) -> dict[str, int]:
        """Every reject of this service run, by code (all sources together)."""
        out: dict[str, int] = {}
        for (code, _source), n in list(self.rejects.totals.items()):  # a snapshot: the receive thread adds
            out[code] = out.get(code, 0) + n
        return out


def _user_id(frame) -> str | None:
    """The ZMTP User-Id metadata of a received frame (the controller id the ZAP handler bound its key to)."""
    try:
        uid = frame.get("User-Id")
    except (zmq.ZMQError, AttributeError):
        return None
    return uid or None
