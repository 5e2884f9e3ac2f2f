"""A video file played again and again like a camera (`guidance run --loop`): kiosks, demos, console tests.

Each pass is the file played in real time (`VideoFileSource(realtime=True)`);
frame indices and capture times carry on across passes, so the recording reads
as one continuous camera session.
"""

from __future__ import annotations

from pathlib import Path

from guidance.vision.capture.sources import Frame, FrameSource, VideoFileSource


class LoopingVideoSource(FrameSource):
    def __init__(self, path: str | Path, *, realtime: bool = True):
        self.path = Path(path)
        self.name = str(self.path)
        self._realtime = realtime
        self._src = VideoFileSource(self.path, realtime=realtime)
        self.fps = self._src.fps
        self._offset = 0  # frames handed out in earlier passes
        self._last_t = -1
        self.passes = 1
        self._dropped_before = 0

    @property
    def dropped(self) -> int:  # type: ignore[override]
        return self._dropped_before + self._src.dropped

    def read(self) -> Frame | None:
        f = self._src.read()
        if f is None:
            self._offset += self._src._index
            self._dropped_before += self._src.dropped
            self._src.close()
            self._src = VideoFileSource(self.path, realtime=self._realtime)
            self.passes += 1
            f = self._src.read()
            if f is None:
                return None
        t = max(f.t_capture_ns, self._last_t + 1)
        self._last_t = t
        return Frame(self._offset + f.index, t, f.image)

    def close(self) -> None:
        self._src.close()
