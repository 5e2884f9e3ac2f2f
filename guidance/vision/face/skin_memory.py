"""The skin under the handpiece, as last seen: what the face stage shows the landmark model instead of the handpiece.

The landmark model bends the mesh where the handpiece covers the face; with the
handpiece's pixels replaced by the true skin it is back to its clean-frame
accuracy (an oracle fill on a simulated session of an unseen face: tip chart
error 0.81 / 2.03 mm median / p90, against 1.84 / 4.59 mm with the handpiece
in view and 0.73 / 1.71 mm on the clean video). The true skin under the
handpiece is not in this frame, but it was in earlier ones: this memory keeps
the face region as last seen *well clear of the handpiece* (`trust_pad_px`
beyond its silhouette, and only in frames whose handpiece pose is known, so
the handpiece itself never enters the memory), follows the face's 2D motion
between frames (a similarity fitted to the landmarks away from the
handpiece), and fills the silhouette from it.

What the memory cannot know: skin never seen clear of the handpiece (the fill
leaves those pixels as they are) and changes under the handpiece since it was
last seen (an expression, a blink). `fill` reports how much of the silhouette
near the tip it could fill and how old that memory is; the mapping
uncertainty the gate uses grows with both.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FillReport:
    """What one fill did."""

    masked_px: int  # pixels of the silhouette inside the face region
    filled_px: int  # of those, filled from memory
    age_ns: int | None  # age of the memory at the tip (None: not filled there)

    @property
    def unfilled_share(self) -> float:
        return 0.0 if self.masked_px == 0 else 1.0 - self.filled_px / self.masked_px


class SkinMemory:
    def __init__(self, trust_pad_px: int = 12, max_age_s: float = 3.0, margin: float = 0.35):
        self.trust_pad_px = trust_pad_px
        self.max_age_s = max_age_s  # memory older than this is not used (expressions, light change)
        self.margin = margin  # the face region: the landmarks' box grown by this share of its size
        self.mem: np.ndarray | None = None
        self.seen_s: np.ndarray | None = None  # per pixel: when last seen clear of the handpiece (s since t0; -1 never)
        self._t0_ns: int | None = None
        self._lm: np.ndarray | None = None  # landmarks the memory is registered to
        self._prev: np.ndarray | None = None  # the last two frames' landmarks, for the motion prediction
        self._prev2: np.ndarray | None = None

    def reset(self) -> None:
        self.mem = self.seen_s = self._lm = self._prev = self._prev2 = None
        self._t0_ns = None

    def _s(self, t_ns: int) -> float:
        return (t_ns - (self._t0_ns or 0)) / 1e9

    def _region(self, lm: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        h, w = shape[:2]
        x0, y0 = lm[:, 0].min(), lm[:, 1].min()
        x1, y1 = lm[:, 0].max(), lm[:, 1].max()
        mx, my = self.margin * (x1 - x0), self.margin * (y1 - y0)
        return (max(int(x0 - mx), 0), max(int(y0 - my), 0), min(int(x1 + mx) + 1, w), min(int(y1 + my) + 1, h))

    def _follow(self, target: np.ndarray, occluder: np.ndarray | None) -> None:
        """Move the memory with the face: from the landmarks it is registered to, to `target`."""
        if self.mem is None or self._lm is None:
            return
        keep = np.ones(len(target), bool)
        if occluder is not None:  # landmarks under the handpiece say little about the face's motion
            h, w = occluder.shape
            xy = np.clip(np.round(target[:, :2]).astype(int), 0, [w - 1, h - 1])
            keep = occluder[xy[:, 1], xy[:, 0]] == 0
        if keep.sum() < 20:
            return
        m, _ = cv2.estimateAffinePartial2D(self._lm[keep, :2].astype(np.float32), target[keep, :2].astype(np.float32),
                                           method=cv2.LMEDS)
        if m is None:
            return
        if np.abs(m - [[1, 0, 0], [0, 1, 0]]).max() > 0.02:
            h, w = self.mem.shape[:2]
            self.mem = cv2.warpAffine(self.mem, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            self.seen_s = cv2.warpAffine(self.seen_s, m, (w, h), flags=cv2.INTER_NEAREST,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
        self._lm = target.copy()

    def fill(self, image: np.ndarray, mask: np.ndarray | None, t_ns: int,
             tip_px: tuple[float, float] | None = None) -> tuple[np.ndarray, FillReport]:
        """The image with the silhouette's pixels taken from memory where it has them, fresh enough.

        Before filling, the memory is moved to where the face is predicted to be in this frame (the last two
        frames' landmarks, constant velocity).
        """
        if mask is None or self.mem is None or self.mem.shape != image.shape:
            return image, FillReport(0 if mask is None else int(np.count_nonzero(mask)), 0, None)
        if self._prev is not None:
            pred = self._prev if self._prev2 is None else 2 * self._prev - self._prev2
            self._follow(pred, mask)
        now = self._s(t_ns)
        fresh = (mask > 0) & (self.seen_s >= 0) & (now - self.seen_s <= self.max_age_s)  # type: ignore[operator]
        masked = int(np.count_nonzero(mask))
        if not fresh.any():
            return image, FillReport(masked, 0, None)
        out = image.copy()
        np.copyto(out, self.mem, where=fresh[..., None])
        age = None
        if tip_px is not None:
            h, w = mask.shape
            x, y = int(round(tip_px[0])), int(round(tip_px[1]))
            if 0 <= x < w and 0 <= y < h and fresh[y, x]:
                age = int((now - float(self.seen_s[y, x])) * 1e9)  # type: ignore[index]
        return out, FillReport(masked, int(np.count_nonzero(fresh)), age)

    def refresh(self, image: np.ndarray, landmarks: np.ndarray | None, mask: np.ndarray | None, t_ns: int) -> None:
        """Remember the face region of this frame where it is seen well clear of the handpiece.

        `mask`: this frame's handpiece silhouette; None when the handpiece's pose is unknown this frame (it
        may be anywhere in view, so nothing is learnt). Without landmarks (no face) the memory is dropped.
        """
        if landmarks is None:
            self.reset()
            return
        self._prev2, self._prev = self._prev, landmarks.copy()
        if self.mem is None or self.mem.shape != image.shape:
            if mask is None:
                return
            self.mem = np.zeros_like(image)
            self.seen_s = np.full(image.shape[:2], -1.0, np.float32)
            self._t0_ns = t_ns
            self._lm = landmarks.copy()
        self._follow(landmarks, mask)
        if mask is None:
            return
        x0, y0, x1, y1 = self._region(landmarks, image.shape)
        k = 2 * self.trust_pad_px + 1
        near = cv2.dilate(mask[y0:y1, x0:x1], cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
        clear = ~near
        np.copyto(self.mem[y0:y1, x0:x1], image[y0:y1, x0:x1], where=clear[..., None])
        self.seen_s[y0:y1, x0:x1][clear] = self._s(t_ns)  # type: ignore[index]
