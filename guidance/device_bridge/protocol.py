"""Wire messages between the guidance service and a device controller (protocol v1).

One message is one ZeroMQ frame holding one JSON object, UTF-8, no whitespace,
keys in the fixed order given by each dataclass (docs/protocol.md lists it).
A fixed canonical form means the test vectors in the doc can be checked byte
for byte, and a firmware engineer can build or compare messages with printf.

Decoding is strict about what matters for safety (version, type, field types,
finite numbers, sizes) and lenient about unknown extra keys, so that additive
changes within a version do not brick old controllers; any change of meaning
bumps `PROTOCOL_VERSION`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 4096  # ZMQ_MAXMSGSIZE on every socket; a permit is ~350 bytes.
ID_MAX_CHARS = 64
BOOT_HEX_CHARS = 16
FLOAT_DECIMALS = 3


class ProtocolError(ValueError):
    """A message that must be dropped; `code` is the stable counter name."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _num(x: float | None) -> float | None:
    """Round for the wire; NaN/inf are never sent (they become null)."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    r = round(x, FLOAT_DECIMALS)
    return 0.0 if r == 0 else r  # no "-0.0" on the wire


# Field kinds used by the decoder: int (not bool), bool, str, num (int or
# float, finite), and their nullable variants ("?" suffix).
@dataclass(frozen=True)
class _Message:
    TYPE: ClassVar[str] = ""
    KINDS: ClassVar[dict[str, str]] = {}

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": self.TYPE}
        for f in fields(self):
            val = getattr(self, f.name)
            kind = self.KINDS[f.name].rstrip("?")
            obj[f.name] = _num(val) if kind == "num" else val
        return obj

    def encode(self) -> bytes:
        data = json.dumps(self.to_obj(), separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
        if len(data) > MAX_MESSAGE_BYTES:
            raise ProtocolError("oversize", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
        return data


@dataclass(frozen=True)
class Permit(_Message):
    """Service → controller, one per processed frame: may a pulse fire now?"""

    TYPE: ClassVar[str] = "permit"
    KINDS: ClassVar[dict[str, str]] = {
        "service": "str", "boot": "boot", "seq": "int", "t_capture_ns": "int", "t_publish_ns": "int",
        "ttl_ms": "int", "permit": "bool", "reason": "str", "zone": "str?", "tip_u": "num?", "tip_v": "num?",
        "boundary_mm": "num?", "required_mm": "num?", "speed_mm_s": "num?",
    }
    service: str
    boot: str
    seq: int
    t_capture_ns: int
    t_publish_ns: int
    ttl_ms: int
    permit: bool
    reason: str
    zone: str | None
    tip_u: float | None
    tip_v: float | None
    boundary_mm: float | None
    required_mm: float | None
    speed_mm_s: float | None


@dataclass(frozen=True)
class Pulse(_Message):
    """Controller → service, one per pulse actually delivered to the skin."""

    TYPE: ClassVar[str] = "pulse"
    KINDS: ClassVar[dict[str, str]] = {
        "controller": "str", "boot": "boot", "pulse_seq": "int", "t_ctrl_ns": "int", "duration_us": "int",
        "intensity_pct": "num", "energy_mj": "num?", "permit_boot": "boot?", "permit_seq": "int?",
    }
    controller: str
    boot: str
    pulse_seq: int
    t_ctrl_ns: int
    duration_us: int
    intensity_pct: float
    energy_mj: float | None
    permit_boot: str | None
    permit_seq: int | None


@dataclass(frozen=True)
class Status(_Message):
    """Controller → service heartbeat: alive, and what its own gate thinks."""

    TYPE: ClassVar[str] = "status"
    KINDS: ClassVar[dict[str, str]] = {
        "controller": "str", "boot": "boot", "status_seq": "int", "t_ctrl_ns": "int", "may_fire": "bool",
        "gate": "str", "trigger": "bool", "permit_seq": "int?", "pulses": "int", "rejected": "int",
    }
    controller: str
    boot: str
    status_seq: int
    t_ctrl_ns: int
    may_fire: bool
    gate: str
    trigger: bool
    permit_seq: int | None
    pulses: int
    rejected: int


@dataclass(frozen=True)
class Ping(_Message):
    """Service → controller clock probe; t1 is the service clock at send."""

    TYPE: ClassVar[str] = "ping"
    KINDS: ClassVar[dict[str, str]] = {"service": "str", "boot": "boot", "ping_seq": "int", "t1_ns": "int"}
    service: str
    boot: str
    ping_seq: int
    t1_ns: int


@dataclass(frozen=True)
class Pong(_Message):
    """Controller → service echo: t2 = controller clock at receive, t3 = at send."""

    TYPE: ClassVar[str] = "pong"
    KINDS: ClassVar[dict[str, str]] = {
        "controller": "str", "boot": "boot", "ping_seq": "int", "t1_ns": "int", "t2_ns": "int", "t3_ns": "int",
    }
    controller: str
    boot: str
    ping_seq: int
    t1_ns: int
    t2_ns: int
    t3_ns: int


MESSAGE_TYPES: dict[str, type[_Message]] = {cls.TYPE: cls for cls in (Permit, Pulse, Status, Ping, Pong)}


def _check(name: str, kind: str, val: Any) -> Any:
    nullable = kind.endswith("?")
    kind = kind.rstrip("?")
    if val is None:
        if nullable:
            return None
        raise ProtocolError("malformed", f"{name} is null")
    if kind == "int":
        if type(val) is not int or val < 0 or val >= 2**63:
            raise ProtocolError("malformed", f"{name} must be a non-negative 64-bit integer")
        return val
    if kind == "bool":
        if type(val) is not bool:
            raise ProtocolError("malformed", f"{name} must be true or false")
        return val
    if kind == "num":
        if type(val) not in (int, float) or not math.isfinite(val):
            raise ProtocolError("malformed", f"{name} must be a finite number")
        return float(val)
    if kind == "str":
        if type(val) is not str or not (0 < len(val) <= ID_MAX_CHARS):
            raise ProtocolError("malformed", f"{name} must be a string of 1..{ID_MAX_CHARS} characters")
        return val
    if kind == "boot":
        if type(val) is not str or len(val) != BOOT_HEX_CHARS or any(c not in "0123456789abcdef" for c in val):
            raise ProtocolError("malformed", f"{name} must be {BOOT_HEX_CHARS} lowercase hex digits")
        return val
    raise AssertionError(kind)


def decode(data: bytes, expect: tuple[str, ...] | None = None) -> _Message:
    """Parse one frame; raises ProtocolError (never anything else) if it must be dropped."""
    try:
        if len(data) > MAX_MESSAGE_BYTES:
            raise ProtocolError("oversize", f"{len(data)} bytes")
        try:
            obj = json.loads(bytes(data).decode("ascii"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ProtocolError("malformed", f"not ASCII JSON: {exc}") from None
        if type(obj) is not dict:
            raise ProtocolError("malformed", "not a JSON object")
        v = obj.get("v")
        if type(v) is not int:
            raise ProtocolError("malformed", "missing integer v")
        if v != PROTOCOL_VERSION:
            raise ProtocolError("wrong_version", f"v={v}, this side speaks {PROTOCOL_VERSION}")
        cls = MESSAGE_TYPES.get(obj.get("type")) if type(obj.get("type")) is str else None
        if cls is None:
            raise ProtocolError("malformed", f"unknown type {obj.get('type')!r}")
        if expect is not None and cls.TYPE not in expect:
            raise ProtocolError("unexpected_type", f"{cls.TYPE} not expected here")
        kwargs = {}
        for name, kind in cls.KINDS.items():
            if name not in obj:
                raise ProtocolError("malformed", f"missing {name}")
            kwargs[name] = _check(name, kind, obj[name])
        return cls(**kwargs)
    except ProtocolError:
        raise
    except Exception as exc:  # anything odd in the input is a drop, never a crash
        raise ProtocolError("malformed", f"{type(exc).__name__}") from None


def _reject_constant(name: str) -> Any:
    raise ProtocolError("malformed", f"non-finite number {name}")
