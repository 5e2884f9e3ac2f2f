"""Clock offset between the service and one controller, NTP-style.

The service sends `ping(t1)`; the controller answers `pong(t1, t2, t3)` with
its own receive and send times; the service stamps t4 on arrival. Then

    offset = ((t2 - t1) + (t3 - t4)) / 2     (controller clock minus service clock)
    rtt    = (t4 - t1) - (t3 - t2)

and the true offset lies within ±rtt/2 of that. We keep the sample with the
smallest rtt among the recent ones (queueing only ever adds delay, so the
fastest exchange is the most trustworthy). A controller clock that steps
(reboot of its timer, suspend, a wrapped counter) shows up as consecutive
good samples far from the estimate; then the old window is thrown away
rather than averaged with the new truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OffsetSample:
    t_service_ns: int  # t4, when the sample was taken (service clock)
    offset_ns: int
    rtt_ns: int


@dataclass
class ClockOffsetEstimator:
    window: int = 16
    min_samples: int = 2
    step_threshold_ns: int = 3_000_000  # a jump bigger than this (and than 4 × uncertainty) is a step
    step_confirm: int = 2  # consecutive far samples before the estimate is reset
    samples: list[OffsetSample] = field(default_factory=list)
    steps: int = 0
    rejected: int = 0
    _far: list[OffsetSample] = field(default_factory=list)

    def add(self, t1: int, t2: int, t3: int, t4: int) -> OffsetSample | None:
        """One ping/pong exchange; returns the sample, or None if it was impossible."""
        rtt = (t4 - t1) - (t3 - t2)
        if rtt < 0 or t3 < t2 or t4 < t1:
            self.rejected += 1
            return None
        s = OffsetSample(t4, ((t2 - t1) + (t3 - t4)) // 2, rtt)
        best = self.best()
        if best is not None and len(self.samples) >= self.min_samples:
            limit = max(self.step_threshold_ns, 4 * (best.rtt_ns // 2 + s.rtt_ns // 2))
            if abs(s.offset_ns - best.offset_ns) > limit:
                self._far.append(s)
                if len(self._far) >= self.step_confirm:
                    self.samples = list(self._far)
                    self._far = []
                    self.steps += 1
                return s
        self._far = []
        self.samples.append(s)
        if len(self.samples) > self.window:
            del self.samples[0]
        return s

    def best(self) -> OffsetSample | None:
        return min(self.samples, key=lambda s: s.rtt_ns) if self.samples else None

    @property
    def synced(self) -> bool:
        return len(self.samples) >= self.min_samples

    @property
    def offset_ns(self) -> int | None:
        b = self.best()
        return b.offset_ns if b is not None and self.synced else None

    @property
    def uncertainty_ns(self) -> int | None:
        b = self.best()
        return b.rtt_ns // 2 + 1 if b is not None and self.synced else None

    def to_service_ns(self, t_ctrl_ns: int) -> int | None:
        off = self.offset_ns
        return None if off is None else t_ctrl_ns - off
