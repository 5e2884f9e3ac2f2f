"""Shoulder line from the pose model, at a reduced rate and off the hot path.

Our own small pose pipeline around the two ONNX models, after what
mediapipe's graphs document (``pose_detection_cpu.pbtxt``,
``pose_detection_to_roi.pbtxt``, ``pose_landmark_by_roi_cpu.pbtxt``,
``pose_landmark_by_roi_post_processing.pbtxt``, ``pose_landmarks_to_roi.pbtxt``):

- **detector** (``pose_detection``): the whole image letterboxed into
  224×224 RGB in [-1, 1]; 2254 SSD anchors (strides 8, 16, 32, 32, 32; two
  anchors per cell at strides 8 and 16, six at 32; fixed size); per anchor a
  box (x, y, w, h — "reverse output order") and 4 keypoints in input pixels
  relative to the anchor centre; scores through a sigmoid (logits clipped at
  ±100), kept from ``MIN_DETECTION_SCORE``; weighted NMS at IoU 0.3;
  letterbox removed;
- **ROI from the detection**: the alignment keypoints 0 (mid-hip) and 1 (a
  point that encodes full-body size and rotation): centre at keypoint 0, side
  2·|k1 − k0| enlarged 1.25×, rotated so that k0→k1 points up in the crop;
- **landmark model** (``pose_landmark_full``): that rotated square cropped to
  256×256 RGB in [0, 1] (border replicated); 39 × (x, y, z, visibility logit,
  presence logit) in crop pixels, plus a pose-presence probability (gated at
  0.5). x, y go back to image pixels through the inverse crop transform;
  landmarks 33 and 34 (auxiliary) give the ROI for the next run. Unlike
  mediapipe, the detector still runs every time (this is off the hot path)
  and the tracked ROI is kept only while it agrees with the detection: on a
  tracked ROI alone the landmark model reported a confident "pose" on a
  landscape picture (presence 0.97). mediapipe's
  heatmap refinement step is not done (sub-pixel, irrelevant for a shoulder
  line).

Only the shoulders are returned (landmark 11 = the subject's left shoulder,
12 = the right one), with their visibility, a status (valid or the reason it is
not) and the capture time of the frame it came from.

The pose model takes ~20–30 ms per run, several times the whole hot-path
budget, so it never runs on the hot path: ``ShoulderTracker`` runs it on a
background thread on every ``every_n``-th submitted frame; the hot path
submits frames (a copy into a one-slot mailbox, never waiting) and reads
``latest()``, which says when the result is too old to use.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TypedDict

import cv2
import numpy as np

from guidance.vision.face.detector import letterbox, ssd_anchor_centres, weighted_nms
from guidance.vision.face.landmarks import Roi, _normalise_angle
from guidance.vision.models import load_model

DETECTOR_INPUT = 224
DETECTOR_STRIDES = (8, 16, 32, 32, 32)
NUM_DETECTOR_KEYPOINTS = 4
RAW_SCORE_CLIP = 100.0
MIN_DETECTION_SCORE = 0.5
NMS_IOU = 0.3
ROI_SCALE = 1.25
ALIGNMENT_KEYPOINTS = (0, 1)  # detector keypoints: mid-hip, full-body size/rotation point
AUX_ALIGNMENT_LANDMARKS = (33, 34)  # the same two points among the landmark model's outputs

# A tracked ROI (from the last run's landmarks) is kept while it agrees with this run's detection.
TRACK_MAX_SHIFT = 0.25  # centre distance, share of the detected ROI side
TRACK_MAX_SCALE = 1.5

LANDMARK_INPUT = 256
NUM_LANDMARKS = 39  # 33 body landmarks + 6 auxiliary points
MIN_POSE_PRESENCE = 0.5

LEFT_SHOULDER = 11  # the subject's left shoulder
RIGHT_SHOULDER = 12
MIN_SHOULDER_VISIBILITY = 0.5
# The shoulders must be at least this far apart in the image, relative to the ROI side,
# for a line through them to mean anything.
MIN_SHOULDER_SPAN_OF_ROI = 0.02


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, np.float64), -80.0, 80.0)))


@dataclass(frozen=True)
class PoseDetection:
    """A person detection in image pixels: score, box (x0, y0, x1, y1) and the 4 alignment keypoints."""

    score: float
    box: np.ndarray
    keypoints: np.ndarray  # (4, 2): mid-hip, full-body size/rotation, mid-shoulder, upper-body size/rotation


def roi_from_alignment(p0: np.ndarray, p1: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """Rotated square ROI: centre p0, side 2|p1 − p0| × scale, p0→p1 pointing up in the crop."""
    dx, dy = float(p1[0] - p0[0]), float(p1[1] - p0[1])
    side = 2.0 * math.hypot(dx, dy) * scale
    rotation = _normalise_angle(math.pi / 2 - math.atan2(-dy, dx))
    return Roi(float(p0[0]), float(p0[1]), side, rotation)


class PoseDetector:
    """Finds people in a BGR image; detections sorted by score."""

    def __init__(self, *, min_score: float = MIN_DETECTION_SCORE, iou_threshold: float = NMS_IOU, session=None):
        self.session = session or load_model("pose_detection")
        self.input_name = self.session.get_inputs()[0].name
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.anchors = ssd_anchor_centres(DETECTOR_INPUT, DETECTOR_STRIDES)
        if len(self.anchors) != 2254:  # the model's output size; a wrong topology must not decode
            raise AssertionError(f"pose anchors: {len(self.anchors)} != 2254")

    def preprocess(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        return letterbox(image_bgr, DETECTOR_INPUT)

    def decode(self, regressors: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs → (scores, boxes, keypoints) normalised to the 224 letterbox, above min_score."""
        raw = regressors.reshape(-1, 4 + 2 * NUM_DETECTOR_KEYPOINTS).astype(np.float64) / DETECTOR_INPUT
        scores = _sigmoid(np.clip(logits.reshape(-1), -RAW_SCORE_CLIP, RAW_SCORE_CLIP))
        keep = scores >= self.min_score
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep].astype(np.float64)
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        hw, hh = raw[:, 2] / 2, raw[:, 3] / 2
        boxes = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)
        kps = raw[:, 4:].reshape(-1, NUM_DETECTOR_KEYPOINTS, 2) + anchors[:, None, :]
        return scores, boxes, kps

    def detect(self, image_bgr: np.ndarray) -> list[PoseDetection]:
        tensor, scale, px, py = self.preprocess(image_bgr)
        out = dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, {self.input_name: tensor})))
        scores, boxes, kps = self.decode(out["Identity"], out["Identity_1"])
        if len(scores) == 0:
            return []
        dets = []
        for score, box, kp in weighted_nms(scores, boxes, kps, self.iou_threshold):
            box_px = (box * DETECTOR_INPUT - np.array([px, py, px, py])) / scale
            kp_px = (kp * DETECTOR_INPUT - np.array([px, py])) / scale
            dets.append(PoseDetection(score, box_px, kp_px))
        return dets


