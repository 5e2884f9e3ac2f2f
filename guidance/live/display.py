"""The display thread: overlay rendering, the window and the overlay video, never in the way of the gate.

The newest frame wins: the hot path hands each frame over without waiting, and
when drawing falls behind, frames are dropped here (counted) rather than delaying
a permit. Nor does it take the cores from the gate: a frame the gate published late
(`submit(behind=True)`: its capture-to-publish latency over a frame interval) is
drawn only if none was for 1/`min_fps` s; the overlay video repeats the last drawn
picture for the frames it skipped, so it keeps the camera's time. Drawing, encoding
and the gate share two cores and one interpreter lock: on the rendered neck session
the gate's median latency was 43 ms with the overlay video drawn at every frame,
22.6 ms without it, and 225 against 14 frames denied `camera_stalled` (2 cores,
nothing else running). Keys pressed in the window are queued for the run loop, which applies
them before the next frame's decision. With a console attached (`--control`), the
same picture goes to it as a JPEG, at most `frame_fps` a second, encoded here.
"""

from __future__ import annotations

import queue
import threading
import time

import cv2
import numpy as np

from guidance.live.control import state_json
from guidance.live.overlay import OverlayState, draw_overlay
from guidance.live.priority import lower_this_thread
from guidance.vision.capture.video_out import StreamVideoWriter

WINDOW = "guidance"


class Display:
    """Overlay rendering + window/video writing on its own thread; the newest frame wins."""

    def __init__(self, *, window: bool, out: str | None, fps: float, control=None, min_fps: float = 10.0):
        self.window = window
        self.min_fps = min_fps
        self.yielded = 0  # frames not drawn because the gate was behind (counted in `dropped` too)
        self._last_taken = -float("inf")  # monotonic s
        self._skipped = 0  # frames skipped since the last one taken: the video repeats that one for them
        self.out = out
        self.fps = fps
        self.control = control  # a ControlServer: the console gets the same picture (rate-limited, JPEG)
        self.q: queue.Queue = queue.Queue(maxsize=4)
        self.keys: queue.Queue[int] = queue.Queue()
        self.dropped = 0
        self.written = 0
        self._writer: StreamVideoWriter | None = None  # Matroska: playable even after a kill -9
        self._thread = threading.Thread(target=self._run, name="overlay", daemon=True)
        self._error: BaseException | None = None
        self._thread.start()

    def submit(self, image: np.ndarray, state: OverlayState, finish, *, behind: bool = False) -> None:
        """Hand a frame over without waiting. `behind`: the gate published it late; it is drawn only if no frame
        was for 1/min_fps s."""
        now = time.monotonic()
        if behind and now - self._last_taken < 1.0 / self.min_fps:
            self.yielded += 1
            self.dropped += 1
            self._skipped += 1
            return
        try:
            self.q.put_nowait((image, state, finish, self._skipped))
        except queue.Full:
            self.dropped += 1
            self._skipped += 1
            return
        self._last_taken = now
        self._skipped = 0

    def _run(self) -> None:
        # drawing, the window, the video and the console's JPEGs yield to the gate's two stages
        lower_this_thread()
        try:
            sized = False
            last: np.ndarray | None = None
            if self.window:
                cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
            while True:
                item = self.q.get()
                if item is None:
                    if last is not None:
                        self._write(last, self._skipped)  # the frames skipped after the last drawn one
                    break
                image, state, finish, skipped = item
                to_console = self.control is not None and self.control.frame_due()
                if not (self.window or self.out or to_console):
                    continue  # only a console listens, and its next picture is not due yet
                finish(state)
                img = draw_overlay(image, state)
                if to_console:
                    self.control.offer_frame(img, state_json(state))
                if self.out:
                    self._write(img, 1 + skipped)  # and the frames skipped before it: the video keeps time
                    last = img
                if self.window:
                    if not sized:  # open at the frame's own size; the practitioner may resize it
                        cv2.resizeWindow(WINDOW, img.shape[1], img.shape[0])
                        sized = True
                    cv2.imshow(WINDOW, img)
                    k = cv2.waitKey(1) & 0xFF
                    if k != 0xFF:
                        self.keys.put(k)
        except BaseException as exc:  # surfaced by close()
            self._error = exc
        finally:
            if self.window:
                cv2.destroyAllWindows()

    def _write(self, img: np.ndarray, times: int) -> None:
        """The overlay video: `img` as the next `times` pictures."""
        assert self.out is not None, "only called with an overlay video to write"
        if self._writer is None:
            self._writer = StreamVideoWriter(self.out, self.fps, (img.shape[1], img.shape[0]))
        for _ in range(times):
            self._writer.write(img)
        self.written += times

    def close(self) -> None:
        self.q.put(None)
        self._thread.join()
        if self._writer is not None:
            self._writer.close()
        if self._error:
            raise self._error
