"""The browser player's server side: a recording's timeline as JSON, and each frame composed as a JPEG.

The picture is the one `guidance replay` draws (`FrameComposer`: the live overlay
from the record, coverage rebuilt up to that frame, the face chart beside it and
the timeline strip below), so the browser shows exactly what the desktop player
and the practitioner saw. Navigation (play, step, next denial, next violation,
seek on the timeline) runs in the page from `data()`.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from guidance.review.player import FrameComposer
from guidance.review.timeline import load_timeline


class BrowserPlayer:
    def __init__(self, recording: str):
        self.tl = load_timeline(recording)
        self.composer = FrameComposer(self.tl)
        self._lock = threading.Lock()  # the composer's coverage replay is stateful
        self._cache: dict[int, bytes] = {}

    def data(self) -> dict:
        tl = self.tl
        cov = []  # share of planned cells at target, per frame where pulses landed (coverage over time)
        from guidance.review.timeline import CoverageReplay
        replay = CoverageReplay(tl)
        marks = sorted({p.frame for p in tl.pulses})
        for f in marks:
            c = replay.at(f)
            vals = [c.zone(z).fraction_at_target for z in tl.plan.zones]
            cov.append([f, float(np.mean(vals)) if vals else 0.0])
        return {
            "ok": True, "n": tl.n, "fps": tl.fps, "duration_s": tl.duration_s,
            "t_s": [round(float(t), 3) for t in tl.t_s],
            "permit": [bool(p) for p in tl.permit], "reason": list(tl.reason),
            "pulses": [p.frame for p in tl.pulses], "violations": [v.frame for v in tl.violations],
            "denials": [{"start": e.start, "end": e.end, "reason": e.reason} for e in tl.episodes if e.armed],
            "coverage": cov, "plan": tl.plan.plan_id,
        }

    def jpeg(self, i: int) -> bytes:
        i = min(max(int(i), 0), self.tl.n - 1)
        with self._lock:
            hit = self._cache.get(i)
            if hit is not None:
                return hit
            img = self.composer.compose(i)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
            data = buf.tobytes()
            if len(self._cache) > 300:
                self._cache.clear()
            self._cache[i] = data
            return data
