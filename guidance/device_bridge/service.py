"""The service end of the bridge: bind, authenticate, publish permits, take reports in.

One object for the live pipeline to hold. It owns its ZeroMQ context and, with
CURVE, a ZAP authenticator thread that admits only allow-listed controller
keys on both sockets, so an unknown peer can neither subscribe to permits nor
push reports. Without keys it refuses to start unless told `insecure=True`.
"""

from __future__ import annotations

import secrets
import time
from typing import Callable

import zmq
from zmq.auth.thread import ThreadAuthenticator

from guidance.device_bridge import protocol
from guidance.device_bridge.attribution import AttributedPulse, CoverageSink, PulseAttributor, PulseListSink, TipSample, TipTrack
from guidance.device_bridge.heartbeat import HeartbeatMonitor, LinkEvent
from guidance.device_bridge.keys import ServiceKeys
from guidance.device_bridge.protocol import Permit
from guidance.device_bridge.publisher import PermitPublisher
from guidance.device_bridge.receiver import PulseReceiver
from guidance.errors import UserError
from guidance.gate import GateDecision, GatePolicy, Reason, deny

DEFAULT_PERMIT_ENDPOINT = "tcp://127.0.0.1:5571"
DEFAULT_REPORT_ENDPOINT = "tcp://127.0.0.1:5572"


def _bind(sock: zmq.Socket, endpoint: str, what: str) -> str:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EADDRINUSE:
            raise UserError(f"{what} endpoint {endpoint} is busy (another service running?)", field=what) from None
        raise UserError(f"{what} endpoint {endpoint!r} cannot be bound: {exc}", field=what) from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class BridgeService:
    def __init__(
        self,
        permit_endpoint: str = DEFAULT_PERMIT_ENDPOINT,
        report_endpoint: str = DEFAULT_REPORT_ENDPOINT,
        *,
        keys: ServiceKeys | None,
        insecure: bool = False,
        service_id: str = "guidance",
        policy: GatePolicy | None = None,
        sink: CoverageSink | None = None,
        heartbeat_timeout_ms: float = 300.0,
        ping_interval_ms: float = 200.0,
        clock: Callable[[], int] = time.monotonic_ns,
    ):
        if keys is None and not insecure:
            raise UserError("no CURVE keys configured; pass a key directory or run explicitly insecure (dev/test only)")
        self.policy = policy or GatePolicy()
        self.clock = clock
        self.boot = secrets.token_hex(protocol.BOOT_HEX_CHARS // 2)
        self.service_id = service_id
        self.ctx = zmq.Context()
        self.auth: ThreadAuthenticator | None = None
        self.pub = self.ctx.socket(zmq.PUB)
        self.router = self.ctx.socket(zmq.ROUTER)
        try:
            if keys is not None:
                if not zmq.has("curve"):
                    raise UserError("this libzmq has no CURVE support")
                self.auth = ThreadAuthenticator(self.ctx)
                self.auth.start()
                self.auth.configure_curve(domain="*", location=str(keys.allowlist_dir))
            for s in (self.pub, self.router):
                s.linger = 0
                s.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
                if keys is not None:
                    s.curve_server = True
                    s.curve_publickey = keys.pair.public
                    s.curve_secretkey = keys.pair.secret
            self.pub.setsockopt(zmq.SNDHWM, 16)
            self.router.setsockopt(zmq.RCVHWM, 100_000)
            self.permit_endpoint = _bind(self.pub, permit_endpoint, "permit")
            self.report_endpoint = _bind(self.router, report_endpoint, "report")
        except BaseException:
            self._teardown()
            raise
        self.sink = sink if sink is not None else PulseListSink()
        self.track = TipTrack()
        self.publisher = PermitPublisher(self.pub, service_id, self.boot, clock)
        self.attributor = PulseAttributor(self.publisher.log, self.track, self.sink)
        self.heartbeat = HeartbeatMonitor(timeout_ms=heartbeat_timeout_ms)
        self.receiver = PulseReceiver(self.router, self.attributor, self.heartbeat, service_id=service_id,
                                      boot=self.boot, ping_interval_ms=ping_interval_ms, clock=clock)
        self.closed = False

    # -- hot path ------------------------------------------------------------
    def publish(self, decision: GateDecision) -> Permit:
        """Send this frame's decision; also records the tip for pulse attribution."""
        self.track.add(TipSample(decision.t_capture_ns, decision.tip_u, decision.tip_v, decision.zone,
                                 decision.tip_u is not None and decision.tip_v is not None))
        return self.publisher.publish(decision)

    def poll(self) -> tuple[list[AttributedPulse], list[LinkEvent]]:
        """Take in reports and heartbeats (non-blocking); call once per frame or so."""
        pulses = self.receiver.poll()
        events = self.heartbeat.check(self.clock())
        return pulses, events

    # -- state -----------------------------------------------------------------
    @property
    def violations(self) -> list[AttributedPulse]:
        return self.attributor.violations

    def clock_offset_ns(self, controller: str) -> int | None:
        peer = self.receiver.peers.get(controller)
        return peer.clock.offset_ns if peer else None

    def close(self, final_deny: bool = True) -> None:
        """Say deny once more (so controllers stop before their TTL runs out), then close."""
        if self.closed:
            return
        if final_deny:
            now = self.clock()
            self.publisher.publish(deny(self.policy, Reason.SERVICE_STOPPING, t_capture_ns=now, now_ns=now))
            self.pub.linger = 100
        self._teardown()
        self.closed = True

    def _teardown(self) -> None:
        for s in (self.pub, self.router):
            s.close()
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
