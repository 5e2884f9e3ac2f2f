"""Is each controller alive? Status messages are heartbeats; silence is an event.

The service cannot make a silent controller stop firing (the controller's own
watchdog does that); what it can do is show the practitioner and record it,
so a session with a mute controller is never mistaken for a clean one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guidance.device_bridge.protocol import Status


@dataclass(frozen=True)
class LinkEvent:
    t_ns: int
    controller: str
    kind: str  # "connected", "silent", "resumed", "restarted"
    detail: str = ""


@dataclass
class ControllerHealth:
    controller: str
    boot: str
    t_last_ns: int
    last: Status
    silent: bool = False
    key: str | None = None  # CURVE public key (Z85) the status came with


@dataclass
class HeartbeatMonitor:
    timeout_ms: float = 300.0
    controllers: dict[str, ControllerHealth] = field(default_factory=dict)
    events: list[LinkEvent] = field(default_factory=list)

    def on_status(self, st: Status, t_rx_ns: int, key: str | None = None) -> None:
        h = self.controllers.get(st.controller)
        if h is None:
            self.controllers[st.controller] = ControllerHealth(st.controller, st.boot, t_rx_ns, st, key=key)
            self.events.append(LinkEvent(t_rx_ns, st.controller, "connected", st.boot))
            return
        if h.boot != st.boot:
            self.events.append(LinkEvent(t_rx_ns, st.controller, "restarted", f"{h.boot}->{st.boot}"))
            h.boot = st.boot
        elif h.silent:
            self.events.append(LinkEvent(t_rx_ns, st.controller, "resumed", ""))
        h.silent, h.t_last_ns, h.last, h.key = False, t_rx_ns, st, key

    def check(self, now_ns: int) -> list[LinkEvent]:
        """Mark controllers silent past the timeout; returns the new events."""
        new = []
        for h in self.controllers.values():
            if not h.silent and (now_ns - h.t_last_ns) / 1e6 > self.timeout_ms:
                h.silent = True
                new.append(LinkEvent(now_ns, h.controller, "silent", f"{(now_ns - h.t_last_ns) / 1e6:.0f} ms"))
        self.events.extend(new)
        return new

    def any_silent(self) -> bool:
        return any(h.silent for h in self.controllers.values())
