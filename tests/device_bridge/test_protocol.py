"""Protocol 1.1: the test vectors (docs/protocol_vectors.json and the doc's copies) byte for byte, and hostile
input never crashes a decoder."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from guidance.device_bridge import protocol
from guidance.device_bridge.attribution import PermitLog, PulseAttributor, PulseListSink, TipTrack
from guidance.device_bridge.controller.gate import ControllerGate, GateState, Verdict
from guidance.device_bridge.protocol import Permit, ProtocolError, Pulse

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "protocol.md"
VECTORS = json.loads((DOCS / "protocol_vectors.json").read_text())
BLOCK = re.compile(r"```vector (valid|invalid) (\w+)\n(.*?)\n```", re.S)


def doc_blocks():
    return [(m.group(1), m.group(2), m.group(3).encode("ascii")) for m in BLOCK.finditer(DOC.read_text())]


def frame_of(v: dict) -> bytes:
    if "frame_hex" in v:
        return bytes.fromhex(v["frame_hex"])
    return (v["frame"] * v.get("repeat", 1)).encode("ascii")


def test_vectors_cover_every_message_type_version_and_reject_code():
    valid = {(protocol.decode(frame_of(v)).TYPE, v["version"]) for v in VECTORS["valid"]}
    assert valid == {(t, ver) for t in protocol.MESSAGE_TYPES for ver in ("1.0", "1.1")}
    decode_codes = {v["code"] for v in VECTORS["invalid"]}
    assert decode_codes == {"oversize", "malformed", "wrong_version", "unexpected_type"}
    verdicts = {s["verdict"] for seq in VECTORS["controller_sequences"] for s in seq["steps"] if "verdict" in s}
    assert verdicts | decode_codes == {v.value for v in Verdict}
    states = {st for seq in VECTORS["controller_sequences"] for s in seq["steps"] for _, st in s.get("state", [])}
    assert states == {s.value for s in GateState}  # every gate state of §7.2 is pinned by a vector
    service_codes = {r["code"] for r in VECTORS["service_rejects"]}
    assert service_codes >= {"identity_mismatch", "pong_unmatched", "malformed", "wrong_version", "unexpected_type"}


def test_doc_examples_are_copies_of_the_vector_file():
    known = {(frame_of(v), "valid", v["name"]) for v in VECTORS["valid"]}
    known |= {(frame_of(v), "invalid", v["code"]) for v in VECTORS["invalid"] if v["expect"] == ["permit"]
              or v["code"] != "unexpected_type"}
    blocks = doc_blocks()
    assert len(blocks) >= 10
    for kind, name, data in blocks:
        assert (data, kind, name) in known, name


@pytest.mark.parametrize("v", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_decodes_and_reencodes_byte_for_byte(v):
    data = frame_of(v)
    msg = protocol.decode(data)
    assert msg.encode() == v.get("canonical", v["frame"]).encode("ascii")  # canonical form: byte for byte
    assert msg.version == v["version"]
    for name, value in v.get("fields", {}).items():
        assert getattr(msg, name) == value, name


@pytest.mark.parametrize("v", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_is_rejected_with_its_code(v):
    with pytest.raises(ProtocolError) as exc:
        protocol.decode(frame_of(v), expect=tuple(v["expect"]))
    assert exc.value.code == v["code"], exc.value.detail
    if v["expect"] == ["permit"]:  # and the controller gate gives the same verdict, holding nothing
        g = ControllerGate()
        assert g.offer(frame_of(v), 1, authenticated=True).value == v["code"]


@pytest.mark.parametrize("seq", VECTORS["controller_sequences"], ids=lambda s: s["name"])
def test_controller_sequence_vector(seq):
    g = ControllerGate(**seq.get("gate", {}))
    for step in seq["steps"]:
        if "ping" in step:
            g.note_ping(step["ping"]["boot"], step["ping"]["t1_ns"], step["ping"]["t2_ns"])
        if "frame" in step or "frames" in step:
            data = step["frame"].encode("ascii") if "frame" in step else [f.encode("ascii") for f in step["frames"]]
            v = g.offer(data, step["t_recv_ns"], step["authenticated"])
            assert v.value == step["verdict"], step
        for t, expected in step["may_fire"]:
            assert g.may_fire(t) is expected, (step, t)
        for t, state in step.get("state", []):
            assert g.state(t).value == state, (step, t)
    if seq["name"] == "clock_backwards":
        assert g.state(12 * 10**6) in (GateState.CLOCK_BACKWARDS, GateState.NO_PERMIT)


@pytest.mark.parametrize("v", VECTORS["key_files"], ids=lambda v: v["name"])
def test_key_file_vectors(v, tmp_path):
    """§2.1: the certificate format, read by the reference loader; a mixed-up pair is refused naming the file."""
    from guidance.device_bridge import keys as keyfiles
    from guidance.errors import UserError

    path = tmp_path / v["name"]
    path.write_text(v["text"])
    path.chmod(0o600)
    if v["secret_key"] is None:
        assert keyfiles.load_public(path) == v["public_key"].encode()
    elif v["error"] is None:
        pair = keyfiles.load_pair(path)
        assert (pair.public, pair.secret) == (v["public_key"].encode(), v["secret_key"].encode())
        path.chmod(0o640)
        with pytest.raises(UserError, match="readable by others"):
            keyfiles.load_pair(path)
    else:
        with pytest.raises(UserError, match=v["error"]):
            keyfiles.load_pair(path)


def test_formatting_rule_as_written_matches_the_encoder():
    for x, text in VECTORS["formatting"]:
        assert json.dumps(protocol.wire_num(x)) == text == protocol.format_num(x)
    rng = random.Random(5)
    for _ in range(20000):  # the printf recipe in §3 and the encoder agree everywhere below 1e12
        x = rng.choice([-1, 1]) * 10 ** rng.uniform(-5, 11.9)
        if rng.random() < 0.3:
            x = rng.randint(-10**7, 10**7) / rng.choice([8, 16, 1000, 2000, 4000])
        assert json.dumps(protocol.wire_num(x)) == protocol.format_num(x), x


def test_encoder_builds_the_documented_permit_from_fields():
    data = {v["name"]: frame_of(v) for v in VECTORS["valid"]}["permit_ok"]
    p = Permit("guidance", "9f2c4e1a7b3d5c60", 1042, 5_000_000_000, 5_000_004_200, 50, True, "ok",
               "forehead_left", 41.24999, 23.4, 7.25, 3.5, 20)
    assert p.encode() == data


def test_nonfinite_and_huge_numbers_are_never_sent():
    p = Permit("s", "0" * 16, 1, 1, 2, 50, False, "tip_lost", None, float("nan"), float("inf"), -0.0, 1e13, None)
    obj = protocol.decode(p.encode())
    assert obj.tip_u is None and obj.tip_v is None and obj.boundary_mm == 0.0 and obj.required_mm is None
    assert b"NaN" not in p.encode() and b"-0.0" not in p.encode()
    with pytest.raises(ProtocolError):  # not nullable: the message is not sent
        Pulse("c", "0" * 16, 1, 1, 1, float("nan"), None, None, None, True).encode()


def test_sender_refuses_what_a_receiver_would_reject():
    for bad in (dict(controller="hp 1"), dict(pulse_seq=0), dict(contact=None), dict(controller="x" * 65)):
        args = dict(controller="c", boot="0" * 16, pulse_seq=1, t_ctrl_ns=1, duration_us=1, intensity_pct=1.0,
                    energy_mj=None, permit_boot=None, permit_seq=None, contact=True) | bad
        with pytest.raises(ProtocolError):
            Pulse(**args).encode()
    assert Pulse("c", "0" * 16, 1, 1, 1, 1.0, None, None, None, minor=0).encode().find(b"contact") == -1


def test_receiving_numbers_int_for_float_is_fine_float_for_int_is_not():
    ok = {v["name"]: v["frame"] for v in VECTORS["valid"]}["pulse"]
    assert protocol.decode(ok.replace('"intensity_pct":60.0', '"intensity_pct":60').encode()).intensity_pct == 60.0
    for field_text in ('"duration_us":2000.0', '"duration_us":2e3', '"duration_us":true'):
        with pytest.raises(ProtocolError):
            protocol.decode(ok.replace('"duration_us":2000', field_text).encode())


def test_future_minor_is_read_as_what_this_side_knows_and_extra_keys_are_ignored():
    ok = {v["name"]: v["frame"] for v in VECTORS["valid"]}["pulse"]
    newer = ok.replace('"minor":1', '"minor":2').replace('"contact":true', '"contact":true,"future":[1,{"x":2}]')
    msg = protocol.decode(newer.encode())
    assert msg.minor == 2 and msg.contact is True and msg.pulse_seq == 17


def test_oversize_is_refused_both_ways():
    big = Pulse("c" * 64, "0" * 16, 1, 1, 1, 1.0, None, None, None, True).to_obj()
    big["pad"] = "x" * protocol.MAX_MESSAGE_BYTES
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
    (b'{"v":1,"type":"ping","service":"s","boot":"0000000000000000","ping_seq":0,"t1_ns":1}', "malformed"),
    (b'{"v":1,"type":"ping","service":"s\\n","boot":"0000000000000000","ping_seq":1,"t1_ns":1}', "malformed"),
    (b'{"v":1,"type":"ping","minor":"1","service":"s","boot":"0000000000000000","ping_seq":1,"t1_ns":1}',
     "malformed"),
    (b'{"v":1,"v":1,"type":"ping","service":"s","boot":"0000000000000000","ping_seq":1,"t1_ns":1}', "malformed"),
])
def test_bad_frames_have_stable_codes(data, code):
    with pytest.raises(ProtocolError) as exc:
        protocol.decode(data)
    assert exc.value.code == code


def test_pulse_seq_zero_can_never_reach_attribution_nor_come_back_late():
    """Issue 14 item 3: pulse_seq 0 used to be recorded as a late no_permit violation and to decrement counts."""
    zero = {v["name"]: v["frame"] for v in VECTORS["valid"]}["pulse"].replace('"pulse_seq":17', '"pulse_seq":0')
    with pytest.raises(ProtocolError):
        protocol.decode(zero.encode(), expect=("pulse",))
    a = PulseAttributor(PermitLog("0" * 16), TipTrack(), PulseListSink())
    with pytest.raises(ValueError):  # defence in depth: the attributor refuses it too, without counting anything
        a.on_pulse(Pulse("c", "1" * 16, 0, 1, 1, 1.0, None, None, None, True), None, None)
    assert a.received == 0 and a.violations == [] and a.missing_unlisted == 0


def test_fuzzed_frames_never_crash_and_never_grant():
    """Mutations of a valid permit: the decoder only ever raises ProtocolError, the gate never holds one."""
    rng = random.Random(1234)
    base = {v["name"]: frame_of(v) for v in VECTORS["valid"]}["permit_ok"]
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
