"""How fast the tip moves over the skin: its speed on the chart, from the chart positions of successive frames.

The gate's look-ahead asks how far the tip can travel *over the skin* before the
permit runs out. The tip's speed in the camera frame answers another question:
a talking, nodding head moves the tip in the camera while it rests on the skin
(158 mm/s measured against a true glide of 35 mm/s on an unseen face), and a
head and hand moving together would understate it. The chart position already
has the head's motion taken out, so differencing it gives the speed relative
to the skin. Chart millimetres are also the unit of the distances the gate
compares with, so the time to the edge comes out right.

Differencing amplifies the chart position's frame-to-frame jitter; an
exponential smoothing with a 50 ms time constant (as the camera-frame velocity
filter) keeps it small. A gap (no chart position, or more than `max_gap_ns`
between samples) resets it: right after a reset the speed is unknown (None),
which the gate denies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class SkinSpeed:
    tau_s: float = 0.05
    max_gap_ns: int = 150_000_000
    _last: tuple[int, float, float] | None = None
    _vel: tuple[float, float] | None = None

    def reset(self) -> None:
        self._last = None
        self._vel = None

    def update(self, t_ns: int, uv: tuple[float, float] | None) -> float | None:
        """Add this frame's chart position (None: none this frame); the smoothed speed in chart mm/s, or None."""
        if uv is None or not (math.isfinite(uv[0]) and math.isfinite(uv[1])):
            self.reset()
            return None
        if self._last is None or not (0 < t_ns - self._last[0] <= self.max_gap_ns):
            self._last, self._vel = (t_ns, float(uv[0]), float(uv[1])), None
            return None
        dt = (t_ns - self._last[0]) / 1e9
        v = ((uv[0] - self._last[1]) / dt, (uv[1] - self._last[2]) / dt)
        if self._vel is None:
            self._vel = v
        else:
            a = dt / (self.tau_s + dt)
            self._vel = (self._vel[0] + a * (v[0] - self._vel[0]), self._vel[1] + a * (v[1] - self._vel[1]))
        self._last = (t_ns, float(uv[0]), float(uv[1]))
        return math.hypot(*self._vel)
