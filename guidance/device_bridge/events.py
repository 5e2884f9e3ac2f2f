"""What the bridge tells the run loop besides pulses: typed records, ready for the session recording.

Every record has `t_ns` (service monotonic clock), `event` (the name to
record it under), and `record()` (its other fields as a JSON-ready dict), so
the run loop can write any of them with one line:

    recorder.add_event(e.event, e.t_ns, **e.record())

For the display and for code written before these records existed, each one
also has `kind`, `controller` and `detail` (a LinkEvent's kind is the link
state; the others say what they are: "rejected", "key_refused",
"handshake_failed", "service_stall").

Floods stay bounded: rejected frames, refused keys and failed handshakes are
counted per (kind, source) and reported at most once per `window_ns` (1 s)
each — the first at once as a record of its own (count 1), the rest as one
record per window carrying their count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar


@dataclass(frozen=True)
class BridgeEvent:
    t_ns: int
    EVENT: ClassVar[str] = ""

    @property
    def event(self) -> str:
        return self.EVENT

    def record(self) -> dict:
        """Fields for the recording (everything but t_ns)."""
        d = asdict(self)
        d.pop("t_ns")
        return d


@dataclass(frozen=True)
class LinkEvent(BridgeEvent):
    """A controller's link changed: connected, silent, resumed, restarted (new boot).

    `boot` is the controller boot it concerns, `protocol` the version its
    messages speak ("1.0": no contact sense, its pulses deposit no coverage),
    `detail` a human-readable note.
    """

    EVENT: ClassVar[str] = "link"
    controller: str
    kind: str  # "connected", "silent", "resumed", "restarted"
    detail: str = ""
    boot: str = ""
    protocol: str = ""

    def record(self) -> dict:
        # the recording's event name is "link"; the link state goes under "state"
        return {"state": self.kind, "controller": self.controller, "detail": self.detail, "boot": self.boot,
                "protocol": self.protocol}


@dataclass(frozen=True)
class RejectEvent(BridgeEvent):
    """Frames from controllers the service dropped: `count` of reject code `code` since the last such record.

    `source` is the controller id bound to the sender's key (None without
    CURVE, where the sender is unknown); `total` counts this code and source
    for the whole service run; `t_first_ns`/`t_last_ns` span the rejects this
    record counts; `detail` is the last one's reason (truncated).
    """

    EVENT: ClassVar[str] = "rejected"
    code: str
    count: int
    total: int
    source: str | None
    t_first_ns: int
    t_last_ns: int
    detail: str = ""

    @property
    def kind(self) -> str:
        return "rejected"

    @property
    def controller(self) -> str | None:
        return self.source


@dataclass(frozen=True)
class KeyRefusedEvent(BridgeEvent):
    """CURVE handshakes the service refused (ZAP 400): a peer offered a key that is not on the allow-list.

    `fingerprint` is the first 8 Z85 characters of the offered public key
    (grep the .key files for it), `address` the peer's IP address.
    """

    EVENT: ClassVar[str] = "key_refused"
    fingerprint: str
    address: str
    count: int
    total: int
    t_first_ns: int
    t_last_ns: int
    detail: str = "controller key refused"

    @property
    def kind(self) -> str:
        return "key_refused"

    @property
    def controller(self) -> str | None:
        return None


@dataclass(frozen=True)
class HandshakeFailedEvent(BridgeEvent):
    """CURVE handshakes that failed before any key could be judged (libzmq socket monitor).

    Typically a controller configured with the wrong service public key: the
    service cannot decrypt its HELLO (`error` "protocol"). `socket` is
    "permit" or "report", `address` the service endpoint it arrived on.
    """

    EVENT: ClassVar[str] = "handshake_failed"
    socket: str
    error: str
    address: str
    count: int
    total: int
    t_first_ns: int
    t_last_ns: int

    @property
    def kind(self) -> str:
        return "handshake_failed"

    @property
    def controller(self) -> str | None:
        return None

    @property
    def detail(self) -> str:
        return f"{self.socket}: {self.error}"


@dataclass(frozen=True)
class ServiceStallEvent(BridgeEvent):
    """The service's own receive loop did not run for `stalled_ms` (process stopped, machine overloaded).

    Silence is not blamed on controllers for that time: each one gets a fresh
    heartbeat timeout from `t_ns`, the moment the service was back.
    """

    EVENT: ClassVar[str] = "service_stall"
    stalled_ms: float

    @property
    def kind(self) -> str:
        return "service_stall"

    @property
    def controller(self) -> str | None:
        return None

    @property
    def detail(self) -> str:
        return f"service receive loop away {self.stalled_ms:.0f} ms"


class RateLimitedCounter:
    """Counts occurrences per key and releases at most one record per key per window.

    `add(key, t_ns, detail)` counts one; `due(t_ns)` returns (key, count,
    total, t_first, t_last, detail) for every record ready to go out;
    `flush(t_ns)` returns all pending. The first occurrence of a key (or the
    first after a quiet window) is a record of its own, `count` = 1, due at
    once, however many more arrive before the next `due()`: so a single
    reject is reported without a second's delay and the first record always
    says 1 (docs/protocol.md §7.3). Every later occurrence is counted into
    the next record, released a window after the previous one: a flood
    becomes one record per key per window. Single-threaded: the bridge's
    receive thread owns it.
    """

    def __init__(self, window_ns: int = 1_000_000_000):
        self.window_ns = window_ns
        self.totals: dict[tuple, int] = {}
        self._ready: list[tuple[tuple, int, int, int, int, str]] = []  # first occurrences, due at once
        self._pending: dict[tuple, list] = {}  # key -> [count, t_first, t_last, detail, total]
        self._t_last_out: dict[tuple, int] = {}

    def add(self, key: tuple, t_ns: int, detail: str = "", n: int = 1) -> None:
        self.totals[key] = total = self.totals.get(key, 0) + n
        p = self._pending.get(key)
        last = self._t_last_out.get(key)
        if p is None and (last is None or t_ns - last >= self.window_ns):
            self._ready.append((key, n, total, t_ns, t_ns, detail))  # a record of its own, out at once
            self._t_last_out[key] = t_ns  # the window counts from this occurrence
        elif p is None:
            self._pending[key] = [n, t_ns, t_ns, detail, total]
        else:
            p[0] += n
            p[2] = t_ns
            p[3] = detail
            p[4] = total

    def due(self, t_ns: int) -> list[tuple[tuple, int, int, int, int, str]]:
        out, self._ready = self._ready, []
        for key in list(self._pending):
            last = self._t_last_out.get(key)
            if last is None or t_ns - last >= self.window_ns:
                out.append(self._take(key, t_ns))
        return out

    def flush(self, t_ns: int) -> list[tuple[tuple, int, int, int, int, str]]:
        out, self._ready = self._ready, []
        return out + [self._take(key, t_ns) for key in list(self._pending)]

    def _take(self, key: tuple, t_ns: int) -> tuple[tuple, int, int, int, int, str]:
        count, t_first, t_last, detail, total = self._pending.pop(key)
        self._t_last_out[key] = t_ns
        return key, count, total, t_first, t_last, detail


EVENT_TYPES = (LinkEvent, RejectEvent, KeyRefusedEvent, HandshakeFailedEvent, ServiceStallEvent)
EVENT_NAMES = tuple(cls.EVENT for cls in EVENT_TYPES)
