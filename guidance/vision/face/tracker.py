"""Markerless face tracking at video rate: detection, ROI tracking, smoothing, head pose.

Our own version of the face-mesh graph: the detector runs only when there is
no face being tracked (first frame, after a loss, or when the face leaves the
image); otherwise the ROI for the next frame comes from this frame's landmarks,
which is what keeps tracking at a few milliseconds per frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.detector import FaceDetector
from guidance.vision.face.landmarks import LANDMARK_MODEL, FaceLandmarker, Roi, roi_from_detection, roi_from_landmarks
from guidance.vision.face.head_pose import HeadPose, HeadPoseEstimator, load_canonical_face
from guidance.vision.face.smoothing import OneEuroConfig, OneEuroFilter
from guidance.vision.capture.sources import Frame


@dataclass(frozen=True)
class TrackerConfig:
    min_detection_score: float = 0.5
    min_presence: float = 0.5
    # Re-detect when less than this share of the ROI's centre region is inside the image.
    min_roi_inside: float = 0.5
    smoothing: bool = True  # False = "raw" mode
    one_euro: OneEuroConfig = OneEuroConfig()
    head_pose: bool = True
    # The landmark model (a name in models/MANIFEST.json): the fine-tune against handpiece occlusion by
    # default; "face_landmark" is mediapipe's own (see face_landmarks.OCCLUSION_LANDMARK_MODEL).
    landmark_model: str = LANDMARK_MODEL


@dataclass(frozen=True)
class FaceObservation:
    """What the tracker knows about the face in one frame."""

    frame_index: int
    t_capture_ns: int
    t_done_ns: int
    found: bool
    presence: float
    landmarks: np.ndarray | None  # (468, 3) image px, smoothed unless raw mode
    landmarks_raw: np.ndarray | None
    roi: Roi | None
    head_pose: HeadPose | None
    redetected: bool  # the detector ran on this frame
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def age_ms(self) -> float:
        """How old the observation is now, on the monotonic clock."""
        return (time.monotonic_ns() - self.t_capture_ns) / 1e6


def _ms(t0: int, t1: int) -> float:
    return (t1 - t0) / 1e6


class FaceTracker:
    def __init__(self, config: TrackerConfig = TrackerConfig(), camera: CameraModel | None = None,
                 *, detector: FaceDetector | None = None, landmarker: FaceLandmarker | None = None,
                 canonical_mm: np.ndarray | None = None):
        self.config = config
        self.camera = camera
        self.detector = detector or FaceDetector(min_score=config.min_detection_score)
        self.landmarker = landmarker or FaceLandmarker(model=config.landmark_model)
        self.filter = OneEuroFilter(config.one_euro)
        self.pose: HeadPoseEstimator | None = None
        if config.head_pose:
            self.pose = HeadPoseEstimator(canonical_mm if canonical_mm is not None else load_canonical_face())
        self._roi: Roi | None = None
        self.redetections = 0

    def reset(self) -> None:
        self._roi = None
        self.filter.reset()
        if self.pose:
            self.pose.reset()

    def _detect(self, image: np.ndarray, timings: dict[str, float]) -> Roi | None:
        t0 = time.monotonic_ns()
        dets = self.detector.detect(image)
        timings["detector"] = timings.get("detector", 0.0) + _ms(t0, time.monotonic_ns())
        self.redetections += 1
        return roi_from_detection(dets[0]) if dets else None

    def _landmarks(self, image: np.ndarray, roi: Roi, timings: dict[str, float]):
        t0 = time.monotonic_ns()
        tensor, M = self.landmarker.crop(image, roi)
        t1 = time.monotonic_ns()
        crop_lm, presence = self.landmarker.infer(tensor)
        t2 = time.monotonic_ns()
        lm = self.landmarker.project(crop_lm, M, roi)
        t3 = time.monotonic_ns()
        timings["pre"] = timings.get("pre", 0.0) + _ms(t0, t1)
        timings["landmark"] = timings.get("landmark", 0.0) + _ms(t1, t2)
        timings["post"] = timings.get("post", 0.0) + _ms(t2, t3)
        return lm, presence

    def process(self, frame: Frame) -> FaceObservation:
        t_start = time.monotonic_ns()
        timings: dict[str, float] = {}
        image = frame.image
        h, w = image.shape[:2]
        redetected = False
        roi = self._roi
        if roi is None:
            roi = self._detect(image, timings)
            redetected = True
        lm = None
        presence = 0.0
        if roi is not None:
            lm, presence = self._landmarks(image, roi, timings)
            if presence < self.config.min_presence and not redetected:
                # Tracking lost: look for the face again in this same frame.
                self.filter.reset()
                roi = self._detect(image, timings)
                redetected = True
                if roi is not None:
                    lm, presence = self._landmarks(image, roi, timings)
        if roi is None or lm is None or presence < self.config.min_presence:
            self.reset()
            t_end = time.monotonic_ns()
            timings["total"] = _ms(t_start, t_end)
            return FaceObservation(frame.index, frame.t_capture_ns, t_end, False, presence, None, None, None, None,
                                   redetected, timings)

        t0 = time.monotonic_ns()
        next_roi = roi_from_landmarks(lm)
        self._roi = next_roi if next_roi.inside_fraction(w, h) >= self.config.min_roi_inside else None
        if self.config.smoothing:
            smoothed = self.filter(lm, frame.t_capture_ns, value_scale=1.0 / max(next_roi.size / 1.5, 1.0))
        else:
            smoothed = lm
        pose = None
        if self.pose is not None:
            camera = self.camera.scaled_to(w, h) if self.camera else CameraModel.default(w, h)
            pose = self.pose.estimate(smoothed, camera, frame.t_capture_ns)
        t_end = time.monotonic_ns()
        timings["post"] = timings.get("post", 0.0) + _ms(t0, t_end)
        timings["total"] = _ms(t_start, t_end)
        return FaceObservation(frame.index, frame.t_capture_ns, t_end, True, presence, smoothed, lm, roi, pose,
                               redetected, timings)
