"""A per-subject face template, so the handpiece in front of the face does not bend the mesh under the tip.

The landmark model sees the handpiece (shaft and marker clip) in front of the
face and its output moves, most near the tip: exactly where the zone lookup
reads the mesh. The subject's face shape, though, does not change when the
handpiece comes near. So:

* **Learning.** Every frame with a face, the landmarks (x, y, z; z is in the
  same pixel scale) are brought into a head-aligned frame by a 3D similarity
  (Umeyama) fitted on the rigid landmarks (`RIGID_LANDMARKS`) against the
  canonical face (millimetres). Each landmark's head-frame position is averaged
  robustly (a recursive mean whose per-sample step is clipped, so an outlier
  moves it little), but only from frames where that landmark is far from the
  tip; a landmark learns nothing while the tip (or, without a tip, the lost
  handpiece) may be over it.
* **Use.** When a valid tip is near the face, the similarity template → image
  is fitted on the rigid landmarks far from the tip only, and each landmark is
  blended from the tracker's position (far from the tip) to the placed
  template's (near the tip) by its distance to the tip. Landmarks not learnt
  enough yet keep the tracker's position.

Status is explicit: ``learning`` until every landmark has `min_samples`
samples, then ``ready``; with the sample count, the age of the newest sample,
and whether this frame's landmarks came from the template. Losing the face
forgets the subject (the next face may be someone else).

Everything is deterministic and float32 in, float32 out, so what the lookup
used can be recorded and re-processed exactly.

**Not wired into the pipeline**, because it does not help reliably (measured
with `python -m experiments.face_template.template_bench`, docs/face_template.md): on the
demo path over single_face.mp4 the tip's chart error drops from 3.21 to 2.64 mm
median (p90 6.48 → 5.86), but over WolfgangLanger_Pexels.mp4 (head turning)
it rises from 2.69 to 3.16 mm median (p90 unchanged). Most of the handpiece's
effect on the landmark model is not local: the landmarks far from the tip move
too, so a template placed on them inherits the shift (the forehead's +2–3 mm v
bias stays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from guidance.vision.face.head_pose import RIGID_LANDMARKS, load_canonical_face

LEARNING, READY, OFF = "learning", "ready", "off"


@dataclass(frozen=True)
class TemplateConfig:
    enabled: bool = True
    # Head-frame millimetres (canonical face scale).
    learn_clear_mm: float = 45.0  # a landmark learns only when the tip is farther than this
    fit_clear_mm: float = 45.0  # rigid landmarks used to place the template: farther than this from the tip
    blend_full_mm: float = 20.0  # within this of the tip, the landmark is the template's
    blend_none_mm: float = 50.0  # beyond this, the tracker's
    step_clip_mm: float = 1.5  # robust mean: one sample moves a landmark's estimate by at most this / n
    window: int = 60  # the recursive mean's memory (samples)
    min_samples: int = 10  # per landmark, before it is used
    min_fit_landmarks: int = 12  # fewer clear rigid landmarks: no template this frame
    max_fit_rms_mm: float = 3.0  # a worse similarity fit (expression, bad frame): no template this frame


@dataclass(frozen=True)
class TemplateStatus:
    state: str  # "off" | "learning" | "ready"
    samples: int  # frames that contributed
    ready_fraction: float  # share of landmarks with enough samples
    age_ms: float | None  # since the newest sample
    used: bool  # this frame's lookup landmarks came (partly) from the template
    fit_rms_mm: float | None  # residual of this frame's placement fit (head-frame mm)

    def to_json(self) -> dict:
        return {"state": self.state, "samples": self.samples, "ready_fraction": round(self.ready_fraction, 4),
                "age_ms": None if self.age_ms is None else round(self.age_ms, 1), "used": self.used,
                "fit_rms_mm": None if self.fit_rms_mm is None else round(self.fit_rms_mm, 4)}


def similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted 3D similarity (Umeyama): dst ≈ s R src + t. Returns (s, R, t)."""
    w = np.ones(len(src)) if w is None else np.asarray(w, np.float64)
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    a, b = src - ms, dst - md
    cov = (b * w[:, None]).T @ a
    U, S, Vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        d[2] = -1.0
    R = (U * d) @ Vt
    var = float(w @ np.sum(a * a, axis=1))
    s = float((S * d).sum() / var) if var > 0 else 1.0
    return s, R, md - s * R @ ms


