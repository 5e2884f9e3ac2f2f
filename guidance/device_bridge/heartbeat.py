"""Is each controller alive? Status messages are heartbeats; silence is an event.

The service cannot make a silent controller stop firing (the controller's own
watchdog does that); what it can do is show the practitioner and record it,
so a session with a mute controller is never mistaken for a clean one.

Every change of a controller's link — `connected`, `silent`, `resumed`,
`restarted` — becomes a `LinkEvent`, kept in `events` (the whole history)
and handed out once by `take()` (what the bridge passes on to `poll()`).

The service's own stalls are not the controller's silence. `check(now)` is
called by the receive loop every few milliseconds, after it has read what
arrived; with `stall_ms` set (BridgeService sets a third of the timeout),
a gap between two calls longer than that means the loop
itself was away (the process was stopped, the machine starved it), and
statuses sent meanwhile may still be on their way through the kernel and
libzmq. Then no controller is blamed: each gets a fresh `timeout_ms` from
the moment the loop is back, and a `ServiceStallEvent` says what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guidance.device_bridge.events import BridgeEvent, LinkEvent, ServiceStallEvent
from guidance.device_bridge.protocol import Status

__all__ = ["ControllerHealth", "HeartbeatMonitor", "LinkEvent"]


@dataclass
class ControllerHealth:
    controller: str
    boot: str
    t_last_ns: int
    last: Status
    silent: bool = False
    key: str | None = None  # the allow-list name of the CURVE key the status came with (None: insecure)
    protocol: str = ""  # version its messages speak, "1.0" or "1.1"
    state: str = "connected"  # last link event kind


def _protocol_note(protocol: str) -> str:
    return "protocol 1.0: no contact sense, its pulses deposit no coverage" if protocol == "1.0" else \
        f"protocol {protocol}"


@dataclass
class HeartbeatMonitor:
    timeout_ms: float = 300.0
    stall_ms: float | None = None  # a gap between check() calls longer than this is the service's own stall (None: off)
    controllers: dict[str, ControllerHealth] = field(default_factory=dict)
    events: list[BridgeEvent] = field(default_factory=list)
    stalls: int = 0
    _new: list[BridgeEvent] = field(default_factory=list)
    _t_last_check: int | None = None

    def _emit(self, e: BridgeEvent) -> None:
        self.events.append(e)
        self._new.append(e)

    def on_status(self, st: Status, t_rx_ns: int, key: str | None = None) -> None:
        h = self.controllers.get(st.controller)
        if h is None:
            h = ControllerHealth(st.controller, st.boot, t_rx_ns, st, key=key, protocol=st.version)
            self.controllers[st.controller] = h
            self._emit(LinkEvent(t_rx_ns, st.controller, "connected", f"boot {st.boot}, {_protocol_note(st.version)}",
                                 st.boot, st.version))
            return
        if h.boot != st.boot:
            self._emit(LinkEvent(t_rx_ns, st.controller, "restarted",
                                 f"{h.boot}->{st.boot}, {_protocol_note(st.version)}", st.boot, st.version))
            h.boot, h.state = st.boot, "restarted"
        elif h.silent:
            self._emit(LinkEvent(t_rx_ns, st.controller, "resumed", f"after {(t_rx_ns - h.t_last_ns) / 1e6:.0f} ms",
                                 st.boot, st.version))
            h.state = "resumed"
        h.silent, h.t_last_ns, h.last, h.key, h.protocol = False, t_rx_ns, st, key, st.version

    def check(self, now_ns: int) -> list[BridgeEvent]:
        """Mark controllers silent past the timeout (unless the service itself was away); returns the new events.

        Call it after handling what has arrived, so a status that came in is
        counted before its sender is judged.
        """
        new: list[BridgeEvent] = []
        last, self._t_last_check = self._t_last_check, now_ns
        if self.stall_ms is not None and last is not None and now_ns - last > self.stall_ms * 1e6:
            self.stalls += 1
            for h in self.controllers.values():
                h.t_last_ns = max(h.t_last_ns, now_ns)  # a fresh timeout from the moment we are back
            e = ServiceStallEvent(now_ns, round((now_ns - last) / 1e6, 3))
            self._emit(e)
            new.append(e)
            return new
        for h in self.controllers.values():
            if not h.silent and (now_ns - h.t_last_ns) / 1e6 > self.timeout_ms:
                h.silent, h.state = True, "silent"
                silent = LinkEvent(now_ns, h.controller, "silent", f"no status for {(now_ns - h.t_last_ns) / 1e6:.0f} ms",
                                   h.boot, h.protocol)
                self._emit(silent)
                new.append(silent)
        return new

    def take(self) -> list[BridgeEvent]:
        """Every event since the last call (connected, restarted and resumed included), oldest first."""
        out, self._new = self._new, []
        return out

    def any_silent(self) -> bool:
        return any(h.silent for h in self.controllers.values())
