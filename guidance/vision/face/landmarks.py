"""Face landmark model (468-point mesh) around the ONNX model: ROI, crop, inference, projection.

The model sees a 192×192 RGB crop in [0, 1] of a rotated square region of
interest (ROI) aligned with the eyes, and returns 468 (x, y, z) points in crop
pixels plus a face-presence logit. Where the ROI comes from is the tracker's
business: from a detection on the first frame, from the previous landmarks
afterwards (mediapipe's face_detection_front_detection_to_roi.pbtxt and
face_landmark_landmarks_to_roi.pbtxt describe both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from guidance.vision.face.detector import Detection
from guidance.vision.models import load_model

INPUT_SIZE = 192
NUM_LANDMARKS = 468
ROI_SCALE = 1.5
# ORIGINAL_LANDMARK_MODEL is mediapipe's own. OCCLUSION_LANDMARK_MODEL is it fine-tuned not to be moved by
# a handpiece in front of the face (models/distill_face_landmark.py), and taught mediapipe's own presence
# answer on crops with no face, so the tracker loses a face where mediapipe's model does (it fails closed
# as before) while mapping the tip about twice as close. It is the tracker's default; the original stays
# the ground-truth tracker of `guidance simulate`, which sees frames without the handpiece.
ORIGINAL_LANDMARK_MODEL = "face_landmark"
OCCLUSION_LANDMARK_MODEL = "face_landmark_occlusion"
LANDMARK_MODEL = OCCLUSION_LANDMARK_MODEL
# Landmarks that define the in-plane rotation of the tracking ROI: the two
# corners of the eye on the image's left (outer 33, inner 133).
ROTATION_LANDMARKS = (33, 133)


@dataclass(frozen=True)
class Roi:
    """A rotated square in image pixels: centre, side and rotation (radians, clockwise in image)."""

    cx: float
    cy: float
    size: float
    rotation: float

    def corners(self) -> np.ndarray:
        """Top-left, top-right, bottom-left corners in image pixels."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        h = self.size / 2
        local = np.array([[-h, -h], [h, -h], [-h, h]])
        rot = np.array([[c, -s], [s, c]])
        return local @ rot.T + np.array([self.cx, self.cy])

    def crop_transform(self, out_size: int = INPUT_SIZE) -> np.ndarray:
        """2×3 affine mapping image pixels onto the crop."""
        dst = np.array([[0, 0], [out_size, 0], [0, out_size]], np.float32)
        return cv2.getAffineTransform(self.corners().astype(np.float32), dst)

    def inside_fraction(self, width: int, height: int) -> float:
        """Rough share of the ROI's centre region that lies in the image (for re-detection)."""
        xs = np.clip([self.cx - self.size / 4, self.cx + self.size / 4], 0, width)
        ys = np.clip([self.cy - self.size / 4, self.cy + self.size / 4], 0, height)
        inside = (xs[1] - xs[0]) * (ys[1] - ys[0])
        return float(inside / max((self.size / 2) ** 2, 1e-9))


def _normalise_angle(a: float) -> float:
    return a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi))


def _rotation(p0: np.ndarray, p1: np.ndarray) -> float:
    return _normalise_angle(-math.atan2(-(p1[1] - p0[1]), p1[0] - p0[0]))


def _square_roi(cx: float, cy: float, w: float, h: float, rotation: float) -> Roi:
    return Roi(cx, cy, max(w, h) * ROI_SCALE, rotation)


def roi_from_detection(det: Detection) -> Roi:
    """Detection box centre, rotation from the two eye keypoints, enlarged 1.5× and squared."""
    x0, y0, x1, y1 = det.box
    return _square_roi((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, _rotation(det.keypoints[0], det.keypoints[1]))


def roi_from_landmarks(landmarks: np.ndarray) -> Roi:
    """The box enclosing the landmarks, rotated along the eye line, enlarged 1.5× and squared."""
    xy = landmarks[:, :2]
    lo, hi = xy.min(0), xy.max(0)
    rot = _rotation(xy[ROTATION_LANDMARKS[0]], xy[ROTATION_LANDMARKS[1]])
    return _square_roi((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[0] - lo[0], hi[1] - lo[1], rot)


@dataclass(frozen=True)
class LandmarkResult:
    landmarks: np.ndarray  # (468, 3) image pixels; z in the same pixel scale, smaller = nearer
    presence: float  # face-presence probability in [0, 1]
    roi: Roi


class FaceLandmarker:
    """Runs the landmark model on an ROI of a BGR image."""

    def __init__(self, session=None, *, model: str = LANDMARK_MODEL):
        self.session = session or load_model(model)
        self.input_name = self.session.get_inputs()[0].name

    def crop(self, image_bgr: np.ndarray, roi: Roi) -> tuple[np.ndarray, np.ndarray]:
        """The model input tensor (1, 192, 192, 3) and the image→crop affine."""
        M = roi.crop_transform()
        crop = cv2.warpAffine(image_bgr, M, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        return (rgb.astype(np.float32) * (1.0 / 255.0))[None], M

    def infer(self, tensor: np.ndarray) -> tuple[np.ndarray, float]:
        """Landmarks in crop pixels (468, 3) and presence probability."""
        coords, logit = self.session.run(None, {self.input_name: tensor})
        presence = 1.0 / (1.0 + math.exp(-float(np.clip(logit.reshape(-1)[0], -80, 80))))
        return coords.reshape(NUM_LANDMARKS, 3), presence

    @staticmethod
    def project(crop_landmarks: np.ndarray, M: np.ndarray, roi: Roi) -> np.ndarray:
        """Crop pixels → image pixels; z rescaled by the same factor as x and y."""
        Minv = cv2.invertAffineTransform(M)
        xy = crop_landmarks[:, :2] @ Minv[:, :2].T + Minv[:, 2]
        z = crop_landmarks[:, 2:3] * (roi.size / INPUT_SIZE)
        return np.hstack([xy, z]).astype(np.float32)

    def run(self, image_bgr: np.ndarray, roi: Roi) -> LandmarkResult:
        tensor, M = self.crop(image_bgr, roi)
        crop_lm, presence = self.infer(tensor)
        return LandmarkResult(self.project(crop_lm, M, roi), presence, roi)
