"""Permit publisher: one permit per frame on a PUB socket, never blocking the frame loop.

PUB drops for a subscriber that cannot keep up (high-water mark), which is
what we want: a controller needs the newest permit, not a backlog.
"""

from __future__ import annotations

import time
from typing import Callable

import zmq

from guidance.device_bridge.attribution import PermitLog
from guidance.device_bridge.protocol import Permit
from guidance.gate import GateDecision


class PermitPublisher:
    def __init__(self, sock: zmq.Socket, service_id: str, boot: str, clock: Callable[[], int] = time.monotonic_ns):
        self.sock = sock
        self.service_id = service_id
        self.boot = boot
        self.clock = clock
        self.seq = 0
        self.log = PermitLog(boot)
        self.dropped = 0
        self.last_ttl_ms: int | None = None  # the TTL of the newest permit published (the session's, from the plan)
        self.t_grant_end_ns: int | None = None  # the latest `t_capture_ns + ttl` of any permit:true published

    def publish(self, d: GateDecision) -> Permit:
        """Encode and send one decision; the returned Permit is exactly what went out."""
        self.seq += 1
        msg = Permit(
            service=self.service_id, boot=self.boot, seq=self.seq, t_capture_ns=d.t_capture_ns,
            t_publish_ns=max(self.clock(), d.t_capture_ns), ttl_ms=int(d.ttl_ms), permit=bool(d.permit),
            reason=d.reason.value, zone=d.zone, tip_u=d.tip_u, tip_v=d.tip_v, boundary_mm=d.boundary_mm,
            required_mm=d.required_mm, speed_mm_s=d.speed_mm_s,
        )
        data = msg.encode()
        self.log.add(msg)
        self.last_ttl_ms = msg.ttl_ms
        if msg.permit:
            end = msg.t_capture_ns + msg.ttl_ms * 1_000_000
            self.t_grant_end_ns = end if self.t_grant_end_ns is None else max(self.t_grant_end_ns, end)
        try:
            self.sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
        return msg
