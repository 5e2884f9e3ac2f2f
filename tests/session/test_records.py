"""The typed records: each writes and reads itself exactly; the doc lists every field; version 1 still reads."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from guidance.session import records as rec
from guidance.session.reader import open_session
from guidance.session.writer import SessionRecorder

DOC = Path(__file__).resolve().parents[2] / "docs" / "recording.md"

POSE = rec.PoseRecord((0.1, -0.2, 0.3), (1.5, -2.25, 480.125), 1.0625, True)
FACE = rec.FaceRecord(True, 0.9990234375, True, POSE)
TIP = rec.TipRecord(True, "", (320.1234567891, 240.9876543211), (1.0, 2.0, 400.0), 35.5, 0.93, 0.75, 0.5,
                    0.9, )
ZONE = rec.ZoneRecord("cheek_left", "treat", "face", (30.123456789012, 12.987654321098), 7.000000000001)
GATE = rec.GateRecord(True, "ok", (), 412, 60, 7.2, 3.4, 6.1, 9.8)
DENY = rec.GateRecord(False, "near_boundary", ("near_boundary", "passes_exceeded"), None, 60, 1.0, 3.4, None, 33.0)
SHOULDERS = rec.ShoulderRecord(True, "ok", 123, (400.5, 300.25), (200.5, 301.0), (0.99, 0.98), (320.0, 200.0))
FRAME = rec.FrameRecord(7, (640, 480), 1, 2, 3, 4, 5, 6, True, FACE, GATE, TIP, ZONE, SHOULDERS, (100, 2000), False, 3,
                        DENY)
BAND = rec.HeadBandRecord("ok", True, "", True, 15, 1.25, 0.5, (0.1, 3.0, 0.2), (1.0, -40.0, 450.0), 2.1, False,
                          None)
SCALP = dataclasses.replace(FRAME, head_band=BAND)
BARE = rec.FrameRecord(0, (640, 480), 1, 1, 1, 1, 1, 1, False, rec.FaceRecord(False, 0.0), DENY)
OTHER = rec.FaceRecord(False, 0.25, True, None, 2, True)  # the client's face lost, two other faces seen
PATCH = rec.PatchRecord(True, "held", 123, (0.1, 3.1, -0.05), (10.5, -20.25, 450.125), 0.21, (20, 21, 26))
BODY_ZONE = rec.ZoneRecord("abdomen_upper_left", "treat", "body", (30.5, -60.25), 4.5, 67.5, 1.25)
BODY = rec.FrameRecord(9, (640, 480), 1, 1, 1, 1, 1, 1, True, rec.FaceRecord(False, 0.0), GATE, TIP, BODY_ZONE,
                       patch=PATCH)
TORSO = rec.TorsoRecord(True, (0.01, -0.02, 0.003), (1.5, -85.25, 470.125), 31.5)
NECK_GATE = dataclasses.replace(GATE, twist_sigma_mm=7.125)
NECK = dataclasses.replace(FRAME, gate=NECK_GATE, torso=TORSO)
PENDING = dataclasses.replace(FRAME, torso=rec.TorsoRecord(False))

EVENTS = [
    rec.SessionStart(1, version="0.1.0"), rec.SessionEnd(2, summary={"pulses": 3}, comparison={"frames": 2}),
    rec.Arm(3, cause="key"), rec.Disarm(4, cause="face lost"), rec.Pause(5), rec.Resume(6),
    rec.Fault(7, where="hot_path", error="RuntimeError: x"),
    rec.Link(8, state="connected", controller="c1", detail="b", boot="b1", protocol="1.1"),
    rec.Rejected(9, code="malformed", count=12, total=30, source="c1", t_first_ns=1, t_last_ns=9, detail="json"),
    rec.KeyRefused(9, fingerprint="abcdefgh", address="127.0.0.1", count=2, total=2, t_first_ns=1, t_last_ns=9),
    rec.HandshakeFailed(9, socket="report", error="protocol", address="tcp://127.0.0.1:1", count=1, total=1),
    rec.ServiceStall(9, stalled_ms=538.0), rec.Note(10, text="hello"),
    rec.CoverageSnapshot(11, coverage={"cells": {"index": [1], "passes": [2.0]}}),
    rec.PulseEvent(12, "c1", "boot1", 5, "coverage", "ok", 99, 12, "clock_offset", 40, "chin", 1.5, 60.25, 300, 80.0,
                   1.5, False, True, 17),
    rec.ViolationEvent(13, "c1", "boot1", 6, "violation", "missing", late=False, contact=None, after_frame=18),
    rec.BlockedNowEvent(14, "c1", "boot1", 7, "coverage", "ok", contact=False),
]


def roundtrip(r):
    return type(r).from_json(json.loads(json.dumps(r.to_json(), allow_nan=False)))


@pytest.mark.parametrize("r", [POSE, FACE, TIP, ZONE, GATE, DENY, SHOULDERS, BAND, FRAME, SCALP, BARE, PATCH, BODY_ZONE,
                               BODY, OTHER, TORSO, NECK_GATE, NECK, PENDING], ids=lambda r: type(r).__name__)
def test_every_frame_record_kind_reads_back_exactly(r):
    assert roundtrip(r) == r


@pytest.mark.parametrize("e", EVENTS, ids=lambda e: e.kind)
def test_every_event_kind_reads_back_exactly(e):
    assert rec.event_from_json(json.loads(json.dumps(e.to_json()))) == e


def test_every_event_kind_is_covered_here():
    assert {e.kind for e in EVENTS} == set(rec.EVENT_KINDS)


def test_a_write_then_read_of_every_record_through_the_files(tmp_path):
    with SessionRecorder(tmp_path / "s", {}) as w:
        w.add_frame(FRAME, None)
        w.add_frame(BARE, None)
        for e in EVENTS:
            w.add_event(e)
    s = open_session(tmp_path / "s", quiet=True)
    # the writer owns the payload references: no image, no landmarks were given
    assert s.frames == [dataclasses.replace(FRAME, video=None, landmarks=None), BARE]
    assert s.events == EVENTS and not s.damaged


def test_a_non_finite_number_is_written_as_unknown():
    z = rec.ZoneRecord("chin", "treat", "face", (1.0, 2.0), float("nan"))
    assert z.to_json()["boundary_mm"] is None and roundtrip(z).boundary_mm is None


@pytest.mark.parametrize("bad", [
    {"found": "yes", "presence": 1.0}, {"found": True}, {"found": True, "presence": "high"}, [1, 2],
])
def test_an_invalid_record_is_a_record_error(bad):
    with pytest.raises(rec.RecordError):
        rec.FaceRecord.from_json(bad)


def test_an_unknown_event_kind_is_kept_not_judged():
    e = rec.event_from_json({"kind": "from_the_future", "t_ns": 5, "x": 1})
    assert e.kind == "from_the_future" and e.to_json() == {"kind": "from_the_future", "t_ns": 5, "x": 1}


def _doc_sections() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        m = re.match(r"^### `(\w+)`", line)
        if m:
            current = m.group(1)
            out[current] = set()
        elif current and line.startswith("| `"):
            out[current].add(line.split("`")[1])
        elif line.startswith("## "):
            current = None
    return out


def test_the_format_doc_lists_every_field_of_every_record():
    """docs/recording.md is checked against the records: no field missing, none stale."""
    sections = _doc_sections()
    kinds = [rec.FrameRecord, rec.FaceRecord, rec.PoseRecord, rec.TipRecord, rec.ZoneRecord, rec.GateRecord,
             rec.ShoulderRecord, rec.HeadBandRecord, rec.PatchRecord, rec.TorsoRecord] + [c for c in rec.EVENT_KINDS.values()
                                                                         if c.__bases__[0] is not rec.PulseEvent]
    for cls in kinds:
        assert cls.__name__ in sections, f"docs/recording.md has no section for {cls.__name__}"
        assert sections[cls.__name__] == {f.name for f in dataclasses.fields(cls)}, cls.__name__
    assert set(sections) == {c.__name__ for c in kinds}


def test_a_version_1_recording_still_reads(tmp_path):
    """A recording written before the typed records (format 1): same meaning, some fields absent."""
    d = tmp_path / "v1"
    d.mkdir()
    (d / "info.json").write_text(json.dumps({"format": "guidance-session", "format_version": 1, "session_id": "x",
                                             "gate": {"ttl_ms": 60, "margin_mm": 2.0}}))
    v1_frame = {"index": 0, "size": [640, 480], "t_capture_ns": 10, "t_face_ns": 11, "t_tip_ns": 12, "t_zone_ns": 13,
                "t_decided_ns": 14, "t_published_ns": 15, "armed": True,
                "face": {"found": True, "presence": 0.99, "redetected": False,
                         "pose": {"rvec": [0, 0, 0], "tvec_mm": [0, 0, 400], "reprojection_px": 2.0, "valid": True}},
                "tip": {"valid": True, "reason": "", "px": [1, 2], "mm": [0, 0, 400], "speed_mm_s": 3.0,
                        "confidence": 0.9},
                "zone": {"zone": "chin", "kind": "treat", "surface": "face", "chart_mm": [1.234, 5.678],
                         "boundary_mm": 2.5},
                "gate": {"permit": True, "reason": "ok", "reasons": [], "seq": 3, "ttl_ms": 60, "boundary_mm": 2.5,
                         "required_mm": 2.0, "latency_ms": 5.0},
                "video": None, "landmarks": None}
    (d / "frames.jsonl").write_text(json.dumps(v1_frame) + "\n")
    (d / "events.jsonl").write_text(json.dumps({"kind": "pulse", "t_ns": 16, "controller": "c", "controller_boot": "b",
                                                "pulse_seq": 1, "outcome": "coverage", "reason": "ok", "tip_u": 1.0,
                                                "tip_v": 2.0, "after_frame": 0}) + "\n"
                                    + json.dumps({"kind": "session_end", "t_ns": 17, "summary": {}}) + "\n")
    s = open_session(d, quiet=True)
    assert s.version == 1 and not s.damaged
    f = s.frames[0]
    assert f.tip.px == (1.0, 2.0) and f.tip.sigma_lateral_mm is None and f.gate.lookahead_latency_ms == 33.0
    assert f.zone.chart_mm == (1.234, 5.678) and f.face.pose.tvec_mm == (0.0, 0.0, 400.0)
    assert s.events[0].kind == "pulse" and s.events[0].after_frame == 0 and s.events[0].contact is True  # v1: deposited
    assert s.config() == {"policy": {"ttl_ms": 60, "margin_mm": 2.0}, "landmark_model": None}
