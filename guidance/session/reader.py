"""Reading a session recording (any version this software knows), tolerant of a torn end, honest about damage.

A recording cut off by `kill -9` or a power loss ends with at most a torn last
line and a partial last JPEG: those are dropped with a warning and the rest
reads. Damage elsewhere (a garbled line in the middle, a missing video file,
a record that is not a valid record) is not hidden: `Session.damage` lists
what could not be read, line by line, so that re-processing and reports say
"damaged" rather than drawing conclusions from what is missing.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import yaml

from guidance.errors import UserError, native_stderr_silenced
from guidance.session.records import (FORMAT, FORMAT_VERSION, LANDMARK_BYTES, Event, FrameRecord, Record,
                                      RecordError, event_from_json, upgrade_v1_event, upgrade_v1_frame)
from guidance.session.writer import EVENTS, FRAMES, INFO, LANDMARKS, VIDEO


@dataclass
class Session:
    """A recording opened for reading."""

    dir: Path
    info: dict
    frames: list[FrameRecord]
    events: list[Event]
    warnings: list[str] = field(default_factory=list)
    # What could not be read, beyond a torn end: "frames.jsonl line 12: ...", "video.mjpeg: missing", ...
    damage: list[str] = field(default_factory=list)
    version: int = FORMAT_VERSION
    # Per readable frame, its place in frames.jsonl (0 = first line): the number of frames the live app had
    # processed before it, which is what a pulse's `after_frame` counts. With a line unreadable the two part:
    # frames[k] is then frame number frame_numbers[k], not k (see `position_after`).
    frame_numbers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.frame_numbers:
            self.frame_numbers = list(range(len(self.frames)))

    def position_after(self, frame_number: int) -> int:
        """Index into `frames` of the last readable frame numbered `frame_number` or before it (-1: none)."""
        return bisect.bisect_right(self.frame_numbers, frame_number) - 1

    @property
    def truncated(self) -> bool:
        """Cut off or damaged: the reader had to leave something out."""
        return bool(self.warnings)

    @property
    def damaged(self) -> bool:
        """Something other than a torn end is unreadable or missing."""
        return bool(self.damage)

    def jpeg(self, i: int) -> bytes | None:
        rng = self.frames[i].video
        if not rng or not (self.dir / VIDEO).is_file():
            return None
        with open(self.dir / VIDEO, "rb") as fh:
            fh.seek(rng[0])
            data = fh.read(rng[1])
        return data if len(data) == rng[1] else None

    def image(self, i: int) -> np.ndarray | None:
        data = self.jpeg(i)
        if data is None:
            return None
        with native_stderr_silenced():  # a damaged JPEG is None here, not lines of libjpeg on stderr
            return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def landmarks(self, i: int) -> np.ndarray | None:
        k = self.frames[i].landmarks
        if k is None or not (self.dir / LANDMARKS).is_file():
            return None
        with open(self.dir / LANDMARKS, "rb") as fh:
            fh.seek(k * LANDMARK_BYTES)
            data = fh.read(LANDMARK_BYTES)
        if len(data) != LANDMARK_BYTES:
            return None
        lm = np.frombuffer(data, "<f4").reshape(468, 3).copy()
        # the tracker writes pixel coordinates: anything else is damage, read as "no landmarks"
        if not (np.isfinite(lm).all() and np.abs(lm).max() <= 1e6):
            return None
        return lm

    def events_of(self, *kinds: str) -> Iterator[Event]:
        return (e for e in self.events if e.kind in kinds)

    # -- the snapshots, as they were ---------------------------------------------------------
    def snapshot(self, name: str) -> dict:
        """The recorded content of the plan or handpiece file (info.json), never today's file."""
        snap = self.info.get(name)
        if not isinstance(snap, dict) or not isinstance(snap.get("content"), dict):
            raise UserError(f"no {name} snapshot in the recording", path=self.dir / INFO, field=f"{name}.content")
        return snap

    def plan(self, atlas: Any = None) -> Any:
        """The plan exactly as recorded; its handpiece profile is the recorded snapshot, wherever the file is now."""
        from guidance.zones.plan import parse_plan

        snap = self.snapshot("plan")
        hp = self.snapshot("handpiece")["content"]
        with tempfile.TemporaryDirectory(prefix="guidance-session-") as tmp:
            (Path(tmp) / "handpiece.yaml").write_text(yaml.safe_dump(hp))
            data = {**snap["content"], "handpiece_profile": "handpiece.yaml"}
            try:
                plan = parse_plan(data, Path(tmp) / "plan.yaml", atlas)
            except UserError as exc:
                raise UserError(f"recorded plan is invalid: {exc}", path=self.dir / INFO, field="plan.content") from None
        return _with_source(plan, str(snap.get("path") or self.dir / INFO))

    def profile(self) -> Any:
        """The handpiece profile exactly as recorded."""
        from guidance.vision.handpiece.profiles import load_handpiece_profile

        hp = self.snapshot("handpiece")["content"]
        with tempfile.TemporaryDirectory(prefix="guidance-session-") as tmp:
            p = Path(tmp) / "handpiece.yaml"
            p.write_text(yaml.safe_dump(hp))
            try:
                return load_handpiece_profile(p)
            except UserError as exc:
                raise UserError(f"recorded handpiece is invalid: {exc}", path=self.dir / INFO,
                                field="handpiece.content") from None

    def electrode_diameter_mm(self) -> float:
        try:
            d = float(self.snapshot("handpiece")["content"]["electrode_diameter_mm"])
        except (KeyError, TypeError, ValueError):
            raise UserError("no electrode diameter in the recorded handpiece", path=self.dir / INFO,
                            field="handpiece.content.electrode_diameter_mm") from None
        if not d > 0:
            raise UserError("electrode diameter must be positive", path=self.dir / INFO,
                            field="handpiece.content.electrode_diameter_mm")
        return d

    def camera(self) -> Any:
        """The recorded camera calibration, or None (the documented default camera was used)."""
        from guidance.vision.capture.camera import camera_from_dict

        cam = self.info.get("camera") or {}
        if not cam.get("calibrated"):
            return None
        model = camera_from_dict(cam, self.dir / INFO, "camera")
        return dataclasses.replace(model, source="recording")

    def config(self) -> dict:
        """The pipeline configuration the session ran with (version 1 kept only the gate's settings)."""
        cfg = self.info.get("config")
        if isinstance(cfg, dict):
            return cfg
        return {"policy": dict(self.info.get("gate") or {}), "landmark_model": self.info.get("landmark_model")}


