"""A scripted practitioner at the console: arms a simulated session over the run's control channel at set times.

A simulated session is normally armed once, at its start (`guidance run --arm`). Some scenes need the
practitioner again: the two-face session (sim/two_face_session.py) disarms a second after another person's face
hides the client's, and in a clinic the practitioner arms it again once the client is back in view. This does
what the console does (`guidance/live/control.py`'s `ControlClient`: heartbeats, one watching browser, an
`arm` command), so the run applies it between two frames with the same checks as a console's arm.

Times are on the simulated session's clock: frame i is released at `t0_ns + i / fps` (`guidance run
--start-at-ns`), so "arm at 18 s" is "arm before the frame of 18 s".
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from guidance.live.control import ControlClient

# An arm the run does not take at once (it starts, or is between two frames) is asked again for this long.
ARM_RETRY_S = 3.0


@dataclass
class ArmAttempt:
    at_s: float  # when it was due, s after t0
    ok: bool = False
    detail: str = ""
    answered_s: float | None = None  # when the run said armed, s after t0


@dataclass
class Practitioner:
    """Arms the session at `arm_at_s` (s after `t0_ns`) through the control channel at `endpoint`."""

    endpoint: str
    t0_ns: int
    arm_at_s: tuple[float, ...]
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    attempts: list[ArmAttempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._client: ControlClient | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Practitioner":
        self._client = ControlClient(self.endpoint, token=self.token)  # heartbeats from now on
        self._thread = threading.Thread(target=self._run, name="practitioner", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._client is not None
        for at_s in sorted(self.arm_at_s):
            attempt = ArmAttempt(at_s)
            self.attempts.append(attempt)
            if self._stop.wait(max(0.0, (self.t0_ns + at_s * 1e9 - time.monotonic_ns()) / 1e9)):
                return
            deadline = time.monotonic() + ARM_RETRY_S
            while not self._stop.is_set() and time.monotonic() < deadline:
                reply = self._client.request("arm", timeout_s=0.5)
                attempt.ok, attempt.detail = bool(reply.get("ok")), str(reply.get("detail", ""))
                if attempt.ok:
                    attempt.answered_s = (time.monotonic_ns() - self.t0_ns) / 1e9
                    break
                self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._client is not None:
            self._client.close()
