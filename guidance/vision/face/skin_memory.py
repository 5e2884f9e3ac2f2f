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
handpiece), and fills the silhouette from it, shifted by up to `search_px`
to where the skin around the silhouette matches it best (the similarity
places it to a pixel or two; a fill a pixel off misleads the model).

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
    ring_diff: float | None = None  # how different the skin around the silhouette looks from memory (grey levels)

    @property
    def unfilled_share(self) -> float:
        return 0.0 if self.masked_px == 0 else 1.0 - self.filled_px / self.masked_px


def similarity_2d(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Least-squares 2D similarity (rotation, uniform scale, translation) taking `src` points to `dst`, as 2x3."""
    s = np.asarray(src, np.float64)
    d = np.asarray(dst, np.float64)
    ms, md = s.mean(0), d.mean(0)
    s0, d0 = s - ms, d - md
    var = float((s0 ** 2).sum())
    if var <= 1e-9:
        return None
    a = float((s0[:, 0] * d0[:, 0] + s0[:, 1] * d0[:, 1]).sum()) / var  # scale·cos
    b = float((s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum()) / var  # scale·sin
    r = np.array([[a, -b], [b, a]])
    t = md - r @ ms
    return np.hstack([r, t[:, None]])


REFRESH_BANDS = 3
SHIFT_SAMPLES = 600  # ring pixels compared at each shift of the memory


class SkinMemory:
    """The face region's skin in the face's own frame (the first frame's pixel grid, moved with the face).

    Each frame's pose of the face in the image is a 2D similarity fitted to the landmarks (those under the
    handpiece left out) against the reference landmarks. Pixels are written into the memory through its
    inverse and read back through the predicted one, so each is resampled twice at most, never again and
    again as the face moves.
    """

    def __init__(self, trust_pad_px: int = 8, max_age_s: float = 10.0, margin: float = 0.35,
                 ring_px: int = 6, max_ring_diff: float = 8.0, search_px: int = 3):
        self.trust_pad_px = trust_pad_px
        self.max_age_s = max_age_s  # memory older than this is not used (expressions, light change)
        self.margin = margin  # the face region: the landmarks' box grown by this share of its size
        # The skin just around the silhouette, seen now, must still look as remembered (mean absolute
        # difference at most `max_ring_diff` grey levels): an expression or the light changed otherwise, and
        # the memory under the handpiece is not believed.
        self.ring_px = ring_px
        self.max_ring_diff = max_ring_diff
        self.search_px = search_px  # the fill may be shifted this far (px) to where the ring matches best
        self._ring_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_px + 1, 2 * ring_px + 1))
        self._trust_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * trust_pad_px + 1, 2 * trust_pad_px + 1))
        self.mem: np.ndarray | None = None  # BGR, reference frame
        self.seen_s: np.ndarray | None = None  # per pixel: when last seen clear of the handpiece (s since t0; -1 never)
        self._t0_ns = 0
        self._ref: np.ndarray | None = None  # reference landmarks (the memory's pixel grid)
        self._prev: np.ndarray | None = None  # the last two frames' landmarks, for the motion prediction
        self._prev2: np.ndarray | None = None
        self._band = 0

    def reset(self) -> None:
        self.mem = self.seen_s = self._ref = self._prev = self._prev2 = None

    def _s(self, t_ns: int) -> float:
        return (t_ns - self._t0_ns) / 1e9

    def _region(self, lm: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        h, w = shape[:2]
        x0, y0 = lm[:, 0].min(), lm[:, 1].min()
        x1, y1 = lm[:, 0].max(), lm[:, 1].max()
        mx, my = self.margin * (x1 - x0), self.margin * (y1 - y0)
        return (max(int(x0 - mx), 0), max(int(y0 - my), 0), min(int(x1 + mx) + 1, w), min(int(y1 + my) + 1, h))

    def _pose(self, lm: np.ndarray, occluder: np.ndarray | None) -> np.ndarray | None:
        """2x3 similarity: reference pixel -> image pixel, fitted to the landmarks clear of the handpiece.

        Closed form (least squares over the kept landmarks; the handpiece's are left out, which is what a
        robust fit would otherwise have to find): microseconds, where a RANSAC/LMedS fit took milliseconds.
        """
        assert self._ref is not None
        keep = np.ones(len(lm), bool)
        if occluder is not None:
            h, w = occluder.shape
            xy = np.clip(np.round(lm[:, :2]).astype(int), 0, [w - 1, h - 1])
            keep = occluder[xy[:, 1], xy[:, 0]] == 0
        if keep.sum() < 20:
            return None
        return similarity_2d(self._ref[keep, :2], lm[keep, :2])

    @staticmethod
    def _shifted(m: np.ndarray, x0: int, y0: int) -> np.ndarray:
        """The same map with the output origin moved to (x0, y0) (to warp only a region)."""
        out = m.copy()
        out[0, 2] -= x0
        out[1, 2] -= y0
        return out

    def fill(self, image: np.ndarray, mask: np.ndarray | None, t_ns: int,
             tip_px: tuple[float, float] | None = None) -> tuple[np.ndarray, FillReport]:
        """The image with the silhouette's pixels taken from memory where it has them, fresh enough.

        The memory is read where the face is predicted to be in this frame (the last two frames'
        landmarks, constant velocity).
        """
        if mask is None:
            return image, FillReport(0, 0, None)
        bx, by, bw, bh = cv2.boundingRect(mask)
        masked = int(np.count_nonzero(mask[by:by + bh, bx:bx + bw])) if bw and bh else 0
        if masked == 0 or self.mem is None or self.mem.shape != image.shape or self._prev is None:
            return image, FillReport(masked, 0, None)
        pred = self._prev if self._prev2 is None else 2 * self._prev - self._prev2
        m = self._pose(pred, mask)
        if m is None:
            return image, FillReport(masked, 0, None)
        # only the silhouette's box (and the ring around it), inside the face region
        fx0, fy0, fx1, fy1 = self._region(pred, image.shape)
        g = self.ring_px + 1
        x0, y0 = max(bx - g, fx0), max(by - g, fy0)
        x1, y1 = min(bx + bw + g, fx1), min(by + bh + g, fy1)
        if x1 <= x0 or y1 <= y0:
            return image, FillReport(masked, 0, None)
        size = (x1 - x0, y1 - y0)
        # the memory around the window, `search_px` wider on each side: the face's 2D similarity places it to a
        # pixel or two, and a fill a pixel off misleads the landmark model; the ring picks the shift
        r = self.search_px
        big = (size[0] + 2 * r, size[1] + 2 * r)
        sub = self._shifted(m, x0 - r, y0 - r)
        mem_big = cv2.warpAffine(self.mem, sub, big, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        seen_big = cv2.warpAffine(self.seen_s, sub, big, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,  # type: ignore[arg-type]
                                  borderValue=-1.0)
        now = self._s(t_ns)
        known_big = (seen_big >= 0) & (now - seen_big <= self.max_age_s)
        win = mask[y0:y1, x0:x1]
        sel = win > 0
        ring_all = (cv2.dilate(win, self._ring_kernel) > 0) & ~sel
        dx = dy = 0
        if r > 0 and ring_all.any():
            # the ring's grey levels against the memory's at every shift at once (unknown memory is black, so a
            # shift onto it loses); ties keep the smaller shift
            ys, xs = np.nonzero(ring_all)
            step = max(1, len(ys) // SHIFT_SAMPLES)  # a few hundred of the ring's pixels place it as well as all
            ys, xs = ys[::step], xs[::step]
            grey_now = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)[ys, xs].astype(np.int16)
            grey_mem = cv2.cvtColor(mem_big, cv2.COLOR_BGR2GRAY).ravel()
            steps = np.arange(-r, r + 1)
            sdy, sdx = (a.ravel() for a in np.meshgrid(steps, steps, indexing="ij"))
            at = (ys + r)[None, :] * big[0] + (xs + r)[None, :] + (sdy * big[0] + sdx)[:, None]
            sad = np.abs(grey_mem[at].astype(np.int16) - grey_now[None, :]).mean(axis=1)
            best = np.flatnonzero(sad <= sad.min() + 1e-9)
            j = int(best[np.argmin((np.abs(sdx) + np.abs(sdy))[best])])
            dy, dx = int(sdy[j]), int(sdx[j])
        mem = mem_big[r + dy:r + dy + size[1], r + dx:r + dx + size[0]]
        seen = seen_big[r + dy:r + dy + size[1], r + dx:r + dx + size[0]]
        known = known_big[r + dy:r + dy + size[1], r + dx:r + dx + size[0]]
        fresh = sel & known
        if not fresh.any():
            return image, FillReport(masked, 0, None)
        ring = ring_all & known
        diff = None
        if ring.any():
            diff = float(np.abs(image[y0:y1, x0:x1][ring].astype(np.int16) - mem[ring].astype(np.int16)).mean())
            if diff > self.max_ring_diff:
                return image, FillReport(masked, 0, None, diff)
        out = image.copy()
        np.copyto(out[y0:y1, x0:x1], mem, where=fresh[..., None])
        age = None
        if tip_px is not None:
            x, y = int(round(tip_px[0])) - x0, int(round(tip_px[1])) - y0
            if 0 <= x < size[0] and 0 <= y < size[1] and fresh[y, x]:
                age = int((now - float(seen[y, x])) * 1e9)
        return out, FillReport(masked, int(np.count_nonzero(fresh)), age, diff)

    def refresh(self, image: np.ndarray, landmarks: np.ndarray | None, mask: np.ndarray | None, t_ns: int) -> None:
        """Remember the face region of this frame where it is seen well clear of the handpiece.

        `mask`: this frame's handpiece silhouette; None when the handpiece's pose is unknown this frame (it
        may be anywhere in view, so nothing is learnt). Without landmarks (no face) the memory is dropped.
        """
        if landmarks is None:
            self.reset()
            return
        self._prev2, self._prev = self._prev, landmarks.copy()
        if mask is None:
            return
        if self.mem is None or self.mem.shape != image.shape or self._ref is None:
            self.mem = np.zeros_like(image)
            self.seen_s = np.full(image.shape[:2], -1.0, np.float32)
            self._t0_ns = t_ns
            self._ref = landmarks.copy()
        m = self._pose(landmarks, mask)
        if m is None:
            return
        h, w = image.shape[:2]
        x0, y0, x1, y1 = self._region(landmarks, image.shape)
        # a third of the face region a frame, in turn: the memory is at most three frames old where the skin is
        # in view, at a third of the cost (no frame pays for the whole region)
        self._band = (self._band + 1) % REFRESH_BANDS
        step = (y1 - y0 + REFRESH_BANDS - 1) // REFRESH_BANDS
        y0, y1 = y0 + self._band * step, min(y0 + (self._band + 1) * step, y1)
        if y1 <= y0:
            return
        # the window of this frame (image pixels) that is clear of the handpiece
        clear_win = cv2.dilate(mask[y0:y1, x0:x1], self._trust_kernel)
        np.bitwise_not(clear_win, out=clear_win)  # 255 where clear
        # into the reference grid: only the reference region the window covers now
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ inv.T
        rx0, ry0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
        rx1, ry1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
        if rx1 <= rx0 or ry1 <= ry0:
            return
        # reference pixel (rx0 + i, ry0 + j) -> window pixel: m applied, then the window's origin taken off
        sub = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ np.vstack([m, [0, 0, 1]]) \
            @ np.array([[1, 0, rx0], [0, 1, ry0], [0, 0, 1]], np.float64)
        sub = sub[:2]
        size = (int(rx1 - rx0), int(ry1 - ry0))
        flags = cv2.WARP_INVERSE_MAP
        img_ref = cv2.warpAffine(image[y0:y1, x0:x1], sub, size, flags=cv2.INTER_LINEAR | flags,
                                 borderMode=cv2.BORDER_REPLICATE)
        clear_ref = cv2.warpAffine(clear_win, sub, size, flags=cv2.INTER_NEAREST | flags, borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=0) > 0
        np.copyto(self.mem[ry0:ry1, rx0:rx1], img_ref, where=clear_ref[..., None])
        self.seen_s[ry0:ry1, rx0:rx1][clear_ref] = self._s(t_ns)  # type: ignore[index]
