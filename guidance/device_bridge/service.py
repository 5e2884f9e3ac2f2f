"""The service end of the bridge: bind, authenticate, publish permits, take reports in.

One object for the live pipeline to hold. Reports are received on a thread of
its own, which blocks on the ROUTER socket: it stamps each clock echo the
moment it arrives (a reply left waiting until the next frame would skew the
offset by half the wait) and keeps heartbeats and pulses flowing while the
frame loop is busy. The frame loop only publishes and, when it likes, drains
what the thread produced with `poll()`. It owns its ZeroMQ context and, with
CURVE, a ZAP authenticator thread that admits only allow-listed controller
keys on both sockets, so an unknown peer can neither subscribe to permits nor
push reports. Without keys it refuses to start unless told `insecure=True`.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from typing import Callable

import zmq
from zmq.auth.thread import ThreadAuthenticator

from guidance.device_bridge import protocol
from guidance.device_bridge.attribution import (ANNOUNCED_REPORT_GRACE_MS, AttributedPulse, CoverageSink,
                                                 PulseAttributor, PulseListSink, TipSample, TipTrack)
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
        report_grace_ms: float = ANNOUNCED_REPORT_GRACE_MS,
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
        self.attributor = PulseAttributor(self.publisher.log, self.track, self.sink, report_grace_ms=report_grace_ms)
        self.heartbeat = HeartbeatMonitor(timeout_ms=heartbeat_timeout_ms)
        self.receiver = PulseReceiver(self.router, self.attributor, self.heartbeat, service_id=service_id,
                                      boot=self.boot, ping_interval_ms=ping_interval_ms, clock=clock)
        self.lock = threading.Lock()  # guards permit log, tip track, attributor, heartbeat
        self.receiver_errors = 0
        self._out: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive_loop, name="bridge-receiver", daemon=True)
        self.session_ended = False
        self.closed = False
        self._thread.start()

    def _receive_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                poller.poll(10)
                with self.lock:
                    pulses = self.receiver.poll()
                    events = self.heartbeat.check(self.clock())
                if pulses or events:
                    self._out.append((pulses, events))
            except zmq.ZMQError:
                if self._stop.is_set():
                    return
                self.receiver_errors += 1
            except Exception:  # never let one bad report end reception
                self.receiver_errors += 1

    # -- hot path ------------------------------------------------------------
    def publish(self, decision: GateDecision) -> Permit:
        """Send this frame's decision; also records the tip for pulse attribution."""
        with self.lock:
            self.track.add(TipSample(decision.t_capture_ns, decision.tip_u, decision.tip_v, decision.zone,
                                     decision.tip_u is not None and decision.tip_v is not None))
            return self.publisher.publish(decision)

    def poll(self) -> tuple[list[AttributedPulse], list[LinkEvent]]:
        """Attributed pulses and link events since the last call (non-blocking)."""
        pulses: list[AttributedPulse] = []
        events: list[LinkEvent] = []
        while self._out:
            p, e = self._out.popleft()
            pulses.extend(p)
            events.extend(e)
        return pulses, events

    # -- state -----------------------------------------------------------------
    @property
    def violations(self) -> list[AttributedPulse]:
        return self.attributor.violations

    def clock_offset_ns(self, controller: str) -> int | None:
        peer = self.receiver.peers.get(controller)
        return peer.clock.offset_ns if peer else None

    def end_session(self) -> None:
        """Stop taking reports, and record every pulse a controller announced but never reported as missing.

        A lost last report leaves no gap in the numbering for a later report to
        reveal, and after the session nothing later will come: so whatever the
        newest status of each controller boot counted (`pulses`) and did not
        arrive is a `missing` violation now, without waiting out the grace.
        Reports already received are handled first. The outcomes come out of
        the next `poll()` (and are in `violations`), so a caller that records
        the session calls this, then `poll()`, before closing its record; a
        caller that wants reports still in flight to count lingers first.
        Idempotent; `close()` calls it.
        """
        if self.session_ended:
            return
        self.session_ended = True
        self._stop.set()
        self._thread.join(timeout=5)
        socket_is_ours = not self._thread.is_alive()  # a stuck receiver keeps it: account with what it took in
        with self.lock:
            pulses = self._drain_reports() if socket_is_ours else []
            pulses += self.attributor.flag_all_announced()
        if pulses:
            self._out.append((pulses, []))

    def _drain_reports(self) -> list[AttributedPulse]:
        """Handle what has already arrived, once more, so it is not taken for missing."""
        try:
            return self.receiver.poll(max_messages=self.router.getsockopt(zmq.RCVHWM), ping=False)
        except Exception:  # a last bad frame must not stop the accounting
            self.receiver_errors += 1
            return []

    def close(self, final_deny: bool = True) -> None:
        """Say deny once more (so controllers stop before their TTL runs out), account for every pulse, close."""
        if self.closed:
            return
        if final_deny:
            now = self.clock()
            with self.lock:
                self.publisher.publish(deny(self.policy, Reason.SERVICE_STOPPING, t_capture_ns=now, now_ns=now))
            self.pub.linger = 100
        self.end_session()
        self._teardown()
        self.closed = True

    def _teardown(self) -> None:
        for s in (self.pub, self.router):
            s.close()
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
