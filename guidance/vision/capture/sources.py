"""Frame sources: camera, video file, image sequence — all timestamped on one clock.

Every frame carries its index and a capture time in `time.monotonic_ns()`
units. For files the time is derived from the container's timestamps (offset
to the moment the source was opened) so that replaying a recording keeps its
real timing; for cameras it is taken when the frame is grabbed. A camera source
runs a grabber thread that keeps only the newest frame: the consumer never
works on a stale frame, and every frame it skipped is counted as dropped.

A file read as fast as the consumer takes it (`guidance run --no-realtime`)
has no capture clock at all: with `stamp_on_read=True` each frame is stamped
when it is read, as a camera stamps a frame when it is grabbed, so the file
plays like a camera running at the consumer's pace and a frame's age is what
the consumer made of it.

Opening checks what can be checked at once: a video file must decode its first
frame and a camera must deliver one, so a command fails before it has written
anything. A video that ends well before the frame count its header announced
says so (`guidance.errors.notice`: one warning line under the CLI).
"""

from __future__ import annotations

import glob
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from guidance.errors import SourceError, native_stderr_silenced, notice

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Frame:
    index: int
    t_capture_ns: int
    image: np.ndarray  # BGR uint8, HxWx3

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


class FrameSource:
    """Iterable of frames; a context manager that releases the device or file."""

    name: str = ""
    fps: float = 0.0
    dropped: int = 0
    size: tuple[int, int] | None = None  # (width, height) of the first frame, known once the source is open

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def read(self) -> Frame | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoFileSource(FrameSource):
    """A video file; capture times follow the container's presentation timestamps.

    With `realtime=True` the file plays like a camera: a frame is handed out
    no earlier than its capture time, and frames whose time has already passed
    by more than a frame period are skipped (counted in `dropped`), so a slow
    consumer always gets the newest frame, as from a live camera.

    `start_at_ns=T` (realtime only) fixes when that camera started, on the
    shared CLOCK_MONOTONIC (`time.monotonic_ns`): frame i is captured at
    exactly T + round(i × 1e9 / fps) and released no earlier than that
    (T in the future: the first read waits). Another process given the same T
    — `guidance controller-sim --contact-truth SIM_DIR --t0-ns T` — then knows
    which frame of the video is "now".
    """

    def __init__(self, path: str | Path, *, max_frames: int | None = None, resize: tuple[int, int] | None = None,
                 realtime: bool = False, start_at_ns: int | None = None, stamp_on_read: bool = False):
        self.path = Path(path)
        self.name = str(self.path)
        if not self.path.exists():
            raise SourceError("video file not found", path=self.path)
        if self.path.is_dir():
            raise SourceError("is a folder, not a video file", path=self.path)
        if start_at_ns is not None and (not realtime or isinstance(start_at_ns, bool) or not isinstance(start_at_ns, int)
                                        or start_at_ns < 0):
            raise SourceError("a start time needs realtime playback and a non-negative integer of ns", path=self.path)
        if stamp_on_read and realtime:
            raise SourceError("a file played in real time keeps its own clock; stamp_on_read is for as-fast-as-possible",
                              path=self.path)
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError("cannot open as a video (unknown format or corrupt)", path=self.path)
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps <= 1000.0 else 30.0  # a header without a sane rate: the nominal 30
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0
        self.frame_count = int(count) if 0 < count < 1e9 else 0  # what the header announces (0: unknown)
        self._index = 0
        self._max = max_frames
        self._resize = resize
        self._last_pts_ns = -1
        self._realtime = realtime
        self._stamp_on_read = stamp_on_read
        self._start_at = start_at_ns
        self._ended = False
        # The first frame is decoded now: a file that opens but decodes nothing fails here, before the
        # caller has made anything (a recording folder, an output video).
        ok, image = self._cap.read()
        if not ok or image is None:
            self._cap.release()
            raise SourceError("no decodable frame (corrupt, empty or not a video)", path=self.path)
        self._peeked: tuple[np.ndarray, float] | None = (image, float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0))
        self.size = tuple(resize) if resize else (image.shape[1], image.shape[0])  # type: ignore[assignment]
        self._t0_ns = time.monotonic_ns()

    def frame_time_ns(self, index: int) -> int:
        """With a start time: when frame `index` is captured (T + round(index × 1e9 / fps))."""
        assert self._start_at is not None
        return self._start_at + int(round(index * 1e9 / self.fps))

    # -- the file, one frame at a time (the first one was decoded at open) -------------------------------
    def _decode(self) -> tuple[np.ndarray, float] | None:
        if self._peeked is not None:
            got, self._peeked = self._peeked, None
            return got
        ok, image = self._cap.read()
        if not ok or image is None:
            self._end()
            return None
        return image, float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)

    def _skip(self) -> float | None:
        """Pass over one frame without decoding it; its position in ms (None: the file ended)."""
        if self._peeked is not None:
            pos = self._peeked[1]
            self._peeked = None
            return pos
        if not self._cap.grab():
            self._end()
            return None
        return float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)

    def _end(self) -> None:
        """The file gave no more frames: say so once if that is well short of what its header announced."""
        if not self._ended:
            self._ended = True
            n, k = self.frame_count, self._index
            if n and n - k > max(3, n // 100):  # containers round their count by a frame or two
                notice(f"{self.path}: video ended after {k} of the {n} frames its header announces "
                       "(cut short or damaged)")

    def _next_pts_ns(self, pos_ms: float) -> int:
        pts_ns = int(round(pos_ms * 1e6)) if pos_ms and pos_ms > 0 else int(round(self._index * 1e9 / self.fps))
        if pts_ns <= self._last_pts_ns:  # some containers repeat or omit timestamps
            pts_ns = self._last_pts_ns + int(1e9 / self.fps)
        self._last_pts_ns = pts_ns
        return pts_ns

    def _read_from_start_time(self) -> Frame | None:
        period_ns = int(1e9 / self.fps)
        # More than a frame late: skip (grab without decoding) to the newest frame, as a camera would.
        while time.monotonic_ns() - self.frame_time_ns(self._index) > period_ns:
            if self._skip() is None:
                return None
            self._index += 1
            self.dropped += 1
            if self._max is not None and self._index >= self._max:
                return None
        got = self._decode()
        if got is None:
            return None
        image = got[0]
        t = self.frame_time_ns(self._index)
        while (wait_ns := t - time.monotonic_ns()) > 0:
            time.sleep(wait_ns / 1e9)
        if self._resize:
            image = cv2.resize(image, self._resize, interpolation=cv2.INTER_AREA)
        frame = Frame(self._index, t, image)
        self._index += 1
        return frame

    def read(self) -> Frame | None:
        if self._max is not None and self._index >= self._max:
            return None
        if self._start_at is not None:
            return self._read_from_start_time()
        if self._realtime and self._index == 0:
            self._t0_ns = time.monotonic_ns()  # the clock starts with the first frame, not at open
        if self._realtime and self._index > 0:
            period_ns = int(1e9 / self.fps)
            # Behind by more than a frame: skip (grab without decoding) to the newest frame.
            while time.monotonic_ns() - (self._t0_ns + self._last_pts_ns + period_ns) > period_ns:
                pos = self._skip()
                if pos is None:
                    return None
                self._next_pts_ns(pos)
                self._index += 1
                self.dropped += 1
                if self._max is not None and self._index >= self._max:
                    return None
        got = self._decode()
        if got is None:
            return None
        image, pos_ms = got
        pts_ns = self._next_pts_ns(pos_ms)
        if self._realtime:
            wait_ns = self._t0_ns + pts_ns - time.monotonic_ns()
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)
        if self._resize:
            image = cv2.resize(image, self._resize, interpolation=cv2.INTER_AREA)
        # as fast as possible: stamped now, as a camera stamps the frame it grabs (see the module doc)
        t_ns = time.monotonic_ns() if self._stamp_on_read else self._t0_ns + pts_ns
        frame = Frame(self._index, t_ns, image)
        self._index += 1
        return frame

    def close(self) -> None:
        self._cap.release()


