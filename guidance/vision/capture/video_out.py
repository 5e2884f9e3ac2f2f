"""Writing videos: atomically (a reader never sees half a file), or as a stream that survives a kill.

- `AtomicVideoWriter` (replay, annotated landmarks, simulations): an MP4 written
  into `<name>.part.mp4` and renamed into place on a clean close. An MP4 keeps its
  index at the end, so a killed writer leaves nothing playable: fine for a
  command that can simply be run again.
- `StreamVideoWriter` (the live overlay of `guidance run --out`, which cannot be
  run again): Matroska (`.mkv`), written straight to its name. Matroska is a
  stream of self-contained clusters; a file cut off by `kill -9` or a power loss
  plays up to its last cluster in VLC, mpv, ffmpeg, Windows' own players and
  OpenCV, and a run that is still going can be watched already. What a kill
  loses is what the writer still held in memory: about the last second or two.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from guidance.errors import UserError
from guidance.outputs import output_file

STREAM_SUFFIXES = (".mkv",)


class _MP4VWriter:
    """An OpenCV mp4v writer into `target` that resizes frames to `size` and counts them."""

    def __init__(self, target: Path, shown: Path, fps: float, size: tuple[int, int]):
        self._w = cv2.VideoWriter(str(target), cv2.VideoWriter.fourcc(*"mp4v"), float(fps or 30.0), size)
        if not self._w.isOpened():
            raise UserError("cannot open for writing as a video", path=shown)
        self.size = size
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self._w.write(image)
        self.frames += 1


class AtomicVideoWriter(_MP4VWriter):
    """mp4 (mp4v) writer into `<name>.part.mp4`, renamed into place on successful close."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], *, field: str = "video"):
        self.path = output_file(path, field, what="video file")
        self.tmp = self.path.with_name(self.path.stem + ".part" + self.path.suffix)
        super().__init__(self.tmp, self.path, fps, size)

    def close(self, *, keep: bool = True) -> None:
        self._w.release()
        if keep:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "AtomicVideoWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(keep=exc_type is None)


class StreamVideoWriter(_MP4VWriter):
    """Matroska (MPEG-4 video) written straight to `path`: playable while written and after a kill."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], *, field: str = "--out"):
        self.path = output_file(path, field, suffixes=STREAM_SUFFIXES, what="Matroska video")
        super().__init__(self.path, self.path, fps, size)

    def close(self) -> None:
        self._w.release()  # writes the index (cues) and duration; the file played without them too

    def __enter__(self) -> "StreamVideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def save_npy_atomic(path: str | Path, array: np.ndarray, *, field: str = "--output") -> None:
    path = output_file(path, field, what=".npy file")
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)