def _with_source(plan: Any, source: str) -> Any:
    import dataclasses

    return dataclasses.replace(plan, source=source)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a recording holds")  # the writer never writes NaN or Infinity


def _read_lines(path: Path, warn: list[str], damage: list[str]) -> list[tuple[int, Any]]:
    """(line number, parsed JSON) of every readable line; a torn last line is a warning, others are damage."""
    out: list[tuple[int, Any]] = []
    if path.is_dir():
        damage.append(f"{path.name}: is a folder, not a file")
        return out
    if not path.exists():
        damage.append(f"{path.name}: missing")
        return out
    try:
        with open(path, "rb") as fh:
            lines = fh.read().split(b"\n")
    except OSError as exc:
        damage.append(f"{path.name}: cannot be read ({exc.strerror})")
        return out
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line, parse_constant=_refuse_constant)))
        except (ValueError, UnicodeDecodeError, RecursionError):  # JSONDecodeError is a ValueError
            if n >= len(lines) - 1:
                warn.append(f"{path.name}: torn last line {n} ignored (recording was cut off)")
            else:
                damage.append(f"{path.name} line {n}: unreadable")
    return out


# What the writer can produce: times on the monotonic clock, sizes of real images, numbers of real sessions.
_MAX_NS = 2**62
_MAX_ABS = 1e9  # no millimetre, pixel, millisecond or percentage in a record comes near this
_MAX_PIXELS = 40_000_000  # an 8K frame is 33 Mpx


def _check_values(x: Any, where: str) -> None:
    """Every typed number in a record finite and of a size a real session has (RecordError otherwise)."""
    if isinstance(x, Record):
        for f in dataclasses.fields(x):  # type: ignore[arg-type]
            _check_values(getattr(x, f.name), f"{where}.{f.name}")
    elif isinstance(x, tuple):
        for v in x:
            _check_values(v, where)
    elif isinstance(x, bool):
        return
    elif isinstance(x, int):
        if not -_MAX_NS <= x <= _MAX_NS:
            raise RecordError(f"{where}: {x} is out of range")
    elif isinstance(x, float):
        if not (math.isfinite(x) and abs(x) <= _MAX_ABS):
            raise RecordError(f"{where}: {x!r} is not a plausible value")


def _check_frame(r: FrameRecord) -> FrameRecord:
    _check_values(r, "FrameRecord")
    w, h = r.size
    if not (1 <= w <= 16384 and 1 <= h <= 16384 and w * h <= _MAX_PIXELS):
        raise RecordError(f"FrameRecord.size: {w}x{h} is not an image size")
    for name in ("index", "t_capture_ns", "t_face_ns", "t_tip_ns", "t_zone_ns", "t_decided_ns", "t_published_ns"):
        if getattr(r, name) < 0:
            raise RecordError(f"FrameRecord.{name}: negative")
    if r.video is not None and (r.video[0] < 0 or not 0 < r.video[1] <= 256 * 2**20):
        raise RecordError("FrameRecord.video: not a byte range of video.mjpeg")
    if r.landmarks is not None and r.landmarks < 0:
        raise RecordError("FrameRecord.landmarks: negative")
    return r