@dataclass(frozen=True)
class PoseLandmarks:
    landmarks: np.ndarray  # (39, 3) image px (z in crop-relative pixels scaled like x)
    visibility: np.ndarray  # (39,) probability
    presence: np.ndarray  # (39,) probability
    pose_presence: float
    roi: Roi


class PoseLandmarker:
    """Runs pose_landmark_full on a rotated ROI of a BGR image."""

    def __init__(self, session=None):
        self.session = session or load_model("pose_landmark_full")
        self.input_name = self.session.get_inputs()[0].name
        # Only the landmarks and the presence flag are needed; segmentation/heatmaps/world are not fetched.
        self.outputs = ["Identity", "Identity_1"]

    def crop(self, image_bgr: np.ndarray, roi: Roi) -> tuple[np.ndarray, np.ndarray]:
        M = roi.crop_transform(LANDMARK_INPUT)
        crop = cv2.warpAffine(image_bgr, M, (LANDMARK_INPUT, LANDMARK_INPUT), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        return (rgb.astype(np.float32) * (1.0 / 255.0))[None], M

    def run(self, image_bgr: np.ndarray, roi: Roi) -> PoseLandmarks:
        tensor, M = self.crop(image_bgr, roi)
        raw, flag = self.session.run(self.outputs, {self.input_name: tensor})
        raw = raw.reshape(NUM_LANDMARKS, 5).astype(np.float64)
        Minv = cv2.invertAffineTransform(M)
        xy = raw[:, :2] @ Minv[:, :2].T + Minv[:, 2]
        z = raw[:, 2:3] * (roi.size / LANDMARK_INPUT)
        return PoseLandmarks(np.hstack([xy, z]), _sigmoid(raw[:, 3]), _sigmoid(raw[:, 4]),
                             float(np.asarray(flag).reshape(-1)[0]), roi)


@dataclass(frozen=True)
class ShoulderObservation:
    """The shoulder line in one frame (image px), or why there is none.

    ``left_px`` is the subject's left shoulder (landmark 11; image right for a
    client facing the camera), ``right_px`` the subject's right (12).
    ``valid`` is True only when a pose is present, both shoulders are visible
    above the threshold and the pair is plausible; otherwise ``reason`` says why.
    """

    frame_index: int
    t_capture_ns: int
    t_done_ns: int
    valid: bool
    # "ok" | "no-person" | "no-pose" | "shoulders-not-visible" | "shoulders-implausible" | "error: …"
    # | "pending" | "stale" (the last two from ShoulderTracker.latest)
    reason: str
    left_px: tuple[float, float] | None = None
    right_px: tuple[float, float] | None = None
    visibility: tuple[float, float] = (0.0, 0.0)  # (left, right)
    pose_presence: float = 0.0
    redetected: bool = False
    roi: Roi | None = None
    landmarks: np.ndarray | None = field(default=None, repr=False)  # (33, 3) image px, for the overlay

    def age_ms(self, now_ns: int | None = None) -> float:
        return ((time.monotonic_ns() if now_ns is None else now_ns) - self.t_capture_ns) / 1e6

    def line(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(right_px, left_px) as arrays, or None when not valid."""
        if not self.valid:
            return None
        return np.asarray(self.right_px, float), np.asarray(self.left_px, float)


class _PoseFields(TypedDict):
    """The ShoulderObservation fields a landmark run fills, valid or not."""

    visibility: tuple[float, float]
    pose_presence: float
    redetected: bool
    roi: Roi
    landmarks: np.ndarray


def _invalid(index: int, t_capture_ns: int, reason: str, **kw) -> ShoulderObservation:
    return ShoulderObservation(index, t_capture_ns, time.monotonic_ns(), False, reason, **kw)


class PoseEstimator:
    """Detector + landmark model with ROI tracking between runs; returns shoulder observations."""

    def __init__(self, *, min_visibility: float = MIN_SHOULDER_VISIBILITY, min_presence: float = MIN_POSE_PRESENCE,
                 detector: PoseDetector | None = None, landmarker: PoseLandmarker | None = None):
        self.detector = detector or PoseDetector()
        self.landmarker = landmarker or PoseLandmarker()
        self.min_visibility = min_visibility
        self.min_presence = min_presence
        self._roi: Roi | None = None  # from the previous run's auxiliary landmarks

    def reset(self) -> None:
        self._roi = None

    def process(self, image_bgr: np.ndarray, t_capture_ns: int = 0, frame_index: int = 0) -> ShoulderObservation:
        # The detector runs every time: on a tracked ROI alone the landmark model reports a confident
        # pose on a landscape (measured: presence 0.97 on free-mountain-vector-01.jpg after a person).
        dets = self.detector.detect(image_bgr)
        if not dets:
            self._roi = None
            return _invalid(frame_index, t_capture_ns, "no-person", redetected=True)
        d = dets[0]
        detected = roi_from_alignment(d.keypoints[ALIGNMENT_KEYPOINTS[0]], d.keypoints[ALIGNMENT_KEYPOINTS[1]])
        roi, redetected = self._roi, False
        # The previous landmarks give the better ROI, as long as they describe the person detected now.
        if roi is None or math.hypot(roi.cx - detected.cx, roi.cy - detected.cy) > TRACK_MAX_SHIFT * detected.size \
                or not (1 / TRACK_MAX_SCALE < roi.size / max(detected.size, 1e-9) < TRACK_MAX_SCALE):
            roi, redetected = detected, True
        if not (np.isfinite([roi.cx, roi.cy, roi.size, roi.rotation]).all() and roi.size >= 8):
            self._roi = None
            return _invalid(frame_index, t_capture_ns, "no-person", redetected=redetected)
        res = self.landmarker.run(image_bgr, roi)
        if res.pose_presence < self.min_presence:
            self._roi = None  # lost: the next run re-detects
            return _invalid(frame_index, t_capture_ns, "no-pose", pose_presence=res.pose_presence,
                            redetected=redetected, roi=roi)
        a0, a1 = AUX_ALIGNMENT_LANDMARKS
        self._roi = roi_from_alignment(res.landmarks[a0, :2], res.landmarks[a1, :2])
        lm = res.landmarks
        left, right = lm[LEFT_SHOULDER, :2], lm[RIGHT_SHOULDER, :2]
        vis = (float(res.visibility[LEFT_SHOULDER]), float(res.visibility[RIGHT_SHOULDER]))
        common: _PoseFields = dict(visibility=vis, pose_presence=res.pose_presence, redetected=redetected, roi=roi,
                                   landmarks=lm[:33].copy())
        if min(vis) < self.min_visibility:
            return _invalid(frame_index, t_capture_ns, "shoulders-not-visible", **common)
        h, w = image_bgr.shape[:2]
        inside = all(-0.05 * w <= p[0] <= 1.05 * w and -0.05 * h <= p[1] <= 1.05 * h for p in (left, right))
        span = float(np.linalg.norm(left - right))
        # Facing the camera, the subject's left shoulder is on the image's right: crossed = turned away.
        if not inside or span < MIN_SHOULDER_SPAN_OF_ROI * roi.size or left[0] <= right[0]:
            return _invalid(frame_index, t_capture_ns, "shoulders-implausible",
                            left_px=(float(left[0]), float(left[1])), right_px=(float(right[0]), float(right[1])),
                            **common)
        return ShoulderObservation(frame_index, t_capture_ns, time.monotonic_ns(), True, "ok",
                                   (float(left[0]), float(left[1])), (float(right[0]), float(right[1])), **common)


class ShoulderTracker:
    """Runs the pose estimator on a background thread at a reduced rate; the hot path never waits.

    ``submit(image, t_capture_ns, frame_index)`` accepts every ``every_n``-th
    call: it copies the image into a one-slot mailbox (replacing a frame the
    worker has not started yet) and returns. ``latest(now_ns)`` returns the
    newest result, or an invalid observation with reason ``"pending"`` (none
    yet) or ``"stale"`` (older than ``max_age_ms`` at ``now_ns``).
    """

    def __init__(self, estimator: PoseEstimator | None = None, *, every_n: int = 10, max_age_ms: float = 1000.0,
                 copy: bool = True, start: bool = True):
        if every_n < 1:
            raise ValueError("every_n must be ≥ 1")
        self._estimator = estimator
        self.every_n = every_n
        self.max_age_ms = max_age_ms
        self.copy = copy
        self._cond = threading.Condition()
        self._pending: tuple[np.ndarray, int, int] | None = None
        self._latest: ShoulderObservation | None = None
        self._count = 0
        self._stop = False
        self.runs = 0
        self.dropped = 0  # accepted frames replaced before the worker took them
        self.run_ms: list[float] = []
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="shoulder-tracker", daemon=True)
            self._thread.start()

    def submit(self, image_bgr: np.ndarray, t_capture_ns: int, frame_index: int = 0) -> bool:
        """Offer a frame; True when it was taken for a pose run. Never waits for the model."""
        self._count += 1
        if (self._count - 1) % self.every_n:
            return False
        img = image_bgr.copy() if self.copy else image_bgr
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = (img, int(t_capture_ns), int(frame_index))
            self._cond.notify()
        return True

    def latest(self, now_ns: int | None = None) -> ShoulderObservation:
        """The newest observation if fresh; else an invalid one saying "pending" or "stale"."""
        obs = self._latest  # a single reference read: no lock needed, never waits
        now = time.monotonic_ns() if now_ns is None else now_ns
        if obs is None:
            return ShoulderObservation(-1, now, now, False, "pending")
        if obs.age_ms(now) > self.max_age_ms:
            return replace(obs, valid=False, reason="stale")
        return obs

    def _work(self) -> None:
        if self._estimator is None:
            self._estimator = PoseEstimator()
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                assert self._pending is not None, "the wait ends on a pending frame or on stop"
                img, t_ns, idx = self._pending
                self._pending = None
            t0 = time.perf_counter()
            try:
                obs = self._estimator.process(img, t_ns, idx)
            except Exception as exc:  # fail closed: an invalid observation, the thread keeps going
                obs = _invalid(idx, t_ns, f"error: {type(exc).__name__}: {exc}")
            self.run_ms.append((time.perf_counter() - t0) * 1e3)
            self.runs += 1
            self._latest = obs

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _mapping_cost(images: list[np.ndarray], shoulders: list[ShoulderObservation]) -> dict:
    """What the shoulder line adds on the hot path: ZoneMapper.prepare and an off-mesh lookup, ms."""
    from guidance.vision.face.tracker import FaceTracker
    from guidance.vision.capture.sources import Frame
    from guidance.zones.mapper import ZoneMapper

    tracker, mapper = FaceTracker(), ZoneMapper()
    prep0: list[float] = []
    prep1: list[float] = []
    look0: list[float] = []
    look1: list[float] = []
    for k, (img, sh) in enumerate(zip(images, shoulders)):
        face = tracker.process(Frame(k, k, img))
        if not face.found:
            continue
        assert face.landmarks is not None, "a found face has landmarks"
        size = (img.shape[1], img.shape[0])
        sh = replace(sh, t_capture_ns=face.t_capture_ns)
        chin = face.landmarks[152, :2]
        below = (float(chin[0]), float(min(chin[1] + 0.6 * (img.shape[0] - chin[1]), img.shape[0] - 1)))
        for shoulders_in, prep, look in ((None, prep0, look0), (sh, prep1, look1)):
            t0 = time.perf_counter()
            frame = mapper.prepare(face, size, shoulders=shoulders_in)
            t1 = time.perf_counter()
            assert frame is not None, "prepare gives a frame for a found face"
            frame.locate(*below)
            t2 = time.perf_counter()
            prep.append((t1 - t0) * 1e3)
            look.append((t2 - t1) * 1e3)

    def med(xs):
        return round(float(np.median(xs)), 4) if xs else None

    return {"mapper_prepare_ms": {"without_shoulders": med(prep0), "with_shoulders": med(prep1)},
            "neck_lookup_ms": {"without_shoulders": med(look0), "with_shoulders": med(look1)}}


def run_pose_bench(video: str = "single_face.mp4", frames: int = 60) -> dict:
    """Pose cost on a real video: detector, landmark model, whole estimator; median/p99 ms.

    Also what the hot path pays: ``ShoulderTracker.submit`` (every call, incl. the
    accepted ones that copy the frame) and ``latest()``.
    """
    from guidance import samples

    from pathlib import Path

    path = Path(video) if Path(video).exists() else samples.fetch(str(video))
    cap = cv2.VideoCapture(str(path))
    images: list[np.ndarray] = []
    while len(images) < frames:
        ok, img = cap.read()
        if not ok:
            break
        images.append(img)
    cap.release()
    if not images:
        raise ValueError(f"no frames read from {video}")
    det, lmk = PoseDetector(), PoseLandmarker()
    est = PoseEstimator(detector=det, landmarker=lmk)

    def stats(xs):
        a = np.asarray(xs)
        return {"median_ms": round(float(np.median(a)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}

    t_det, t_lmk, t_est = [], [], []
    valid = 0
    for img in images:
        t0 = time.perf_counter()
        det.detect(img)
        t_det.append((time.perf_counter() - t0) * 1e3)
    est.process(images[0])  # seed the tracked ROI
    roi = est._roi or Roi(images[0].shape[1] / 2, images[0].shape[0] / 2, max(images[0].shape[:2]), 0.0)
    for img in images:
        t0 = time.perf_counter()
        lmk.run(img, roi)
        t_lmk.append((time.perf_counter() - t0) * 1e3)
    shoulders = []
    for k, img in enumerate(images):
        t0 = time.perf_counter()
        obs = est.process(img, k, k)
        t_est.append((time.perf_counter() - t0) * 1e3)
        valid += obs.valid
        shoulders.append(obs)
    mapping = _mapping_cost(images, shoulders)
    tracker = ShoulderTracker(PoseEstimator(detector=det, landmarker=lmk), every_n=10)
    t_submit, t_latest = [], []
    try:
        for k, img in enumerate(images * 3):
            t0 = time.perf_counter()
            tracker.submit(img, time.monotonic_ns(), k)
            t1 = time.perf_counter()
            tracker.latest()
            t2 = time.perf_counter()
            t_submit.append((t1 - t0) * 1e3)
            t_latest.append((t2 - t1) * 1e3)
            time.sleep(1 / 30)
    finally:
        tracker.close()
    out = {
        "video": str(video), "frames": len(images), "size": [int(images[0].shape[1]), int(images[0].shape[0])],
        "shoulders_valid_fraction": round(valid / len(images), 3),
        "detector": stats(t_det), "landmarks": stats(t_lmk),
        "estimator": stats(t_est), **mapping,
        "hot_path_submit": stats(t_submit), "hot_path_latest": stats(t_latest),
        "tracker_runs": tracker.runs, "tracker_dropped": tracker.dropped,
    }
    return out


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    argv = sys.argv[1:]
    if len(argv) > 1:
        result = run_pose_bench(argv[0], int(argv[1]))
    elif argv:
        result = run_pose_bench(argv[0])
    else:
        result = run_pose_bench()
    print(json.dumps(result, indent=2))
