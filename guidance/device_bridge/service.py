"""The service end of the bridge: bind, authenticate, publish permits, take reports in.

One object for the live pipeline to hold. Reports are received on a thread of
its own, which blocks on the ROUTER socket: it stamps each clock echo the
moment it arrives (a reply left waiting until the next frame would skew the
offset by half the wait) and keeps heartbeats and pulses flowing while the
frame loop is busy. The frame loop only publishes and, when it likes, drains
what the thread produced with `poll()`. It owns its ZeroMQ context and, with
CURVE, a ZAP handler (`zap.py`) that admits only allow-listed controller keys
on both sockets and binds each key to its controller id, so an unknown peer
can neither subscribe to permits nor push reports, and a known one cannot
report as another. Without keys it refuses to start unless told
`insecure=True`.

What the run loop does with it (docs/protocol.md §10):

    bridge = BridgeService(permit_ep, report_ep, keys=load_service_keys(dir))
    per frame:   bridge.publish(decision)
                 pulses, events = bridge.poll()
                 for p in pulses:  coverage only if p.deposits; record "pulse"/"violation" with p's fields
                 for e in events:  recorder.add_event(e.event, e.t_ns, **e.record())
    at the end:  bridge.end_session(); pulses, events = bridge.poll()  (record them too)
                 summary["bridge"] = bridge.summary(); bridge.close()
"""

from __future__ import annotations

import collections
import dataclasses
import secrets
import threading
import time
from typing import Callable, NamedTuple

import zmq
from zmq.utils.monitor import parse_monitor_message

from guidance.device_bridge import protocol
from guidance.device_bridge.attribution import (ANNOUNCED_REPORT_GRACE_MS, AttributedPulse, CoverageSink,
                                                 PulseAttributor, PulseListSink, TipSample, TipTrack)
from guidance.device_bridge.events import (BridgeEvent, HandshakeFailedEvent, KeyRefusedEvent, RateLimitedCounter)
from guidance.device_bridge.heartbeat import HeartbeatMonitor
from guidance.device_bridge.keys import ServiceKeys
from guidance.device_bridge.protocol import Permit
from guidance.device_bridge.publisher import PermitPublisher
from guidance.device_bridge.receiver import PulseReceiver
from guidance.device_bridge.zap import ZapHandler
from guidance.errors import UserError
from guidance.gate import GateDecision, GatePolicy, Reason, deny

DEFAULT_PERMIT_ENDPOINT = "tcp://127.0.0.1:5571"
DEFAULT_REPORT_ENDPOINT = "tcp://127.0.0.1:5572"
MAX_END_WAIT_S = 2.0  # end_session() never waits longer than this for the last pulses (TTL ≤ 100 ms + grace)
RECEIVE_BATCH = 256  # frames handled per receive-loop turn: the lock is never held long, even in a flood
_HANDSHAKE_EVENTS: dict[int, str] = {zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol", zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no_detail"}


