"""Writing a session recording: a folder of simple, append-only files (the pupil-labs idea).

    SESSION/
      info.json         session id, wall-clock start, software and model versions, the whole
                        pipeline configuration, snapshots of the plan, handpiece profile and
                        calibration as they were (editing them later never rewrites history)
      video.mjpeg       the camera frames, JPEG after JPEG (a raw MJPEG stream:
                        no index at the end to lose, ffmpeg/OpenCV read it too)
      frames.jsonl      one FrameRecord per line (guidance/session/records.py)
      landmarks.f32     468 x 3 float32 per frame with a face, little-endian;
                        the frame record names its index
      events.jsonl      one Event per line: pulses, violations, arm/disarm, faults, link, rejects, notes

Everything is appended and written through to the OS as it is written, payloads
before the records that point into them: a `kill -9` loses only what was still
queued (at most `flush_interval_s` behind, default 0.5 s, while the writer keeps
up), and the reader skips a torn last line or a partial last JPEG with a
warning. All times are
`time.monotonic_ns()` of the recording process; `info.json` holds the
wall-clock time of `t0_ns` so a trainer sees real dates.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from guidance import __version__
from guidance.errors import UserError
from guidance.session.records import FORMAT, FORMAT_VERSION, LANDMARK_BYTES, Event, FrameRecord

INFO, VIDEO, FRAMES, LANDMARKS, EVENTS = "info.json", "video.mjpeg", "frames.jsonl", "landmarks.f32", "events.jsonl"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_json"):
        return o.to_json()
    if hasattr(o, "value"):  # enums
        return o.value
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_json_default, allow_nan=False)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write a JSON file so that a reader never sees half of it (write aside, fsync, rename)."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class _Item:
    record: FrameRecord
    image: np.ndarray | None
    landmarks: np.ndarray | None
    jpeg: bytes | None = None


class SessionRecorder:
    """Writes a session folder from a background thread; the hot path only enqueues.

    Frame records are never dropped (they are small); when the writer falls
    behind by more than `max_pending_images` JPEGs, new frames are recorded
    without their image and the record says so (`video_skipped`), rather than
    holding up the gate.
    """

    def __init__(self, directory: str | Path, info: dict, *, jpeg_quality: int = 85,
                 flush_interval_s: float = 0.5, max_pending_images: int = 90):
        self.dir = Path(directory)
        if self.dir.exists() and any(self.dir.iterdir()):
            raise UserError("recording folder exists and is not empty (choose a new one)", path=self.dir)
        if not self.dir.parent.is_dir():
            raise UserError("the folder to record into does not exist (create it first)", path=self.dir.parent)
        self.dir.mkdir(exist_ok=True)
        self.session_id = info.get("session_id") or uuid.uuid4().hex[:12]
        self.t0_ns = time.monotonic_ns()
        self.info = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "session_id": self.session_id,
            "started_wall": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "t0_ns": self.t0_ns, "software": {"guidance": __version__}, **info,
        }
        write_json_atomic(self.dir / INFO, self.info)
        # Written through, in order: a frame's payloads before its record, each record a whole line, so what a
        # kill -9 leaves on disk is always a prefix of the session (no buffer holds a later line back while an
        # earlier one is lost). A few syscalls a frame.
        self._video = open(self.dir / VIDEO, "ab", buffering=0)
        self._frames = open(self.dir / FRAMES, "a", encoding="utf-8", buffering=1)
        self._landmarks = open(self.dir / LANDMARKS, "ab", buffering=0)
        self._events = open(self.dir / EVENTS, "a", encoding="utf-8", buffering=1)
        self._video_pos = self._video.tell()
        self._lm_count = self._landmarks.tell() // LANDMARK_BYTES
        self.jpeg_quality = jpeg_quality
        self.flush_interval_s = flush_interval_s
        self.max_pending_images = max_pending_images
        self._q: queue.Queue[_Item | Event | None] = queue.Queue()
        self._pending_images = 0
        self._lock = threading.Lock()
        self.frames_written = 0
        self.images_skipped = 0
        self.events_written = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    # -- hot path: enqueue only -------------------------------------------------
    def add_frame(self, record: FrameRecord, image: np.ndarray | None, landmarks: np.ndarray | None = None,
                  *, jpeg: bytes | None = None) -> None:
        """Queue one frame; `jpeg` passes already-encoded bytes through untouched (re-processing)."""
        if jpeg is not None:
            self._q.put(_Item(record, None, landmarks, jpeg))
            return
        with self._lock:
            if image is not None and self._pending_images >= self.max_pending_images:
                image = None
                record = dataclasses.replace(record, video_skipped=True)
            if image is not None:
                self._pending_images += 1
        self._q.put(_Item(record, image, landmarks))

    def add_event(self, event: Event) -> None:
        self._q.put(event)

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
                    item = ...  # type: ignore[assignment]
                if item is None:
                    break
                if isinstance(item, _Item):
                    self._write_frame(item)
                elif isinstance(item, Event):
                    self._events.write(dumps(item.to_json()) + "\n")
                    self.events_written += 1
                if time.monotonic() - last_flush >= self.flush_interval_s:
                    self._flush()
                    last_flush = time.monotonic()
        except BaseException as exc:  # pragma: no cover - disk full etc.; surfaced on close
            self._error = exc
        finally:
            self._flush()

    def _write_frame(self, item: _Item) -> None:
        video: tuple[int, int] | None = None
        data: bytes | None = item.jpeg
        if data is None and item.image is not None:
            ok, buf = cv2.imencode(".jpg", item.image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            with self._lock:
                self._pending_images -= 1
            data = buf.tobytes() if ok else None
        if data is not None:
            self._video.write(data)
            video = (self._video_pos, len(data))
            self._video_pos += len(data)
        elif item.record.video_skipped:
            self.images_skipped += 1
        lm_index = None
        if item.landmarks is not None:
            self._landmarks.write(np.ascontiguousarray(item.landmarks, dtype="<f4").tobytes())
            lm_index = self._lm_count
            self._lm_count += 1
        rec = dataclasses.replace(item.record, video=video, landmarks=lm_index)
        self._frames.write(dumps(rec.to_json()) + "\n")
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

    def __exit__(self, *exc: Any) -> None:
        self.close()