def _check_event(e: Event) -> Event:
    _check_values(e, type(e).__name__)
    if e.t_ns < 0:
        raise RecordError(f"{type(e).__name__}.t_ns: negative")
    after = getattr(e, "after_frame", None)
    if after is not None and after < 0:
        raise RecordError(f"{type(e).__name__}.after_frame: negative")
    return e


# The top-level fields of info.json that readers use, and their types (others are kept, not judged).
INFO_SCHEMA = {
    "type": "object",
    "properties": {
        "session_id": {"type": "string"}, "started_wall": {"type": "string"}, "source": {"type": "string"},
        "t0_ns": {"type": "integer", "minimum": 0},
        "fps": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1000},
        "plan": {"type": "object"}, "handpiece": {"type": "object"}, "camera": {"type": "object"},
        "config": {"type": "object"}, "gate": {"type": "object"}, "software": {"type": "object"},
        "models": {"type": "object"}, "landmark_model": {"type": ["string", "null"]},
        "permit_endpoint": {"type": ["string", "null"]}, "reprocessed_from": {"type": "object"},
    },
}


def read_info(d: Path) -> dict:
    if not (d / INFO).exists():
        raise UserError("not a guidance recording (no info.json)", path=d)
    if not (d / INFO).is_file():
        raise UserError("is not a file", path=d / INFO)
    try:
        if (d / INFO).stat().st_size > 64 * 2**20:
            raise UserError("too large for a recording's info.json", path=d / INFO)
        info = json.loads((d / INFO).read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise UserError(f"unreadable (line {exc.lineno})", path=d / INFO) from None
    except ValueError as exc:  # NaN or Infinity
        raise UserError(f"unreadable ({exc})", path=d / INFO) from None
    except RecursionError:
        raise UserError("unreadable (nested too deeply)", path=d / INFO) from None
    except (UnicodeDecodeError, OSError):
        raise UserError("unreadable", path=d / INFO) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UserError(f"not a {FORMAT} recording", path=d / INFO, field="format")
    version = info.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError("format_version must be a positive integer", path=d / INFO, field="format_version")
    if version > FORMAT_VERSION:
        raise UserError(f"recording format {version} is newer than this software ({FORMAT_VERSION})",
                        path=d / INFO, field="format_version")
    from guidance.yamlfile import validate

    validate(info, INFO_SCHEMA, d / INFO)
    return info


def open_session(directory: str | Path, *, quiet: bool = False) -> Session:
    """Open a recording of any known version; warnings (torn end, damage) are collected, and also issued
    as Python warnings unless `quiet`."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError("recording folder not found", path=d)
    info = read_info(d)
    version = int(info["format_version"])
    warn: list[str] = []
    damage: list[str] = []
    frames: list[FrameRecord] = []
    numbers: list[int] = []
    for n, obj in _read_lines(d / FRAMES, warn, damage):
        try:
            frames.append(_check_frame(FrameRecord.from_json(upgrade_v1_frame(obj) if version == 1 else obj)))
            numbers.append(n - 1)  # one record per line, never skipped: line n holds frame number n - 1
        except (RecordError, TypeError, ValueError) as exc:
            damage.append(f"{FRAMES} line {n}: {exc}")
    events: list[Event] = []
    for n, obj in _read_lines(d / EVENTS, warn, damage):
        try:
            events.append(_check_event(event_from_json(upgrade_v1_event(obj) if version == 1 else obj)))
        except (RecordError, TypeError, ValueError) as exc:
            damage.append(f"{EVENTS} line {n}: {exc}")
    # A frame whose JPEG or landmarks did not reach the disk before the cut is dropped from the end.
    vsize = (d / VIDEO).stat().st_size if (d / VIDEO).is_file() else 0
    lsize = (d / LANDMARKS).stat().st_size if (d / LANDMARKS).is_file() else 0
    if frames and any(f.video for f in frames) and not (d / VIDEO).is_file():
        damage.append(f"{VIDEO}: missing (frames have no images)")
    if frames and any(f.landmarks is not None for f in frames) and not (d / LANDMARKS).is_file():
        damage.append(f"{LANDMARKS}: missing (frames have no landmarks)")
    while frames and (d / VIDEO).is_file() and (d / LANDMARKS).is_file():
        last = frames[-1]
        v, lm = last.video, last.landmarks
        if (v and v[0] + v[1] > vsize) or (lm is not None and (lm + 1) * LANDMARK_BYTES > lsize):
            frames.pop()
            numbers.pop()
            warn.append("last frame's payload incomplete; dropped")
        else:
            break
    if not any(e.kind == "session_end" for e in events):
        warn.append("no session_end event: the recording was cut off")
    session = Session(d, info, frames, events, warn + damage, damage, version, numbers)
    if not quiet:
        for w in session.warnings:
            warnings.warn(f"{d}: {w}", stacklevel=2)
    return session
