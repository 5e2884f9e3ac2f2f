"""Session recordings: a folder of simple, append-only files (the pupil-labs idea).

    SESSION/
      info.json         session id, wall-clock start, software and model versions,
                        snapshots of the plan, handpiece profile and calibration
                        as they were (editing them later never rewrites history)
      video.mjpeg       the camera frames, JPEG after JPEG (a raw MJPEG stream:
                        no index at the end to lose, ffmpeg/OpenCV read it too)
      frames.jsonl      one JSON object per frame: timestamps of every stage,
                        face, tip, zone, gate decision, and the byte range of
                        the frame's JPEG in video.mjpeg
      landmarks.f32     468 x 3 float32 per frame with a face, little-endian;
                        frames.jsonl names the record index
      events.jsonl      pulses, violations, arm/disarm, faults, link state, notes

Everything is appended and flushed to the OS at least every `flush_interval_s`
(default 0.5 s): a `kill -9` loses at most that, and a reader skips a torn
last line or a partial last JPEG with a warning. All times are
`time.monotonic_ns()` of the recording process; `info.json` holds the
wall-clock time of `t0_ns` so a trainer sees real dates.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from guidance import __version__
from guidance.errors import UserError

FORMAT = "guidance-session"
FORMAT_VERSION = 1
LANDMARK_BYTES = 468 * 3 * 4
INFO, VIDEO, FRAMES, LANDMARKS, EVENTS = "info.json", "video.mjpeg", "frames.jsonl", "landmarks.f32", "events.jsonl"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "value"):  # enums
        return o.value
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_json_default, allow_nan=False)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


@dataclass
class _Item:
    record: dict
    image: np.ndarray | None
    landmarks: np.ndarray | None
    jpeg: bytes | None = None


class SessionRecorder:
    """Writes a session folder from a background thread; the hot path only enqueues.

    Frame records are never dropped (they are small); when the writer falls
    behind by more than `max_pending_images` JPEGs, new frames are recorded
    without their image and the record says so (`video: null`), rather than
    holding up the gate.
    """

    def __init__(self, directory: str | Path, info: dict, *, jpeg_quality: int = 85,
                 flush_interval_s: float = 0.5, max_pending_images: int = 90):
        self.dir = Path(directory)
        if self.dir.exists() and any(self.dir.iterdir()):
            raise UserError("recording folder exists and is not empty (choose a new one)", path=self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.session_id = info.get("session_id") or uuid.uuid4().hex[:12]
        self.t0_ns = time.monotonic_ns()
        self.info = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "session_id": self.session_id,
            "started_wall": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "t0_ns": self.t0_ns, "software": {"guidance": __version__}, **info,
        }
        write_json_atomic(self.dir / INFO, self.info)
        self._video = open(self.dir / VIDEO, "ab")
        self._frames = open(self.dir / FRAMES, "a", encoding="utf-8")
        self._landmarks = open(self.dir / LANDMARKS, "ab")
        self._events = open(self.dir / EVENTS, "a", encoding="utf-8")
        self._video_pos = self._video.tell()
        self._lm_count = self._landmarks.tell() // LANDMARK_BYTES
        self.jpeg_quality = jpeg_quality
        self.flush_interval_s = flush_interval_s
        self.max_pending_images = max_pending_images
        self._q: queue.Queue[_Item | dict | None] = queue.Queue()
        self._pending_images = 0
        self._lock = threading.Lock()
        self.frames_written = 0
        self.images_skipped = 0
        self.events_written = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    # -- hot path: enqueue only -------------------------------------------------
    def add_frame(self, record: dict, image: np.ndarray | None, landmarks: np.ndarray | None = None,
                  *, jpeg: bytes | None = None) -> None:
        """Queue one frame; `jpeg` passes already-encoded bytes through untouched (re-processing)."""
        if jpeg is not None:
            self._q.put(_Item(record, None, landmarks, jpeg))
            return
        with self._lock:
            if image is not None and self._pending_images >= self.max_pending_images:
                image = None
                record = {**record, "video_skipped": True}
            if image is not None:
                self._pending_images += 1
        self._q.put(_Item(record, image, landmarks))

    def add_event(self, kind: str, t_ns: int | None = None, **fields: Any) -> None:
        self._q.put({"kind": kind, "t_ns": t_ns if t_ns is not None else time.monotonic_ns(), **fields})

    @property
    def backlog(self) -> int:
        return self._q.qsize()

    # -- writer thread -------------------------------------------------------------
    def _run(self) -> None:
        last_flush = time.monotonic()
        try:
            while True:
                try:
                    item = self._q.get(timeout=self.flush_interval_s / 2)
                except queue.Empty:
                    item = ...
                if item is None:
                    break
                if isinstance(item, _Item):
                    self._write_frame(item)
                elif isinstance(item, dict):
                    self._events.write(dumps(item) + "\n")
                    self.events_written += 1
                if time.monotonic() - last_flush >= self.flush_interval_s:
                    self._flush()
                    last_flush = time.monotonic()
        except BaseException as exc:  # pragma: no cover - disk full etc.; surfaced on close
            self._error = exc
        finally:
            self._flush()

    def _write_frame(self, item: _Item) -> None:
        rec = dict(item.record)
        if item.jpeg is not None:
            self._video.write(item.jpeg)
            rec["video"] = [self._video_pos, len(item.jpeg)]
            self._video_pos += len(item.jpeg)
        elif item.image is not None:
            ok, buf = cv2.imencode(".jpg", item.image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            with self._lock:
                self._pending_images -= 1
            if ok:
                data = buf.tobytes()
                self._video.write(data)
                rec["video"] = [self._video_pos, len(data)]
                self._video_pos += len(data)
            else:
                rec["video"] = None
        else:
            rec.setdefault("video", None)
            if rec.get("video_skipped"):
                self.images_skipped += 1
        if item.landmarks is not None:
            self._landmarks.write(np.ascontiguousarray(item.landmarks, dtype="<f4").tobytes())
            rec["landmarks"] = self._lm_count
            self._lm_count += 1
        else:
            rec["landmarks"] = None
        self._frames.write(dumps(rec) + "\n")
        self.frames_written += 1

    def _flush(self) -> None:
        # Order matters: payloads before the records that point into them.
        for fh in (self._video, self._landmarks, self._frames, self._events):
            fh.flush()

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        for fh in (self._video, self._landmarks, self._frames, self._events):
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        if self._error:
            raise self._error

    def __enter__(self) -> "SessionRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Session:
    """A recording opened for reading; tolerant of a torn end (kill -9, power loss)."""

    dir: Path
    info: dict
    frames: list[dict]
    events: list[dict]
    warnings: list[str] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        return bool(self.warnings)

    def jpeg(self, i: int) -> bytes | None:
        rng = self.frames[i].get("video")
        if not rng:
            return None
        with open(self.dir / VIDEO, "rb") as fh:
            fh.seek(rng[0])
            data = fh.read(rng[1])
        return data if len(data) == rng[1] else None

    def image(self, i: int) -> np.ndarray | None:
        data = self.jpeg(i)
        return None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def landmarks(self, i: int) -> np.ndarray | None:
        k = self.frames[i].get("landmarks")
        if k is None:
            return None
        with open(self.dir / LANDMARKS, "rb") as fh:
            fh.seek(k * LANDMARK_BYTES)
            data = fh.read(LANDMARK_BYTES)
        if len(data) != LANDMARK_BYTES:
            return None
        return np.frombuffer(data, "<f4").reshape(468, 3).copy()

    def events_of(self, *kinds: str) -> Iterator[dict]:
        return (e for e in self.events if e.get("kind") in kinds)


def _read_jsonl(path: Path, warn: list[str]) -> list[dict]:
    out: list[dict] = []
    if not path.exists():
        warn.append(f"{path.name}: missing")
        return out
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n >= len(lines) - 1:
                warn.append(f"{path.name}: torn last line {n} ignored (recording was cut off)")
            else:
                warn.append(f"{path.name}: unreadable line {n} ignored")
    return out


def open_session(directory: str | Path) -> Session:
    d = Path(directory)
    if not (d / INFO).exists():
        raise UserError("not a guidance recording (no info.json)", path=d)
    try:
        info = json.loads((d / INFO).read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"unreadable (line {exc.lineno})", path=d / INFO) from None
    if info.get("format") != FORMAT:
        raise UserError(f"not a {FORMAT} recording", path=d / INFO, field="format")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"recording format {info.get('format_version')} is newer than this software ({FORMAT_VERSION})",
                        path=d / INFO, field="format_version")
    warn: list[str] = []
    frames = _read_jsonl(d / FRAMES, warn)
    events = _read_jsonl(d / EVENTS, warn)
    # A frame whose JPEG or landmarks did not reach the disk before the cut is dropped from the end.
    vsize = (d / VIDEO).stat().st_size if (d / VIDEO).exists() else 0
    lsize = (d / LANDMARKS).stat().st_size if (d / LANDMARKS).exists() else 0
    while frames:
        last = frames[-1]
        v, lm = last.get("video"), last.get("landmarks")
        if (v and v[0] + v[1] > vsize) or (lm is not None and (lm + 1) * LANDMARK_BYTES > lsize):
            frames.pop()
            warn.append("last frame's payload incomplete; dropped")
        else:
            break
    if not any(e.get("kind") == "session_end" for e in events):
        warn.append("no session_end event: the recording was cut off")
    for w in warn:
        warnings.warn(f"{d}: {w}", stacklevel=2)
    return Session(d, info, frames, events, warn)
