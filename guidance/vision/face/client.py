"""The client's face: what it looks like, so that another face never takes its place.

When the session is armed the tracked face becomes the client's (`FaceTracker.lock_client`).
From then on a face is the client's only if it continues the client's track, or,
after the track was lost, if it *looks like* the client: no face recognition
model (nothing new to download), two cheap cues measured on the client's own
face at arming and compared with each candidate:

- colour: the hue-saturation histogram (16 x 8 bins, brightness left out) of the
  skin inside the face oval (landmarks), compared by Bhattacharyya distance
  (0 = the same distribution, 1 = disjoint);
- texture: the face from the outer eye corners to the mouth warped to 32 x 32
  grey pixels (blurred, zero mean, unit norm), compared as 1 - correlation.

Measured (docs/face_tracking.md, "The client's face"): one person through a
video at most 0.11 colour / 0.17 texture (single_face.mp4), 0.18 / 0.78 with hands
over the face and head turns (WolfgangLanger_Pexels.mp4); 34 pairs of different
people among nine pinned sample faces at least 0.19 colour and 0.32 texture, two
pairs under both strict limits, none under the strict rule (which also bounds
their sum). These are guards, not identification: two people of the same skin
tone under the same light can come close. So the tracked face keeps its track
(continuity, checked every frame with looser limits), a re-detection takes only
a face that passes the strict rule (the one nearest where the client was if
several do), and anything uncertain is refused, which denies (`other_face`),
never permits.

Landmark geometry ratios (eye, nose, mouth, face widths over the eye distance,
3D) were measured too and dropped: 0.02-0.13 within one person, 0.05 and up
between people.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from guidance.vision.models import load_topology

# Strict: a re-detected face (anything in the image): both under their limits and their sum of ratios under
# STRICT_SUM. Loose: the tracked face (its track continues the client's).
STRICT_COLOUR, STRICT_TEXTURE = 0.20, 0.60
STRICT_SUM = 1.5
LOOSE_COLOUR, LOOSE_TEXTURE = 0.22, 0.70
# The recent look is updated from a tracked frame only when it is this close to the look at arming.
RECENT_COLOUR, RECENT_TEXTURE = 0.15, 0.30
_TEXTURE_DST = np.array([[6, 10], [26, 10], [16, 26]], np.float32)  # outer eye corners 33, 263 and mouth centre 13
_TEXTURE_SRC = (33, 263, 13)


@lru_cache(maxsize=1)
def face_oval() -> np.ndarray:
    """The face-oval landmark indices in ring order (mediapipe's FACEMESH_FACE_OVAL)."""
    topo = load_topology()["connections"]
    nxt: dict[int, list[int]] = {}
    for a, b in topo["FACEMESH_FACE_OVAL"]:
        nxt.setdefault(a, []).append(b)
        nxt.setdefault(b, []).append(a)
    ring, prev = [10], -1
    while True:
        n = [x for x in nxt[ring[-1]] if x != prev][0]
        if n == ring[0]:
            break
        prev = ring[-1]
        ring.append(n)
    return np.asarray(ring)


@dataclass(frozen=True)
class Appearance:
    """A face's colour histogram and texture, with where it was and how big (eye distance, px)."""

    hist: np.ndarray  # (16, 8) float32, sums to 1
    texture: np.ndarray  # (1024,) float32, zero mean, unit norm
    centre_px: tuple[float, float]
    size_px: float


def appearance(image: np.ndarray, landmarks: np.ndarray) -> Appearance:
    lm = np.asarray(landmarks, np.float64)
    oval = lm[face_oval(), :2]
    h, w = image.shape[:2]
    x0, y0 = np.clip(np.floor(oval.min(axis=0)).astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(oval.max(axis=0)).astype(int) + 1, 1, [w, h])
    crop = np.ascontiguousarray(image[y0:y1, x0:x1]) if image.ndim == 3 else cv2.cvtColor(
        np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_GRAY2BGR)
    mask = np.zeros(crop.shape[:2], np.uint8)
    if crop.size:
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(oval - [x0, y0]).astype(np.int32)), 1)
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV) if crop.size else np.zeros((1, 1, 3), np.uint8)
    # skin only: not too dark, and coloured (the handpiece's plates and shaft are white, black and grey)
    mask = (mask & (hsv[..., 2] > 40) & (hsv[..., 1] > 25)).astype(np.uint8) if crop.size else np.zeros((1, 1), np.uint8)
    hist = cv2.calcHist([hsv], [0, 1], mask, [16, 8], [0, 180, 0, 256])
    hist = (hist / max(float(hist.sum()), 1.0)).astype(np.float32)
    M = cv2.getAffineTransform(lm[list(_TEXTURE_SRC), :2].astype(np.float32), _TEXTURE_DST)
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    face = cv2.GaussianBlur(cv2.warpAffine(grey, M, (32, 32), flags=cv2.INTER_AREA).astype(np.float32), (0, 0), 1.0)
    v = face.ravel() - face.mean()
    v = (v / (float(np.linalg.norm(v)) + 1e-6)).astype(np.float32)
    centre = oval.mean(axis=0)
    return Appearance(hist, v, (float(centre[0]), float(centre[1])), float(np.linalg.norm(lm[33, :2] - lm[263, :2])))


def oval_centre(landmarks: np.ndarray) -> tuple[float, float]:
    c = np.asarray(landmarks, np.float64)[face_oval(), :2].mean(axis=0)
    return float(c[0]), float(c[1])


def eye_distance(landmarks: np.ndarray) -> float:
    lm = np.asarray(landmarks, np.float64)
    return float(np.linalg.norm(lm[33, :2] - lm[263, :2]))


def distance(a: Appearance, b: Appearance) -> tuple[float, float]:
    """(colour, texture) distances: 0 for the same image, about 1 for unrelated ones."""
    colour = float(cv2.compareHist(a.hist, b.hist, cv2.HISTCMP_BHATTACHARYYA))
    return colour, float(1.0 - float(a.texture @ b.texture))


def near(a: Appearance, b: Appearance) -> bool:
    """b is where a was, at a's size: centres within one eye distance, eye distances within 0.7-1.4x."""
    d = float(np.hypot(a.centre_px[0] - b.centre_px[0], a.centre_px[1] - b.centre_px[1]))
    ratio = b.size_px / max(a.size_px, 1e-6)
    return d <= 1.0 * a.size_px and 0.7 <= ratio <= 1.4


def matches(colour: float, texture: float, *, loose: bool = False, recent: bool = False) -> bool:
    c, t = (RECENT_COLOUR, RECENT_TEXTURE) if recent else (LOOSE_COLOUR, LOOSE_TEXTURE) if loose else (
        STRICT_COLOUR, STRICT_TEXTURE)
    if not (colour <= c and texture <= t):
        return False
    return loose or recent or colour / STRICT_COLOUR + texture / STRICT_TEXTURE <= STRICT_SUM