class ImageSequenceSource(FrameSource):
    """A folder or glob of still images, played at a nominal frame rate."""

    def __init__(self, pattern: str | Path, *, fps: float = 30.0, repeat: int = 1, max_frames: int | None = None,
                 stamp_on_read: bool = False):
        p = Path(pattern)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files = [p]
        else:
            files = sorted(Path(f) for f in glob.glob(str(pattern)) if Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError("no images found", path=pattern)
        self.name = str(pattern)
        self.files = files
        self.fps = fps
        self._repeat = repeat
        self._max = max_frames
        self._stamp_on_read = stamp_on_read
        self._index = 0
        self._cache: dict[Path, np.ndarray] = {}
        # the first image is decoded now: an unreadable one fails before the caller has made anything
        self._first: np.ndarray | None = self._decode(files[0])
        self.size = (self._first.shape[1], self._first.shape[0])
        self._t0_ns = time.monotonic_ns()

    @staticmethod
    def _decode(f: Path) -> np.ndarray:
        with native_stderr_silenced():  # libjpeg/libpng complaints: we say "cannot decode" once
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError("cannot decode image", path=f)
        return image

    def read(self) -> Frame | None:
        total = len(self.files) * self._repeat
        if self._max is not None:
            total = min(total, self._max)
        if self._index >= total:
            return None
        f = self.files[self._index % len(self.files)]
        image = self._cache.get(f)
        if image is None:
            if self._first is not None:
                image, self._first = self._first, None
            else:
                image = self._decode(f)
            if self._repeat > 1:
                self._cache[f] = image
        t_ns = time.monotonic_ns() if self._stamp_on_read else self._t0_ns + int(round(self._index * 1e9 / self.fps))
        frame = Frame(self._index, t_ns, image)
        self._index += 1
        return frame


class CameraSource(FrameSource):
    """A live camera (index or URL); always hands out the newest frame.

    A grabber thread reads continuously and overwrites a one-frame slot; a
    frame that was overwritten before anyone took it counts as dropped. If no
    frame arrives for `stall_timeout_s` the source raises instead of hanging.
    """

    def __init__(self, spec: int | str, *, stall_timeout_s: float = 2.0, size: tuple[int, int] | None = None,
                 max_frames: int | None = None):
        self.name = str(spec)
        self._max = max_frames
        self._cap = cv2.VideoCapture(spec)
        if not self._cap.isOpened():
            raise SourceError("cannot open camera", path=str(spec))
        if size:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
        self._stall = stall_timeout_s
        self._cond = threading.Condition()
        self._slot: tuple[int, np.ndarray] | None = None
        self._grabbed = 0
        self._taken_index = -1
        self._index = 0
        self._failed: str | None = None
        self._running = True
        self._thread = threading.Thread(target=self._grab, name=f"camera-{spec}", daemon=True)
        self._thread.start()
        # A camera that opens but delivers nothing fails here, before the caller has made anything.
        deadline = time.monotonic() + self._stall
        with self._cond:
            while self._slot is None and self._failed is None and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            why = self._failed or (None if self._slot is not None else f"no frame for {self._stall:.1f} s after opening")
            if self._slot is not None:
                self.size = (self._slot[1].shape[1], self._slot[1].shape[0])
        if why:
            self.close()
            raise SourceError(why, path=self.name)

    def _grab(self) -> None:
        while self._running:
            ok, image = self._cap.read()
            t = time.monotonic_ns()
            with self._cond:
                if not ok or image is None:
                    self._failed = "camera stopped delivering frames (unplugged?)"
                    self._cond.notify_all()
                    return
                if self._slot is not None:
                    self.dropped += 1  # overwritten before it was taken
                self._slot = (t, image)
                self._grabbed += 1
                self._cond.notify_all()

    def read(self) -> Frame | None:
        if self._max is not None and self._index >= self._max:
            return None
        deadline = time.monotonic() + self._stall
        with self._cond:
            while self._slot is None:
                if self._failed:
                    raise SourceError(self._failed, path=self.name)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SourceError(f"no frame for {self._stall:.1f} s (camera stalled)", path=self.name)
                self._cond.wait(remaining)
            t, image = self._slot
            self._slot = None
        frame = Frame(self._index, t, image)
        self._index += 1
        return frame

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=1.0)
        self._cap.release()


def open_source(spec: str | int | Path, **kwargs) -> FrameSource:
    """Open a camera (int index or URL), a video file, or an image folder/glob/file."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return CameraSource(int(spec), **kwargs)
    s = str(spec)
    if "://" in s:
        return CameraSource(s, **kwargs)
    p = Path(s)
    if p.is_dir() or any(ch in s for ch in "*?[") or p.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSequenceSource(s, **kwargs)
    return VideoFileSource(p, **kwargs)
