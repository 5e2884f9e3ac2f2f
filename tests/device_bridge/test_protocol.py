"""Protocol v1: the doc's test vectors byte for byte, and hostile input never crashes a decoder."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from guidance.device_bridge import protocol
from guidance.device_bridge.controller.gate import ControllerGate, Verdict
from guidance.device_bridge.protocol import Permit, ProtocolError, Pulse

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BLOCK = re.compile(r"```vector (valid|invalid) (\w+)\n(.*?)\n```", re.S)


def vectors():
    return [(m.group(1), m.group(2), m.group(3).encode("ascii")) for m in BLOCK.finditer(DOC.read_text())]


def test_doc_has_all_vectors():
    names = {(kind, name) for kind, name, _ in vectors()}
    for t in ("permit_ok", "permit_deny", "permit_deny_no_tip", "pulse", "pulse_no_permit", "status", "ping", "pong"):
        assert ("valid", t) in names
    assert sum(1 for k, _, _ in vectors() if k == "invalid") >= 4


@pytest.mark.parametrize("kind,name,data", vectors(), ids=lambda x: x if isinstance(x, str) else None)
def test_vector(kind, name, data):
    if kind == "valid":
        msg = protocol.decode(data)
        assert msg.encode() == data  # canonical form: byte for byte
    else:
        with pytest.raises(ProtocolError) as exc:
            protocol.decode(data, expect=("permit",))
        assert exc.value.code == name


def test_encoder_builds_the_documented_permit_from_fields():
    data = dict((n, d) for k, n, d in vectors() if k == "valid")["permit_ok"]
    p = Permit("guidance", "9f2c4e1a7b3d5c60", 1042, 5_000_000_000, 5_000_004_200, 50, True, "ok",
               "forehead_left", 0.41249, 0.2337, 7.25, 3.5, 20)
    assert p.encode() == data


def test_nonfinite_numbers_are_never_sent():
    p = Permit("s", "0" * 16, 1, 1, 2, 50, False, "tip_lost", None, float("nan"), float("inf"), -0.0, None, None)
    obj = protocol.decode(p.encode())
    assert obj.tip_u is None and obj.tip_v is None and obj.boundary_mm == 0.0
    assert b"NaN" not in p.encode() and b"-0.0" not in p.encode()


def test_oversize_is_refused_both_ways():
    big = Pulse("c" * 64, "0" * 16, 1, 1, 1, 1.0, None, None, None).to_obj()
    big["pad"] = "x" * protocol.MAX_MESSAGE_BYTES
    import json
    data = json.dumps(big).encode()
    with pytest.raises(ProtocolError) as exc:
        protocol.decode(data)
    assert exc.value.code == "oversize"


@pytest.mark.parametrize("data,code", [
    (b"", "malformed"), (b"\xff\xfe", "malformed"), (b"[]", "malformed"), (b"{}", "malformed"),
    (b'{"v":true,"type":"permit"}', "malformed"), (b'{"v":1,"type":"nope"}', "malformed"),
    (b'{"v":0,"type":"permit"}', "wrong_version"), (b"[" * 3000, "malformed"),
    (b'{"v":1,"type":"ping","service":"s","boot":"0000000000000000","ping_seq":-1,"t1_ns":1}', "malformed"),
    (b'{"v":1,"type":"ping","service":"","boot":"0000000000000000","ping_seq":1,"t1_ns":1}', "malformed"),
    (b'{"v":1,"type":"ping","service":"s","boot":"0000000000000000","ping_seq":1.0,"t1_ns":1}', "malformed"),
])
def test_bad_frames_have_stable_codes(data, code):
    with pytest.raises(ProtocolError) as exc:
        protocol.decode(data)
    assert exc.value.code == code


def test_fuzzed_frames_never_crash_and_never_grant():
    """Mutations of a valid permit: the decoder only ever raises ProtocolError, the gate never holds one."""
    rng = random.Random(1234)
    base = dict((n, d) for k, n, d in vectors() if k == "valid")["permit_ok"]
    accepted = 0
    for _ in range(3000):
        b = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(b))
            if op < 0.4:
                b[pos] = rng.randrange(256)
            elif op < 0.7:
                del b[pos]
            else:
                b.insert(pos, rng.randrange(256))
        try:
            protocol.decode(bytes(b))
        except ProtocolError:
            pass
        gate = ControllerGate()
        v = gate.offer(bytes(b), 1_000, authenticated=True)
        assert v != Verdict.ACCEPTED  # first contact never grants, mutated or not
        assert not gate.may_fire(1_001)
        accepted += v == Verdict.BOOT_UNCONFIRMED
    assert accepted < 3000  # the mutations really did break most frames
