"""The skin reference patch: its pose every frame, the plane that stands for the skin near it.

The patch (`designs.PatchDesign`) is a rigid card of eight markers stuck on the
skin. It is found and posed exactly like the handpiece clip and the head band
(`marker_detect.MarkerDetector`, `marker_pose.estimate_body_pose`: edge-fitted
corners, a joint PnP over every marker seen, the single-marker rules, and the
pose covariance from the corner fit), so a handpiece passing over part of the
card costs markers, not the pose.

A frame whose markers give no pose (the handpiece hides the card, a marker
misread) keeps the last pose for `hold_ns` (100 ms) with its own capture time,
flagged `held`: the gate compares that time with the frame's and denies
`patch_stale` beyond its `max_patch_age_ms` (40), `patch_lost` once nothing is
held. The skin moves slowly under a patch (breathing, a shift in the chair), but
it moves: an old pose is never passed off as this frame's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.designs import PatchDesign
from guidance.vision.handpiece.marker_detect import MarkerDetections, MarkerDetector
from guidance.vision.handpiece.marker_pose import (BodyPose, PoseLimits, _fit_covariance, _reproj_rms,
                                                   estimate_body_pose)
from guidance.vision.rigid import RigidPose

HELD = "held"  # PatchObservation.reason of a pose kept from an earlier frame
# A marker whose corners fit the others' pose this much worse than the median marker (and worse than
# OUTLIER_MIN_PX) is left out and the pose refitted: a handpiece plate over part of a marker moves its
# corners 1-3 px, which the joint fit absorbs below its 1.5 px RMS limit but not without tilting the plane.
OUTLIER_RATIO = 3.0
OUTLIER_MIN_PX = 0.5


@dataclass(frozen=True)
class PatchObservation:
    """The patch in one frame. `t_capture_ns` is the capture time of the frame its pose was measured on."""

    frame_index: int
    t_capture_ns: int
    found: bool
    reason: str  # "" when measured on this frame; why not otherwise (marker_pose reasons), "held" when kept
    rvec: tuple[float, float, float] | None  # patch frame -> camera (Rodrigues)
    tvec_mm: tuple[float, float, float] | None
    rms_px: float | None
    marker_ids: tuple[int, ...]
    cov6: np.ndarray | None  # covariance of (rvec, tvec) from the corner fit
    held: bool = False
    t_processed_ns: int = 0

    @property
    def pose(self) -> RigidPose | None:
        if self.rvec is None or self.tvec_mm is None:
            return None
        return RigidPose.from_rvec(np.asarray(self.rvec, float), np.asarray(self.tvec_mm, float))

    @property
    def normal_cam(self) -> np.ndarray | None:
        """The patch plane's normal in the camera frame, pointing into the skin (the patch's +z)."""
        p = self.pose
        return None if p is None else p.R[:, 2].copy()


def lost(frame_index: int, t_capture_ns: int, reason: str) -> PatchObservation:
    return PatchObservation(frame_index, t_capture_ns, False, reason, None, None, None, (), None, False,
                            time.monotonic_ns())


class PatchTracker:
    """Detect and pose the skin patch each frame; hold the last pose briefly (flagged) when a frame gives none."""

    def __init__(self, camera: CameraModel, design: PatchDesign = PatchDesign(), limits: PoseLimits = PoseLimits(),
                 hold_ns: int = 100_000_000):
        self.camera = camera
        self.design = design
        self.body = design.body()
        self.limits = limits
        self.hold_ns = int(hold_ns)
        self.detector = MarkerDetector(self.body.dictionary, self.body.ids)
        self._prior: BodyPose | None = None
        self._last: PatchObservation | None = None

    def reset(self) -> None:
        self._prior = self._last = None
        self.detector.reset()

    def process(self, image: np.ndarray, t_capture_ns: int, frame_index: int) -> PatchObservation:
        h, w = image.shape[:2]
        if (w, h) != self.camera.size:
            self.camera = self.camera.scaled_to(w, h)
        det = self.detector.detect(image)
        body = self._from_prior(det, t_capture_ns)
        if body is None:
            body = estimate_body_pose(self.body, det, self.camera, t_capture_ns, self._prior, self.limits)
        for _ in range(2):  # at most two partly hidden markers left out
            worst = self._outlier(body, det)
            if worst is None:
                break
            det = MarkerDetections({i: c for i, c in det.corners_px.items() if i != worst}, det.duplicate_ids,
                                   det.searched_full_frame)
            refit = self._from_prior(det, t_capture_ns) or estimate_body_pose(self.body, det, self.camera, t_capture_ns,
                                                                              self._prior, self.limits)
            if not refit.valid:
                break
            body = refit
        return self.observe(body, frame_index, t_capture_ns)

    def _from_prior(self, det: MarkerDetections, t_ns: int) -> BodyPose | None:
        """Three or more markers and last frame's pose: one iterative fit of all their corners from that pose.

        The skin barely moves between frames and several markers of a flat card have no mirror ambiguity, so the
        general search (every marker's two candidate poses as seeds) is not needed; it stays the fallback when
        this fit does not hold (None)."""
        prior, lim = self._prior, self.limits
        if prior is None or not prior.valid or prior.pose is None or not 0 < t_ns - prior.t_capture_ns <= lim.prior_max_age_ns:
            return None
        if any(i in self.body.corners_mm for i in det.duplicate_ids):
            return None
        ids = [i for i in sorted(det.corners_px) if i in self.body.corners_mm and float(np.mean(np.linalg.norm(
            det.corners_px[i] - np.roll(det.corners_px[i], -1, 0), axis=1))) >= lim.min_marker_side_px]
        if len(ids) < 3:
            return None
        obj = np.concatenate([self.body.corners_mm[i] for i in ids])
        img = np.concatenate([det.corners_px[i] for i in ids])
        ok, rvec, tvec = cv2.solvePnP(obj, img, self.camera.K, self.camera.dist, prior.pose.rvec.reshape(3, 1).copy(),
                                      prior.pose.t_mm.reshape(3, 1).copy(), useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            return None
        pose = RigidPose.from_rvec(rvec, tvec)
        rms = _reproj_rms(obj, img, pose, self.camera)
        depth = pose.apply(np.array([self.body.centre_mm(i) for i in ids]))[:, 2]
        if not rms <= lim.max_rms_px or depth.min() < lim.min_depth_mm or depth.max() > lim.max_depth_mm:
            return None
        cov = _fit_covariance(obj, pose, self.camera, max(rms, lim.corner_noise_floor_px))
        return BodyPose(True, "", pose, rms, tuple(ids), 4 * len(ids), float("inf"), cov, t_ns)

    def _outlier(self, body: BodyPose, det: MarkerDetections) -> int | None:
        """The marker that fits the joint pose clearly worse than the others (kept while 3 would remain)."""
        if not body.valid or body.pose is None or len(body.ids_used) < 4:
            return None

        per = {}
        for i in body.ids_used:
            px, _ = cv2.projectPoints(self.body.corners_mm[i], body.pose.rvec, body.pose.t_mm, self.camera.K,
                                      self.camera.dist)
            per[i] = float(np.sqrt(np.mean(np.sum((px.reshape(-1, 2) - det.corners_px[i]) ** 2, axis=1))))
        worst = max(per, key=per.__getitem__)
        rest = float(np.median([v for k, v in per.items() if k != worst]))
        return worst if per[worst] > max(OUTLIER_MIN_PX, OUTLIER_RATIO * rest) else None

    def observe(self, body: BodyPose, frame_index: int, t_capture_ns: int) -> PatchObservation:
        if body.valid and body.pose is not None:
            self._prior = body
            r, t = body.pose.rvec, body.pose.t_mm
            obs = PatchObservation(frame_index, t_capture_ns, True, "", (float(r[0]), float(r[1]), float(r[2])),
                                   (float(t[0]), float(t[1]), float(t[2])), float(body.rms_px), tuple(body.ids_used),
                                   body.cov6, False, time.monotonic_ns())
            self._last = obs
            return obs
        if body.tentative is not None:
            self._prior = body
        last = self._last
        if last is not None and 0 <= t_capture_ns - last.t_capture_ns <= self.hold_ns:
            return PatchObservation(frame_index, last.t_capture_ns, True, HELD, last.rvec, last.tvec_mm, last.rms_px,
                                    last.marker_ids, last.cov6, True, time.monotonic_ns())
        return lost(frame_index, t_capture_ns, body.reason)
