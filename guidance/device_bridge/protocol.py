"""Wire messages between the guidance service and a device controller (protocol 1.1).

One message is one ZeroMQ frame holding one JSON object, ASCII, no whitespace,
keys in the fixed order given by each dataclass (docs/protocol.md lists it).
A fixed canonical form means the test vectors can be checked byte for byte,
and a firmware engineer can build or compare messages with printf.

Versions: `"v"` is the major version (1); a change of meaning of an existing
key increments it, and a receiver rejects every major it does not speak.
`"minor"` (absent = 0) counts additive changes within a major: 1.1 added
`contact` to `pulse` (required from minor 1 on). Every message says which
minor its sender speaks; a receiver decodes any minor of its major, reading
the fields that minor defines (docs/protocol.md §3.1).

Decoding is strict about what matters for safety (version, type, field types,
finite and bounded numbers, id syntax, sequence numbers from 1, sizes,
duplicate keys) and lenient about unknown extra keys, so that additive
changes within a major do not brick old controllers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

PROTOCOL_VERSION = 1  # major: the "v" key
PROTOCOL_MINOR = 1  # what this implementation speaks and sends: "minor":1
MAX_MESSAGE_BYTES = 4096  # ZMQ_MAXMSGSIZE on every socket; a permit is ~350 bytes.
ID_MAX_CHARS = 64
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")  # service, controller, reason, zone, gate
BOOT_HEX_CHARS = 16
FLOAT_DECIMALS = 3
NUM_LIMIT = 1e12  # |x| of any non-integer field stays below this (fixed notation, 15 significant digits)
INT_LIMIT = 2**63
# A controller fires at most this often (per controller boot, on its own clock); a pulse following the
# previous one of the same boot sooner than 1/MAX_PULSE_RATE_HZ is a `rate_exceeded` violation.
MAX_PULSE_RATE_HZ = 200.0
MIN_PULSE_INTERVAL_NS = int(round(1e9 / MAX_PULSE_RATE_HZ))


class ProtocolError(ValueError):
    """A message that must be dropped; `code` is the stable counter name."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def wire_num(x: float | None) -> float | None:
    """Round for the wire: the double nearest to x rounded to 3 decimals; None for NaN, ±inf or |x| ≥ 1e12.

    json.dumps writes it as the shortest decimal that reads back to the same
    double (Python repr); for |x| < 1e12 that equals C's `printf("%.3f")`
    with trailing zeros stripped down to one decimal ("60.0", "7.25", "3.672"),
    which is the rule docs/protocol.md §3 gives.
    """
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    r = round(x, FLOAT_DECIMALS)
    if abs(r) >= NUM_LIMIT:
        return None
    return 0.0 if r == 0 else r  # no "-0.0" on the wire


_num = wire_num  # the old private name


def format_num(x: float) -> str:
    """The documented formatting rule written out without json/repr: what a firmware sender does."""
    s = "%.3f" % x
    s = s.rstrip("0")
    if s.endswith("."):
        s += "0"
    return "0.0" if s == "-0.0" else s


