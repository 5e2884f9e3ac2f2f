"""Writing annotated videos atomically: a reader never sees a half-written file."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from guidance.errors import UserError


class AtomicVideoWriter:
    """mp4 (mp4v) writer into `<name>.part.mp4`, renamed into place on successful close."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.stem + ".part" + self.path.suffix)
        self._w = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(fps or 30.0), size)
        if not self._w.isOpened():
            raise UserError("cannot open for writing as a video", path=self.path)
        self.size = size
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self._w.write(image)
        self.frames += 1

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


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)