class FaceTemplate:
    """The subject's face shape in the head frame, learnt online; landmarks for the lookup out."""

    def __init__(self, config: TemplateConfig = TemplateConfig(), canonical_mm: np.ndarray | None = None):
        self.config = config
        canon = canonical_mm if canonical_mm is not None else load_canonical_face()
        self.rigid = np.array(RIGID_LANDMARKS)
        self._canon_rigid = np.asarray(canon, np.float64)[self.rigid]
        self.reset()

    def reset(self) -> None:
        self.mean = np.zeros((468, 3))
        self.count = np.zeros(468, np.int64)
        self.samples = 0
        self.t_last_ns: int | None = None

    def status(self, now_ns: int | None = None, used: bool = False, fit_rms_mm: float | None = None) -> TemplateStatus:
        if not self.config.enabled:
            return TemplateStatus(OFF, 0, 0.0, None, False, None)
        ready = float(np.mean(self.count >= self.config.min_samples))
        age = None if self.t_last_ns is None or now_ns is None else (now_ns - self.t_last_ns) / 1e6
        return TemplateStatus(READY if ready >= 1.0 else LEARNING, self.samples, ready, age, used, fit_rms_mm)

    # -- learning ----------------------------------------------------------------
    def learn(self, landmarks: np.ndarray, tip_px: tuple[float, float] | None, tip_known: bool, t_ns: int) -> None:
        """Add one frame. `tip_known=False` (handpiece not tracked) teaches nothing: it may be anywhere."""
        c = self.config
        if not c.enabled or not tip_known:
            return
        lm = np.asarray(landmarks, np.float64)
        if not np.all(np.isfinite(lm)):
            return
        dist = self._tip_distance(lm, tip_px)  # image px
        s, R, t = similarity(self._canon_rigid, lm[self.rigid])
        if dist is not None:  # align on the rigid landmarks clear of the tip when there are enough
            clear = dist[self.rigid] / s >= c.fit_clear_mm
            if clear.sum() >= c.min_fit_landmarks:
                s, R, t = similarity(self._canon_rigid[clear], lm[self.rigid[clear]])
        if not s > 0:
            return
        head = ((lm - t) @ R) / s  # image → head frame (mm)
        learn = np.ones(468, bool) if dist is None else dist / s >= c.learn_clear_mm
        if not learn.any():
            return
        n = np.minimum(self.count[learn] + 1, c.window).astype(np.float64)
        step = head[learn] - self.mean[learn]
        first = self.count[learn] == 0
        norm = np.linalg.norm(step, axis=1)
        scale = np.where(first | (norm <= c.step_clip_mm), 1.0, c.step_clip_mm / np.maximum(norm, 1e-12))
        self.mean[learn] += step * (scale / n)[:, None]
        self.count[learn] += 1
        self.samples += 1
        self.t_last_ns = t_ns

    # -- use -------------------------------------------------------------------------
    def landmarks_for(self, landmarks: np.ndarray, tip_px: tuple[float, float] | None) -> tuple[np.ndarray, bool, float | None]:
        """The landmarks for a lookup at `tip_px`: (landmarks float32, template used, fit rms mm)."""
        c = self.config
        lm32 = np.asarray(landmarks, np.float32)
        if not c.enabled or tip_px is None or self.samples == 0:
            return lm32, False, None
        lm = lm32.astype(np.float64)
        if not np.all(np.isfinite(lm)) or not np.all(np.isfinite(tip_px)):
            return lm32, False, None
        dist = self._tip_distance(lm, tip_px)
        known = self.count >= c.min_samples
        # scale first from all rigid landmarks (px per head mm), then the placement from the clear ones
        s0, _, _ = similarity(self._canon_rigid, lm[self.rigid])
        d_mm = dist / s0
        fit = self.rigid[(d_mm[self.rigid] >= c.fit_clear_mm) & known[self.rigid]]
        blend = np.clip((c.blend_none_mm - d_mm) / (c.blend_none_mm - c.blend_full_mm), 0.0, 1.0) * known
        if len(fit) < c.min_fit_landmarks or not blend.any():
            return lm32, False, None
        s, R, t = similarity(self.mean[fit], lm[fit])
        placed = s * self.mean @ R.T + t
        rms = float(np.sqrt(np.mean(np.sum((placed[fit] - lm[fit]) ** 2, axis=1)))) / s
        if not rms <= c.max_fit_rms_mm:
            return lm32, False, rms
        out = lm + (placed - lm) * blend[:, None]
        return out.astype(np.float32), True, rms

    @staticmethod
    def _tip_distance(lm: np.ndarray, tip_px) -> np.ndarray | None:
        if tip_px is None:
            return None
        return np.hypot(lm[:, 0] - tip_px[0], lm[:, 1] - tip_px[1])
