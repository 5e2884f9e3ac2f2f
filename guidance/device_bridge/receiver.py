"""Pulse receiver: pulse reports, status heartbeats and clock echoes from controllers (ROUTER).

ROUTER/DEALER rather than PUB/SUB because reports must not be dropped
silently: DEALER queues while the service is away, and every malformed or
unexpected frame is counted here instead of raising.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Callable

import zmq

from guidance.device_bridge import protocol
from guidance.device_bridge.attribution import AttributedPulse, PulseAttributor
from guidance.device_bridge.clock import ClockOffsetEstimator
from guidance.device_bridge.heartbeat import HeartbeatMonitor
from guidance.device_bridge.protocol import Ping, Pong, ProtocolError, Pulse, Status


@dataclass
class PeerState:
    routing_id: bytes
    boot: str
    clock: ClockOffsetEstimator = field(default_factory=ClockOffsetEstimator)


class PulseReceiver:
    def __init__(self, sock: zmq.Socket, attributor: PulseAttributor, heartbeat: HeartbeatMonitor, *,
                 service_id: str, boot: str, ping_interval_ms: float = 200.0,
                 clock: Callable[[], int] = time.monotonic_ns):
        self.sock = sock
        self.attributor = attributor
        self.heartbeat = heartbeat
        self.service_id = service_id
        self.boot = boot
        self.clock = clock
        self.ping_interval_ns = int(ping_interval_ms * 1e6)
        self.peers: dict[str, PeerState] = {}
        self.counters: collections.Counter = collections.Counter()
        self._ping_seq = 0
        self._pings: dict[int, tuple[str, int]] = {}  # ping_seq -> (controller, t1)
        self._t_last_ping = 0

    def poll(self, max_messages: int = 1000, ping: bool = True) -> list[AttributedPulse]:
        """Handle whatever has arrived (non-blocking); flag announced pulses overdue; send pings when due."""
        out: list[AttributedPulse] = []
        for _ in range(max_messages):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            out.extend(self._handle(frames))
        now = self.clock()
        out.extend(self.attributor.flag_overdue(now))
        if ping and now - self._t_last_ping >= self.ping_interval_ns:
            self._t_last_ping = now
            self._send_pings(now)
        return out

    def _handle(self, frames: list) -> list[AttributedPulse]:
        t_rx = self.clock()
        if len(frames) != 2:
            self.counters["malformed"] += 1
            return []
        rid, frame = frames[0].bytes, frames[1]
        try:
            key = frame.get("User-Id") or None
        except zmq.ZMQError:
            key = None
        try:
            msg = protocol.decode(frame.bytes, expect=("pulse", "status", "pong"))
        except ProtocolError as exc:
            self.counters[exc.code] += 1
            return []
        self.counters[msg.TYPE] += 1
        if isinstance(msg, Status):
            peer = self.peers.get(msg.controller)
            if peer is None or peer.boot != msg.boot:
                # New controller or restarted one: its clock may be anything now.
                self.peers[msg.controller] = PeerState(rid, msg.boot)
            else:
                peer.routing_id = rid
            self.heartbeat.on_status(msg, t_rx, key)
            self.attributor.on_status(msg, t_rx)  # status.pulses reveals a lost last report
            return []
        if isinstance(msg, Pong):
            pending = self._pings.pop(msg.ping_seq, None)
            peer = self.peers.get(msg.controller)
            if pending is None or pending[0] != msg.controller or pending[1] != msg.t1_ns or peer is None \
                    or peer.boot != msg.boot:
                self.counters["pong_unmatched"] += 1
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
