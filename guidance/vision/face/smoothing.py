"""One Euro filter for landmark streams (Casiez, Roussel & Vogel, CHI 2012).

A still face must not jitter (low cutoff when slow) and a moving face must not
lag (cutoff rises with speed). Speed is measured in face sizes per second
(`value_scale = 1 / face size in px`) so that the same parameters work for a
face near the camera and one far from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroConfig:
    min_cutoff_hz: float = 0.05
    beta: float = 80.0
    d_cutoff_hz: float = 1.0


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Vectorised One Euro filter over an array of values sharing one timestamp."""

    def __init__(self, config: OneEuroConfig = OneEuroConfig()):
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t_ns: int | None = None

    def __call__(self, value: np.ndarray, t_ns: int, value_scale: float = 1.0) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self._x is None or self._t_ns is None or t_ns <= self._t_ns:
            # First sample, or time did not advance: nothing to filter against.
            if self._x is None or self._t_ns is None:
                self._x, self._dx, self._t_ns = value.copy(), np.zeros_like(value), t_ns
            return self._x.astype(np.float32)
        assert self._dx is not None, "_dx is set together with _x"
        dt = (t_ns - self._t_ns) * 1e-9
        cfg = self.config
        dx = (value - self._x) * value_scale / dt
        a_d = _alpha(cfg.d_cutoff_hz, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = cfg.min_cutoff_hz + cfg.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = a * value + (1 - a) * self._x
        self._t_ns = t_ns
        return self._x.astype(np.float32)
