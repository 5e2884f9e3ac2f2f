"""What a band session asks of the practitioner while it registers (the touch to make, and where), for the live
overlay and the player alike: both read a `BandHead` (live, or rebuilt from the recording by
`session.records.band_head`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from guidance.vision.face.head_band import NOT_REGISTERED
from guidance.vision.face.touch_registration import NOTCH_POINT, TOUCH_POINTS


def band_prompt(band: Any) -> str:
    """A band session waiting for its registration: what the practitioner should do (the touch asked for); ""
    otherwise."""
    if band is None or band.state != "unregistered" or band.registration is None or band.registration.registered:
        return ""
    text = band.registration.reason
    prefix = f"{NOT_REGISTERED}: "
    return text[len(prefix):] if text.startswith(prefix) else ""


def touch_target(band: Any, landmarks_px: np.ndarray | None,
                 notch_px: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """A touch registration under way (`band`: this frame's `BandHead`): the pixel of the landmark asked for on
    this frame's face landmarks, or, when the sternal notch is asked for, `notch_px`; None otherwise (no face, not
    asked, or registered)."""
    reg = band.registration if band is not None else None
    if (reg is None or reg.registered or reg.method != "touch" or band.state != "unregistered"
            or landmarks_px is None or "touch " not in reg.reason):
        return None
    k = int(reg.samples)
    if k == len(TOUCH_POINTS) and NOTCH_POINT.words in reg.reason:
        return notch_px
    if not 0 <= k < len(TOUCH_POINTS):
        return None
    x, y = np.asarray(landmarks_px)[TOUCH_POINTS[k].landmark][:2]
    return float(x), float(y)