class BridgePoll(NamedTuple):
    """What `BridgeService.poll()` returns: unpack as `pulses, events = bridge.poll()`."""

    pulses: list[AttributedPulse]
    events: list[BridgeEvent]  # LinkEvent, RejectEvent, KeyRefusedEvent, HandshakeFailedEvent, ServiceStallEvent


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
        event_window_ms: float = 1000.0,
    ):
        if keys is None and not insecure:
            raise UserError("no CURVE keys configured; pass a key directory or run explicitly insecure (dev/test only)")
        if not protocol.valid_id(service_id):
            raise UserError("service id must be 1-64 of [A-Za-z0-9._-]", field="service_id")
        self.policy = policy or GatePolicy()
        self.clock = clock
        self.boot = secrets.token_hex(protocol.BOOT_HEX_CHARS // 2)
        self.service_id = service_id
        self.keys = keys
        self.ctx = zmq.Context()
        self.zap: ZapHandler | None = None
        self.pub = self.ctx.socket(zmq.PUB)
        self.router = self.ctx.socket(zmq.ROUTER)
        self._monitors: list[tuple[str, zmq.Socket]] = []
        try:
            if keys is not None:
                if not zmq.has("curve"):
                    raise UserError("this libzmq has no CURVE support")
                self.zap = ZapHandler(self.ctx, keys.controllers or {f"key{i}": k for i, k in enumerate(keys.allowed)},
                                      clock)
            for s in (self.pub, self.router):
                s.linger = 0
                s.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES)
                if keys is not None:
                    s.curve_server = True
                    s.curve_publickey = keys.pair.public
                    s.curve_secretkey = keys.pair.secret
                    s.zap_domain = b"guidance"
            self.pub.setsockopt(zmq.SNDHWM, 16)
            self.router.setsockopt(zmq.RCVHWM, 100_000)
            if keys is not None:
                for name, s in (("permit", self.pub), ("report", self.router)):
                    self._monitors.append((name, s.get_monitor_socket(
                        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)))
            self.permit_endpoint = _bind(self.pub, permit_endpoint, "permit")
            self.report_endpoint = _bind(self.router, report_endpoint, "report")
        except BaseException:
            self._teardown()
            raise
        self.sink = sink if sink is not None else PulseListSink()
        self.track = TipTrack()
        self.publisher = PermitPublisher(self.pub, service_id, self.boot, clock)
        self.attributor = PulseAttributor(self.publisher.log, self.track, self.sink, report_grace_ms=report_grace_ms)
        self.heartbeat = HeartbeatMonitor(timeout_ms=heartbeat_timeout_ms, stall_ms=heartbeat_timeout_ms / 3)
        self.lock = threading.Lock()  # guards permit log, tip track, attributor, heartbeat
        self.receiver = PulseReceiver(self.router, self.attributor, self.heartbeat, service_id=service_id,
                                      boot=self.boot, ping_interval_ms=ping_interval_ms, clock=clock,
                                      bind_identity=keys is not None, lock=self.lock,
                                      reject_window_ms=event_window_ms)
        window_ns = int(event_window_ms * 1e6)
        self._refusals = RateLimitedCounter(window_ns)  # (fingerprint,) ; owned by the receive thread
        self._refusal_address: dict[str, str] = {}
        self._handshakes = RateLimitedCounter(window_ns)  # (socket, error) ; owned by the receive thread
        self.receiver_errors = 0
        self._out: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive_loop, name="bridge-receiver", daemon=True)
        self.session_ended = False
        self.stopping = False  # end_session() began: every decision published from now on is a deny
        self.final_deny: Permit | None = None
        self.closed = False
        self._thread.start()

    # -- the receive thread ------------------------------------------------------------------------------------------
    def _receive_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        for _, mon in self._monitors:
            poller.register(mon, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                poller.poll(10)
                self._turn(flush=False)
            except zmq.ZMQError:
                if self._stop.is_set():
                    return
                self.receiver_errors += 1
            except Exception:  # never let one bad report end reception
                self.receiver_errors += 1

    def _turn(self, flush: bool, max_messages: int = RECEIVE_BATCH, ping: bool = True) -> None:
        """Read what arrived first, then judge silence, then release events (rate-limited unless `flush`)."""
        pulses = self.receiver.poll(max_messages=max_messages, ping=ping)
        now = self.clock()
        with self.lock:
            self.heartbeat.check(now)
            events: list[BridgeEvent] = self.heartbeat.take()
        self._take_security_events(now)
        events.extend(self._security_events(now, flush))
        events.extend(self.receiver.reject_events(now, flush=flush))
        if pulses or events:
            self._out.append((pulses, events))

    def _take_security_events(self, now: int) -> None:
        if self.zap is not None:
            while self.zap.refused:
                r = self.zap.refused.popleft()
                self._refusals.add((r.fingerprint,), r.t_ns, r.address)
        for name, mon in self._monitors:
            while True:
                try:
                    msg = mon.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                ev = parse_monitor_message(msg)
                error = _HANDSHAKE_EVENTS.get(ev["event"])
                if error is not None:
                    self._handshakes.add((name, error), now, ev["endpoint"].decode("ascii", "replace"))

    def _security_events(self, now: int, flush: bool) -> list[BridgeEvent]:
        out: list[BridgeEvent] = []
        for (fp,), count, total, t0, t1, address in (self._refusals.flush(now) if flush else self._refusals.due(now)):
            self._refusal_address[fp] = address
            out.append(KeyRefusedEvent(now, fp, address, count, total, t0, t1))
        for (sock, error), count, total, t0, t1, address in (self._handshakes.flush(now) if flush
                                                              else self._handshakes.due(now)):
            out.append(HandshakeFailedEvent(now, sock, error, address, count, total, t0, t1))
        return out

    # -- hot path ------------------------------------------------------------
    def publish(self, decision: GateDecision) -> Permit:
        """Send this frame's decision; also records the tip for pulse attribution.

        Once `end_session()` has begun, a permit is sent as a `service_stopping` deny: no pulse may be granted that
        the session record could no longer account for.
        """
        with self.lock:
            if self.stopping and decision.permit:
                decision = self._stopping_deny(decision.t_capture_ns)
            self.track.add(TipSample(decision.t_capture_ns, decision.tip_u, decision.tip_v, decision.zone,
                                     decision.tip_u is not None and decision.tip_v is not None))
            return self.publisher.publish(decision)

    def poll(self) -> BridgePoll:
        """Attributed pulses and events since the last call (non-blocking), oldest first.

        `events` holds typed records, each with `t_ns` (service monotonic
        clock), `event` (the name to record it under) and `record()` (its
        fields): every `LinkEvent` (connected, silent, resumed, restarted),
        `RejectEvent`s (dropped frames by code and sender, at most one per
        code and sender per second), `KeyRefusedEvent`s (a CURVE key not on
        the allow-list, with its fingerprint), `HandshakeFailedEvent`s (a
        peer that could not complete the handshake, e.g. holding the wrong
        service key) and `ServiceStallEvent`s (this service's receive loop
        was away; no controller was blamed for it).
        """
        pulses: list[AttributedPulse] = []
        events: list[BridgeEvent] = []
        while self._out:
            p, e = self._out.popleft()
            pulses.extend(p)
            events.extend(e)
        return BridgePoll(pulses, events)

    # -- state -----------------------------------------------------------------
    @property
    def violations(self) -> list[AttributedPulse]:
        return self.attributor.violations

    def clock_offset_ns(self, controller: str) -> int | None:
        peer = self.receiver.peers.get(controller)
        return peer.clock.offset_ns if peer else None

    def summary(self) -> dict:
        """For the session summary: rejects by code, link state per controller, refused keys, pulse accounting.

        JSON-ready. Totals cover the whole service run (not only what `poll()`
        has released so far).
        """
        with self.lock:
            a = self.attributor
            controllers = {
                name: {"state": h.state, "silent": h.silent, "boot": h.boot, "protocol": h.protocol, "key": h.key,
                       "pulses_announced": h.last.pulses, "rejected_by_controller": h.last.rejected,
                       "gate": h.last.gate, "clock_offset_ns": self.clock_offset_ns(name)}
                for name, h in self.heartbeat.controllers.items()}
            pulses = {"received": a.received, "permitted": a.permitted, "deposited": a.covered, "lifted": a.lifted,
                      "contact_unknown": a.contact_unknown, "violations": len(a.violations), "late": a.late,
                      "duplicates": a.duplicates, "missing_unlisted": a.missing_unlisted,
                      "earlier_session": a.earlier_session, "earlier_session_reports": a.earlier_session_reports}
            stalls = self.heartbeat.stalls
        by_source: dict[str, dict[str, int]] = {}
        for (code, source), n in list(self.receiver.rejects.totals.items()):
            d = by_source.setdefault(source or "", {})
            d[code] = d.get(code, 0) + n
        refused = {fp: {"count": n, "address": self._refusal_address.get(fp, "")}
                   for (fp,), n in list(self._refusals.totals.items())}
        handshakes = {f"{sock}:{err}": n for (sock, err), n in list(self._handshakes.totals.items())}
        return {
            "protocol": f"{protocol.PROTOCOL_VERSION}.{protocol.PROTOCOL_MINOR}",
            "service_boot": self.boot,
            "authenticated": self.keys is not None,
            "permits_published": self.publisher.seq,
            "permits_unsent": self.publisher.dropped,
            "rejects": self.receiver.reject_totals(),
            "rejects_by_source": by_source,
            "refused_keys": refused,
            "handshake_failures": handshakes,
            "controllers": controllers,
            "pulses": pulses,
            "service_stalls": stalls,
            "receiver_errors": self.receiver_errors,
        }

    def end_session(self, final_deny: bool = True) -> None:
        """Stop granting, let the last pulses and their reports in, then record every pulse announced but not reported.

        In order (docs/protocol.md §4.3, "End of a session"):

        1. Unless `final_deny` is False, publish the final deny (`service_stopping`, the session's TTL); from now on
           `publish()` sends only denies.
        2. Keep receiving until no pulse fired under a permit of this session can still be on its way: the last
           permit:true's window (`t_capture_ns + ttl`), or 10 ms (the revocation grace, §6.1) after the final deny
           if that is sooner, plus the report grace (300 ms). Nothing to wait for if that time has passed.
        3. Stop reception, take in what has arrived, and record every pulse announced by the newest status of each
           controller boot and not received as `missing` at once (a lost last report leaves no gap in the numbering
           for a later report to reveal, and after the session nothing later will come).

        The outcomes come out of the next `poll()` (and are in `violations`), with every event still held back by
        the once-a-second limit; so a caller that records the session calls this, then `poll()`, before closing its
        record. Idempotent; `close()` calls it.
        """
        if self.session_ended:
            return
        with self.lock:  # no grant can be published after this
            self.stopping = True
        if final_deny:
            self._publish_final_deny()
        t_quiet = self.publisher.t_grant_end_ns
        if t_quiet is not None:
            if self.final_deny is not None:
                t_quiet = min(t_quiet, self.final_deny.t_publish_ns
                              + int(self.attributor.revocation_grace_ms * 1_000_000))
            wait_s = (t_quiet + int(self.attributor.report_grace_ms * 1_000_000) - self.clock()) / 1e9
            t_end = time.monotonic() + min(wait_s, MAX_END_WAIT_S)  # real time: bounded whatever `clock` is
            while self._thread.is_alive() and time.monotonic() < t_end:
                time.sleep(min(0.01, max(0.0, t_end - time.monotonic())))
        self.session_ended = True
        self._stop.set()
        self._thread.join(timeout=5)
        socket_is_ours = not self._thread.is_alive()  # a stuck receiver keeps it: account with what it took in
        if socket_is_ours:
            try:
                self._turn(flush=True, max_messages=int(self.router.getsockopt(zmq.RCVHWM)), ping=False)
            except Exception:  # a last bad frame must not stop the accounting
                self.receiver_errors += 1
        with self.lock:
            pulses = self.attributor.flag_all_announced()
        if pulses:
            self._out.append((pulses, []))

    def _stopping_deny(self, t_capture_ns: int) -> GateDecision:
        """A `service_stopping` deny with the TTL the session's permits carried (the plan's), not the default."""
        d = deny(self.policy, Reason.SERVICE_STOPPING, t_capture_ns=t_capture_ns, now_ns=self.clock())
        ttl = self.publisher.last_ttl_ms
        return dataclasses.replace(d, ttl_ms=ttl) if ttl is not None else d

    def _publish_final_deny(self) -> None:
        if self.final_deny is not None:
            return
        now = self.clock()
        with self.lock:
            self.final_deny = self.publisher.publish(self._stopping_deny(now))
        self.pub.linger = 100

    def close(self, final_deny: bool = True) -> None:
        """Say deny once more (so controllers stop before their TTL runs out), account for every pulse, close."""
        if self.closed:
            return
        self.end_session(final_deny=final_deny)
        self._teardown()
        self.closed = True

    def _teardown(self) -> None:
        if self._monitors:
            for s in (self.pub, self.router):
                try:
                    s.disable_monitor()
                except zmq.ZMQError:
                    pass
        for _, mon in self._monitors:
            mon.close(0)
        for s in (self.pub, self.router):
            s.close()
        if self.zap is not None:
            self.zap.stop()
        self.ctx.term()
