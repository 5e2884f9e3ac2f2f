"""Reading a session recording (any version this software knows), tolerant of a torn end, honest about damage.

A recording cut off by `kill -9` or a power loss ends with at most a torn last
line and a partial last JPEG: those are dropped with a warning and the rest
reads. Damage elsewhere (a garbled line in the middle, a missing video file,
a record that is not a valid record) is not hidden: `Session.damage` lists
what could not be read, line by line, so that re-processing and reports say
"damaged" rather than drawing conclusions from what is missing.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import yaml

from guidance.errors import UserError
from guidance.session.records import (FORMAT, FORMAT_VERSION, LANDMARK_BYTES, Event, FrameRecord, RecordError,
                                      event_from_json, upgrade_v1_event, upgrade_v1_frame)
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
        if not rng or not (self.dir / VIDEO).exists():
            return None
        with open(self.dir / VIDEO, "rb") as fh:
            fh.seek(rng[0])
            data = fh.read(rng[1])
        return data if len(data) == rng[1] else None

    def image(self, i: int) -> np.ndarray | None:
        data = self.jpeg(i)
        return None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def landmarks(self, i: int) -> np.ndarray | None:
        k = self.frames[i].landmarks
        if k is None or not (self.dir / LANDMARKS).exists():
            return None
        with open(self.dir / LANDMARKS, "rb") as fh:
            fh.seek(k * LANDMARK_BYTES)
            data = fh.read(LANDMARK_BYTES)
        if len(data) != LANDMARK_BYTES:
            return None
        return np.frombuffer(data, "<f4").reshape(468, 3).copy()

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
        from guidance.vision.capture.camera import CameraModel

        cam = self.info.get("camera") or {}
        if not cam.get("calibrated"):
            return None
        return CameraModel(K=np.asarray(cam["camera_matrix"], float), dist=np.asarray(cam["dist_coeffs"], float),
                           size=tuple(cam["image_size"]), calibrated=True, rms_px=cam.get("rms_px"), source="recording")

    def config(self) -> dict:
        """The pipeline configuration the session ran with (version 1 kept only the gate's settings)."""
        cfg = self.info.get("config")
        if isinstance(cfg, dict):
            return cfg
        return {"policy": dict(self.info.get("gate") or {}), "landmark_model": self.info.get("landmark_model")}


def _with_source(plan: Any, source: str) -> Any:
    import dataclasses

    return dataclasses.replace(plan, source=source)


def _read_lines(path: Path, warn: list[str], damage: list[str]) -> list[tuple[int, Any]]:
    """(line number, parsed JSON) of every readable line; a torn last line is a warning, others are damage."""
    out: list[tuple[int, Any]] = []
    if not path.exists():
        damage.append(f"{path.name}: missing")
        return out
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except (json.JSONDecodeError, UnicodeDecodeError):
            if n >= len(lines) - 1:
                warn.append(f"{path.name}: torn last line {n} ignored (recording was cut off)")
            else:
                damage.append(f"{path.name} line {n}: unreadable")
    return out


def read_info(d: Path) -> dict:
    if not (d / INFO).exists():
        raise UserError("not a guidance recording (no info.json)", path=d)
    try:
        info = json.loads((d / INFO).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"unreadable (line {exc.lineno})", path=d / INFO) from None
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
    for n, obj in _read_lines(d / FRAMES, warn, damage):
        try:
            frames.append(FrameRecord.from_json(upgrade_v1_frame(obj) if version == 1 else obj))
        except (RecordError, TypeError, ValueError) as exc:
            damage.append(f"{FRAMES} line {n}: {exc}")
    events: list[Event] = []
    for n, obj in _read_lines(d / EVENTS, warn, damage):
        try:
            events.append(event_from_json(upgrade_v1_event(obj) if version == 1 else obj))
        except (RecordError, TypeError, ValueError) as exc:
            damage.append(f"{EVENTS} line {n}: {exc}")
    # A frame whose JPEG or landmarks did not reach the disk before the cut is dropped from the end.
    vsize = (d / VIDEO).stat().st_size if (d / VIDEO).exists() else 0
    lsize = (d / LANDMARKS).stat().st_size if (d / LANDMARKS).exists() else 0
    if frames and any(f.video for f in frames) and not (d / VIDEO).exists():
        damage.append(f"{VIDEO}: missing (frames have no images)")
    if frames and any(f.landmarks is not None for f in frames) and not (d / LANDMARKS).exists():
        damage.append(f"{LANDMARKS}: missing (frames have no landmarks)")
    while frames and (d / VIDEO).exists() and (d / LANDMARKS).exists():
        last = frames[-1]
        v, lm = last.video, last.landmarks
        if (v and v[0] + v[1] > vsize) or (lm is not None and (lm + 1) * LANDMARK_BYTES > lsize):
            frames.pop()
            warn.append("last frame's payload incomplete; dropped")
        else:
            break
    if not any(e.kind == "session_end" for e in events):
        warn.append("no session_end event: the recording was cut off")
    session = Session(d, info, frames, events, warn + damage, damage, version)
    if not quiet:
        for w in session.warnings:
            warnings.warn(f"{d}: {w}", stacklevel=2)
    return session
