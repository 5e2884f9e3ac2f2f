"""Markerless face tracking at video rate: detection, ROI tracking, smoothing, head pose.

Our own version of the face-mesh graph: the detector runs only when there is
no face being tracked (first frame, after a loss, or when the face leaves the
image); otherwise the ROI for the next frame comes from this frame's landmarks,
which is what keeps tracking at a few milliseconds per frame.

The client's face (`lock_client`, called when the session is armed): from then on
a re-detection takes only a face that looks like the client's (vision/face/client.py),
every `client_check_every`-th tracked frame is compared with it too, and a frame
whose only faces are someone else's is "not found" with `other_faces` counted. Before
a client is locked the tracker takes the best detection, as it always did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.face import client as client_face
from guidance.vision.face.detector import Detection, FaceDetector, _iou, weighted_nms
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
    # With a client locked: compare the tracked face with the client every this many frames (0.4 ms each), and
    # let go of the track (re-detect, taking only the client) after this many failed comparisons in a row. Every
    # frame, at once: on the two-face scene (docs/face_tracking.md) every 3rd frame let a face sliding over the
    # client's carry the mesh for 7 frames; every 1st or 2nd, for none.
    client_check_every: int = 1
    client_mismatches: int = 1
    # Among faces that look like the client's, the one nearest where the client was last seen, if that was at
    # most this long ago (else the closest look).
    client_continuity_s: float = 1.0


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
    other_faces: int = 0  # a client is locked and these faces seen in this frame are not the client's
    client: bool = False  # a client is locked (then `found` means: the client's face is found)
    client_distance: tuple[float, float] | None = None  # (colour, texture) to the client when compared this frame

    @property
    def someone_elses(self) -> bool:
        """The client's face is not found and another face is: the frame is someone else's (gate: other_face)."""
        return not self.found and self.other_faces > 0

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
        # the client's face (vision/face/client.py): as at arming, as last confirmed, where and when last seen
        self.client: client_face.Appearance | None = None
        self._client_recent: client_face.Appearance | None = None
        self._client_seen: tuple[tuple[float, float], float, int] | None = None  # centre px, eye distance px, t_ns
        self._lock_pending = False
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # the last found frame's image and raw landmarks
        self._since_check = 0
        self._mismatches = 0

    def reset(self) -> None:
        self._roi = None
        self.filter.reset()
        if self.pose:
            self.pose.reset()

    # -- the client's face ------------------------------------------------------------------------------------
    def lock_client(self) -> None:
        """The face tracked now is the client's, kept for the session (no-op once locked). Without a face now,
        the next face found becomes the client's."""
        if self.client is not None:
            return
        if self._last is not None and self._roi is not None:
            self.client = self._client_recent = client_face.appearance(*self._last)
        else:
            self._lock_pending = True

    def release_client(self) -> None:
        """Forget the client (a new client: the next `lock_client` chooses again)."""
        self.client = self._client_recent = self._client_seen = None
        self._lock_pending = False
        self._since_check = self._mismatches = 0

    def _client_distance(self, app: client_face.Appearance) -> tuple[float, float]:
        """(colour, texture) to the client as at arming or as last confirmed, whichever is closer."""
        refs = [r for r in (self.client, self._client_recent) if r is not None]
        ds = [client_face.distance(r, app) for r in refs]
        return min(ds, key=lambda d: d[0] / client_face.STRICT_COLOUR + d[1] / client_face.STRICT_TEXTURE)

    def _rank(self, app: client_face.Appearance, d: tuple[float, float], t_ns: int) -> float:
        """Lower is better: the appearance distance, plus the distance from where the client was (in eye distances)
        when that was recent. Position continuity orders the faces that look like the client's; it never admits one
        that does not."""
        score = d[0] / client_face.STRICT_COLOUR + d[1] / client_face.STRICT_TEXTURE
        if self._client_seen is not None:
            centre, size, t_seen = self._client_seen
            if 0 <= t_ns - t_seen <= self.config.client_continuity_s * 1e9:
                score += float(np.hypot(app.centre_px[0] - centre[0], app.centre_px[1] - centre[1])) / max(size, 1.0)
        return score

    def _find_client(self, image: np.ndarray, t_ns: int, timings: dict[str, float]):
        """Re-detection with a client locked: the detected face that looks like the client's, or none.

        Returns (roi, landmarks, presence, other faces, distance)."""
        t0 = time.monotonic_ns()
        dets = self.detector.detect(image)
        timings["detector"] = timings.get("detector", 0.0) + _ms(t0, time.monotonic_ns())
        self.redetections += 1
        best, others = None, 0
        for det in dets[:3]:
            roi = roi_from_detection(det)
            lm, presence = self._landmarks(image, roi, timings)
            if presence < self.config.min_presence:
                continue
            app = client_face.appearance(image, lm)
            d = self._client_distance(app)
            if client_face.matches(*d, loose=False):
                score = self._rank(app, d, t_ns)
                if best is None or score < best[0]:
                    if best is not None:
                        others += 1
                    best = (score, roi, lm, presence, d)
                else:
                    others += 1
            else:
                others += 1
        if best is None:
            return None, None, 0.0, others, None
        return best[1], best[2], best[3], others, best[4]

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
        lm = None
        presence = 0.0
        others, dist = 0, None
        if roi is not None:
            lm, presence = self._landmarks(image, roi, timings)
            if presence < self.config.min_presence:
                # Tracking lost: look for the face again in this same frame.
                self.filter.reset()
                roi = None
        if roi is None:
            redetected = True
            if self.client is not None:
                roi, lm, presence, others, dist = self._find_client(image, frame.t_capture_ns, timings)
            else:
                roi = self._detect(image, timings)
                if roi is not None:
                    lm, presence = self._landmarks(image, roi, timings)
        if roi is not None and lm is not None and presence >= self.config.min_presence and self.client is not None \
                and not redetected:
            self._since_check += 1
            if self._since_check >= self.config.client_check_every:
                self._since_check = 0
                app = client_face.appearance(image, lm)
                dist = self._client_distance(app)
                if client_face.matches(*dist, loose=True):  # tracked: continuity holds, the loose thresholds
                    self._mismatches = 0
                    # the recent look follows slow changes (light, expression) but only ever close to the look at
                    # arming: never a chain of small steps from one face to another
                    assert self.client is not None
                    if client_face.matches(*client_face.distance(self.client, app), recent=True):
                        self._client_recent = app
                else:
                    self._mismatches += 1
                    if self._mismatches >= self.config.client_mismatches:
                        roi, others = None, 1  # the tracked face is someone else's now: let go of it
        if roi is None or lm is None or presence < self.config.min_presence:
            self.reset()
            self._since_check = self._mismatches = 0
            t_end = time.monotonic_ns()
            timings["total"] = _ms(t_start, t_end)
            return FaceObservation(frame.index, frame.t_capture_ns, t_end, False, presence, None, None, None, None,
                                   redetected, timings, others, self.client is not None, dist)
        if redetected:
            self._since_check = self._mismatches = 0
        if self._lock_pending:
            self.client = self._client_recent = client_face.appearance(image, lm)
            self._lock_pending = False
        self._last = (image, lm)
        if self.client is not None:
            self._client_seen = (client_face.oval_centre(lm), client_face.eye_distance(lm), frame.t_capture_ns)

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
                               redetected, timings, 0, self.client is not None, dist)

    # -- every face of a still image -----------------------------------------------------------------------------
    def find_faces(self, image: np.ndarray, t_capture_ns: int = 0) -> list[FaceObservation]:
        """Every face in a still image (raw landmarks, each with its own head pose), largest first.

        The short-range detector sees faces that fill a good part of its 128 x 128 input, so it runs on the whole
        image and on overlapping tiles (60 % of the shorter side, 3/4 overlap steps); detections are merged, each
        gets its landmarks (refined once from an ROI around them), and landmark sets that overlap are kept once.
        Leaves the tracker's own state (tracked face, client) alone."""
        h, w = image.shape[:2]
        dets = list(self.detector.detect(image))
        side = int(0.6 * min(h, w))
        if side >= 64:
            step = max(int(0.75 * side), 1)
            xs = sorted(set(list(range(0, max(w - side, 0) + 1, step)) + [max(w - side, 0)]))
            ys = sorted(set(list(range(0, max(h - side, 0) + 1, step)) + [max(h - side, 0)]))
            for y in ys:
                for x in xs:
                    for d in self.detector.detect(np.ascontiguousarray(image[y:y + side, x:x + side])):
                        off = np.array([x, y], np.float32)
                        dets.append(Detection(d.score, d.box + np.r_[off, off], d.keypoints + off))
        if dets:
            merged = weighted_nms(np.array([d.score for d in dets]), np.stack([d.box for d in dets]),
                                  np.stack([d.keypoints for d in dets]), 0.3)
            dets = [Detection(sc, b, k) for sc, b, k in merged]
        camera = self.camera.scaled_to(w, h) if self.camera else CameraModel.default(w, h)
        out: list[tuple[float, FaceObservation]] = []
        boxes: list[np.ndarray] = []
        timings: dict[str, float] = {}
        for det in dets:
            roi = roi_from_detection(det)
            lm, presence = self._landmarks(image, roi, timings)
            if presence < self.config.min_presence:
                continue
            roi2 = roi_from_landmarks(lm)
            lm2, p2 = self._landmarks(image, roi2, timings)
            if p2 >= self.config.min_presence:
                lm, presence, roi = lm2, p2, roi2
            box = np.r_[lm[:, :2].min(axis=0), lm[:, :2].max(axis=0)]
            if boxes and float(_iou(box, np.stack(boxes)).max()) > 0.5:
                continue
            boxes.append(box)
            pose = None
            if self.pose is not None:  # a fresh estimator per face: no prior from another face or the track
                pose = HeadPoseEstimator(self.pose.canonical).estimate(lm, camera, t_capture_ns)
            size = float(np.linalg.norm(lm[33, :2] - lm[263, :2]))
            out.append((size, FaceObservation(-1, t_capture_ns, time.monotonic_ns(), True, presence, lm, lm, roi, pose,
                                              True, {})))
        return [o for _, o in sorted(out, key=lambda so: -so[0])]
