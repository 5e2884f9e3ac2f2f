"""Short-range face detector (BlazeFace) around the ONNX model: anchors, decoding, weighted NMS.

Our own implementation of what mediapipe's `face_detection_short_range*.pbtxt`
graphs describe: a 128×128 letterboxed RGB input scaled to [-1, 1], 896 SSD
anchors on two feature maps, box + six keypoints regressed per anchor, scores
through a sigmoid, and weighted non-max suppression (overlapping boxes are
averaged by score instead of discarded, which steadies the box).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from guidance.vision.models import load_model

# Anchor topology of the short-range model (SsdAnchorsCalculator options in
# face_detection_short_range_common.pbtxt), kept as data beside the code.
INPUT_SIZE = 128
ANCHOR_STRIDES = (8, 16, 16, 16)
ANCHOR_OFFSET = 0.5
ANCHORS_PER_LAYER = 2  # aspect ratio 1.0 plus the interpolated scale
NUM_KEYPOINTS = 6
RAW_SCORE_CLIP = 100.0

# Keypoint order as the model emits it (from the subject's point of view).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion", "left_ear_tragion")


def ssd_anchor_centres(input_size: int = INPUT_SIZE, strides: tuple[int, ...] = ANCHOR_STRIDES) -> np.ndarray:
    """(N, 2) anchor centres, normalised to [0, 1]; fixed anchor size means w = h = 1.

    Consecutive layers with the same stride share one feature map, so their
    anchors are emitted together cell by cell (2 + 2 + 2 = 6 per cell at stride 16).
    """
    centres: list[np.ndarray] = []
    i = 0
    while i < len(strides):
        stride = strides[i]
        j = i
        while j < len(strides) and strides[j] == stride:
            j += 1
        per_cell = ANCHORS_PER_LAYER * (j - i)
        n = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grid = np.stack([(xs + ANCHOR_OFFSET) / n, (ys + ANCHOR_OFFSET) / n], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


def letterbox(image_bgr: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Fit the image into a size×size square keeping its aspect ratio (zero padding), RGB in [-1, 1].

    The detectors (face and pose) were trained on such inputs; returns the
    (1, size, size, 3) tensor, the scale and the left/top padding, so that
    detections can be mapped back to image pixels.
    """
    h, w = image_bgr.shape[:2]
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((size, size, 3), np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py:py + nh, px:px + nw] = resized
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    return (rgb.astype(np.float32) / 127.5 - 1.0)[None], scale, float(px), float(py)


@dataclass(frozen=True)
class Detection:
    """A face detection in image pixels."""

    score: float
    box: np.ndarray  # (xmin, ymin, xmax, ymax)
    keypoints: np.ndarray  # (6, 2), order KEYPOINT_NAMES


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, iou_threshold: float) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Cluster overlapping candidates around the best one and average them by score."""
    order = np.argsort(-scores)
    scores, boxes, keypoints = scores[order], boxes[order], keypoints[order]
    remaining = np.ones(len(scores), dtype=bool)
    out = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        idx = np.nonzero(remaining)[0]
        overlap = _iou(boxes[i], boxes[idx]) > iou_threshold
        members = idx[overlap]
        remaining[members] = False
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(0) / w.sum()
        kps = (keypoints[members] * w[:, :, None]).sum(0) / w.sum()
        out.append((float(scores[i]), box, kps))
    return out


class FaceDetector:
    """Finds faces in a BGR image; returns detections sorted by score."""

    def __init__(self, *, min_score: float = 0.5, iou_threshold: float = 0.3, session=None):
        self.session = session or load_model("face_detection_short_range")
        self.input_name = self.session.get_inputs()[0].name
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.anchors = ssd_anchor_centres()

    def preprocess(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        return letterbox(image_bgr, INPUT_SIZE)

    def decode(self, regressors: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs → (scores, boxes, keypoints) in normalised letterbox coordinates."""
        raw = regressors.reshape(-1, 4 + 2 * NUM_KEYPOINTS) / INPUT_SIZE
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -RAW_SCORE_CLIP, RAW_SCORE_CLIP)))
        keep = scores >= self.min_score
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]
        cx = raw[:, 0] + anchors[:, 0]
        cy = raw[:, 1] + anchors[:, 1]
        half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        kps = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :]
        return scores, boxes, kps

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        tensor, scale, px, py = self.preprocess(image_bgr)
        regressors, logits = self.session.run(None, {self.input_name: tensor})
        scores, boxes, kps = self.decode(regressors, logits)
        if len(scores) == 0:
            return []
        dets = []
        for score, box, kp in weighted_nms(scores, boxes, kps, self.iou_threshold):
            # letterbox-normalised → image pixels
            box_px = (box * INPUT_SIZE - np.array([px, py, px, py])) / scale
            kp_px = (kp * INPUT_SIZE - np.array([px, py])) / scale
            dets.append(Detection(score, box_px.astype(np.float32), kp_px.astype(np.float32)))
        return dets
