"""How uncertain the skin point under the tip is: the face mapping's own 1-sigma, per frame, in skin millimetres.

The tip's pixel is mapped onto the skin through the tracked landmarks, and those
carry their own error: the landmark model's frame-to-frame noise, more where
the handpiece covered the face and the skin memory could not show the model the
skin beneath it (skin_memory.py), and more while the face moves (smoothing lag).
The gate adds this to the tip's own uncertainty (in quadrature) and needs that
much more distance from the plan's edges and the exclusions.

    sigma_px = sqrt(base² + (covered · not_filled)² + (motion · px_per_frame)²)
    sigma_mm = sigma_px × mm_per_px

`mm_per_px` is the face's scale at this distance: the canonical face's outer
eye-corner distance over the tracked one. The coefficients were fitted on
simulated sessions of the training faces only (docs/evaluate.md lists them),
so that the true error exceeds three sigma in under 1 % of contact frames
there; the evaluation faces check that it holds on faces never seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Outer eye corners of the 468-point mesh: far apart and never under the handpiece at once.
EYE_CORNERS = (33, 263)


@dataclass(frozen=True)
class MappingSigmaModel:
    base_px: float = 2.2  # landmark mapping noise with the skin in view (or filled from memory)
    covered_px: float = 2.5  # added where the handpiece covers the tip and the memory could not fill it
    motion: float = 0.7  # per px of face motion between frames (smoothing lag, blur)
    max_motion_px: float = 20.0  # beyond this the frame is a re-acquisition, not motion

    def sigma_mm(self, landmarks: np.ndarray | None, previous: np.ndarray | None, canonical_eye_mm: float,
                 covered: bool, filled: bool) -> float | None:
        """The mapping's 1-sigma (mm) for this frame; None without a face."""
        if landmarks is None:
            return None
        iod_px = float(np.linalg.norm(landmarks[EYE_CORNERS[0], :2] - landmarks[EYE_CORNERS[1], :2]))
        if not (iod_px > 1.0 and math.isfinite(iod_px)):
            return math.nan
        mm_per_px = canonical_eye_mm / iod_px
        motion = 0.0
        if previous is not None:
            motion = min(float(np.median(np.linalg.norm(landmarks[:, :2] - previous[:, :2], axis=1))), self.max_motion_px)
        covered_term = self.covered_px if (covered and not filled) else 0.0
        sigma_px = math.sqrt(self.base_px ** 2 + covered_term ** 2 + (self.motion * motion) ** 2)
        return sigma_px * mm_per_px