# Field kinds used by the encoder and decoder (a "?" suffix: null allowed):
#   id    string matching ID_PATTERN      boot  16 lowercase hex digits
#   seq   integer 1 .. 2**63-1            int   integer 0 .. 2**63-1
#   bool  true/false                      num   finite number, |x| < 1e12 (an integer is accepted)
@dataclass(frozen=True)
class _Message:
    TYPE: ClassVar[str] = ""
    KINDS: ClassVar[dict[str, str]] = {}
    SINCE: ClassVar[dict[str, int]] = {}  # field -> minor version that introduced it (absent: 1.0)
    if TYPE_CHECKING:
        # Every message type declares this same field last. Declared here for the type checker only: a real
        # field here would come first in every subclass's field order (and repr).
        minor: int = field(default=PROTOCOL_MINOR, kw_only=True)

    @classmethod
    def fields_for(cls, minor: int) -> list[tuple[str, str]]:
        """The fields a message of this minor version carries, in wire order."""
        return [(n, k) for n, k in cls.KINDS.items() if cls.SINCE.get(n, 0) <= minor]

    def to_obj(self) -> dict[str, Any]:
        minor = self.minor
        obj: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": self.TYPE}
        if minor:
            obj["minor"] = minor
        for name, kind in self.fields_for(minor):
            val = getattr(self, name)
            obj[name] = wire_num(val) if kind.rstrip("?") == "num" else val
        return obj

    def encode(self) -> bytes:
        """The canonical bytes; raises ProtocolError for anything a receiver would reject."""
        obj = self.to_obj()
        _check("minor", "int", self.minor)
        for name, kind in self.fields_for(self.minor):
            _check(name, kind, obj[name])
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
        if len(data) > MAX_MESSAGE_BYTES:
            raise ProtocolError("oversize", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
        return data

    @property
    def version(self) -> str:
        return f"{PROTOCOL_VERSION}.{self.minor}"


@dataclass(frozen=True)
class Permit(_Message):
    """Service → controller, one per processed frame: may a pulse fire now?

    `tip_u`, `tip_v` are the tip's position on the treatment chart in chart
    millimetres (not 0..1 units).
    """

    TYPE: ClassVar[str] = "permit"
    KINDS: ClassVar[dict[str, str]] = {
        "service": "id", "boot": "boot", "seq": "seq", "t_capture_ns": "int", "t_publish_ns": "int",
        "ttl_ms": "int", "permit": "bool", "reason": "id", "zone": "id?", "tip_u": "num?", "tip_v": "num?",
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
    minor: int = field(default=PROTOCOL_MINOR, kw_only=True)


@dataclass(frozen=True)
class Pulse(_Message):
    """Controller → service, one per pulse the handpiece delivered.

    `contact` (1.1, required from minor 1): the controller's own skin-contact
    sense when the pulse fired. A 1.0 pulse has none (`contact=None`).
    """

    TYPE: ClassVar[str] = "pulse"
    KINDS: ClassVar[dict[str, str]] = {
        "controller": "id", "boot": "boot", "pulse_seq": "seq", "t_ctrl_ns": "int", "duration_us": "int",
        "intensity_pct": "num", "energy_mj": "num?", "permit_boot": "boot?", "permit_seq": "seq?",
        "contact": "bool",
    }
    SINCE: ClassVar[dict[str, int]] = {"contact": 1}
    controller: str
    boot: str
    pulse_seq: int
    t_ctrl_ns: int
    duration_us: int
    intensity_pct: float
    energy_mj: float | None
    permit_boot: str | None
    permit_seq: int | None
    contact: bool | None = None
    minor: int = field(default=PROTOCOL_MINOR, kw_only=True)


@dataclass(frozen=True)
class Status(_Message):
    """Controller → service heartbeat: alive, and what its own gate thinks."""

    TYPE: ClassVar[str] = "status"
    KINDS: ClassVar[dict[str, str]] = {
        "controller": "id", "boot": "boot", "status_seq": "seq", "t_ctrl_ns": "int", "may_fire": "bool",
        "gate": "id", "trigger": "bool", "permit_seq": "seq?", "pulses": "int", "rejected": "int",
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
    minor: int = field(default=PROTOCOL_MINOR, kw_only=True)


@dataclass(frozen=True)
class Ping(_Message):
    """Service → controller clock probe; t1 is the service clock at send."""

    TYPE: ClassVar[str] = "ping"
    KINDS: ClassVar[dict[str, str]] = {"service": "id", "boot": "boot", "ping_seq": "seq", "t1_ns": "int"}
    service: str
    boot: str
    ping_seq: int
    t1_ns: int
    minor: int = field(default=PROTOCOL_MINOR, kw_only=True)


@dataclass(frozen=True)
class Pong(_Message):
    """Controller → service echo: t2 = controller clock at receive, t3 = at send."""

    TYPE: ClassVar[str] = "pong"
    KINDS: ClassVar[dict[str, str]] = {
        "controller": "id", "boot": "boot", "ping_seq": "seq", "t1_ns": "int", "t2_ns": "int", "t3_ns": "int",
    }
    controller: str
    boot: str
    ping_seq: int
    t1_ns: int
    t2_ns: int
    t3_ns: int
    minor: int = field(default=PROTOCOL_MINOR, kw_only=True)


MESSAGE_TYPES: dict[str, type[_Message]] = {cls.TYPE: cls for cls in (Permit, Pulse, Status, Ping, Pong)}


def valid_id(text: object) -> bool:
    """Does `text` match the id syntax (service and controller ids, codes, zones): 1–64 of [A-Za-z0-9._-]?"""
    return type(text) is str and ID_PATTERN.match(text) is not None


def _check(name: str, kind: str, val: Any) -> Any:
    nullable = kind.endswith("?")
    kind = kind.rstrip("?")
    if val is None:
        if nullable:
            return None
        raise ProtocolError("malformed", f"{name} is null or missing")
    if kind in ("int", "seq"):
        low = 1 if kind == "seq" else 0
        if type(val) is not int or val < low or val >= INT_LIMIT:
            raise ProtocolError("malformed", f"{name} must be an integer {low}..2^63-1")
        return val
    if kind == "bool":
        if type(val) is not bool:
            raise ProtocolError("malformed", f"{name} must be true or false")
        return val
    if kind == "num":
        if type(val) not in (int, float) or not math.isfinite(val) or abs(val) >= NUM_LIMIT:
            raise ProtocolError("malformed", f"{name} must be a finite number below 1e12 in magnitude")
        return float(val)
    if kind == "id":
        if type(val) is not str or ID_PATTERN.match(val) is None:
            raise ProtocolError("malformed", f"{name} must be 1..{ID_MAX_CHARS} of [A-Za-z0-9._-]")
        return val
    if kind == "boot":
        if type(val) is not str or len(val) != BOOT_HEX_CHARS or any(c not in "0123456789abcdef" for c in val):
            raise ProtocolError("malformed", f"{name} must be {BOOT_HEX_CHARS} lowercase hex digits")
        return val
    raise AssertionError(kind)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ProtocolError("malformed", "duplicate key")
    return obj


def decode(data: bytes, expect: tuple[str, ...] | None = None) -> _Message:
    """Parse one frame; raises ProtocolError (never anything else) if it must be dropped.

    Check order (docs/protocol.md §5.1): size → ASCII JSON object without
    duplicate keys or NaN/Infinity → `v` (malformed if missing or not an
    integer, wrong_version if not 1) → `type` (malformed if missing or
    unknown, unexpected_type if not in `expect`) → `minor` → every field of
    that type and minor, in wire order (malformed).
    """
    try:
        if len(data) > MAX_MESSAGE_BYTES:
            raise ProtocolError("oversize", f"{len(data)} bytes")
        try:
            obj = json.loads(bytes(data).decode("ascii"), parse_constant=_reject_constant,
                             object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ProtocolError("malformed", f"not ASCII JSON: {exc}") from None
        if type(obj) is not dict:
            raise ProtocolError("malformed", "not a JSON object")
        v = obj.get("v")
        if type(v) is not int:
            raise ProtocolError("malformed", "missing integer v")
        if v != PROTOCOL_VERSION:
            raise ProtocolError("wrong_version", f"v={v}, this side speaks {PROTOCOL_VERSION}")
        type_name = obj.get("type")
        cls = MESSAGE_TYPES.get(type_name) if type(type_name) is str else None
        if cls is None:
            raise ProtocolError("malformed", f"unknown type {str(obj.get('type'))[:32]!r}")
        if expect is not None and cls.TYPE not in expect:
            raise ProtocolError("unexpected_type", f"{cls.TYPE} not expected here")
        minor = _check("minor", "int", obj.get("minor", 0))
        kwargs = {}
        for name, kind in cls.fields_for(minor):
            if name not in obj:
                raise ProtocolError("malformed", f"missing {name}")
            kwargs[name] = _check(name, kind, obj[name])
        return cls(**kwargs, minor=minor)
    except ProtocolError:
        raise
    except Exception as exc:  # anything odd in the input is a drop, never a crash
        raise ProtocolError("malformed", f"{type(exc).__name__}") from None


def _reject_constant(name: str) -> Any:
    raise ProtocolError("malformed", f"non-finite number {name}")
