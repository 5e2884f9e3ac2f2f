"""Drawing face observations onto frames (annotated videos, docs pictures, the live overlay)."""

from __future__ import annotations

import cv2
import numpy as np

from guidance.vision.face.tracker import FaceObservation
from guidance.vision.capture.camera import CameraModel

# Colours (BGR) chosen to stay distinct for common colour-vision deficiencies.
MESH = (200, 200, 200)
CONTOUR = (0, 200, 255)  # amber
ROI = (255, 160, 0)  # blue
AXES = ((0, 120, 255), (255, 255, 0), (255, 0, 255))  # x orange, y cyan, z magenta

CONTOUR_SETS = ("FACEMESH_FACE_OVAL", "FACEMESH_LIPS", "FACEMESH_LEFT_EYE", "FACEMESH_RIGHT_EYE",
                "FACEMESH_LEFT_EYEBROW", "FACEMESH_RIGHT_EYEBROW", "FACEMESH_NOSE")


class FaceDrawer:
    """Pre-packs the topology once so that drawing a frame is a couple of polylines calls."""

    def __init__(self, topology: dict):
        conns = topology["connections"]
        self.mesh_edges = np.asarray(conns["FACEMESH_TESSELATION"], dtype=np.int32)
        self.contour_edges = np.concatenate([np.asarray(conns[k], dtype=np.int32) for k in CONTOUR_SETS if k in conns])

    @staticmethod
    def _lines(img: np.ndarray, pts: np.ndarray, edges: np.ndarray, colour, thickness: int) -> None:
        segs = np.round(pts[edges] * 16).astype(np.int32)  # 4 fractional bits for sub-pixel lines
        cv2.polylines(img, list(segs), False, colour, thickness, cv2.LINE_AA, shift=4)

    def draw(self, img: np.ndarray, obs: FaceObservation, camera: CameraModel | None = None, *, mesh: bool = True) -> np.ndarray:
        if not obs.found or obs.landmarks is None:
            cv2.putText(img, "no face", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(img, "no face", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
            return img
        pts = obs.landmarks[:, :2]
        if mesh:
            self._lines(img, pts, self.mesh_edges, MESH, 1)
        self._lines(img, pts, self.contour_edges, CONTOUR, 1)
        if obs.roi is not None:
            c = obs.roi.corners()
            br = c[1] + c[2] - c[0]
            quad = np.round(np.array([c[0], c[1], br, c[2]]) * 16).astype(np.int32)
            cv2.polylines(img, [quad], True, ROI, 1, cv2.LINE_AA, shift=4)
        pose = obs.head_pose
        if pose is not None and pose.valid:
            h, w = img.shape[:2]
            cam = camera.scaled_to(w, h) if camera else CameraModel.default(w, h)
            axes = np.array([[0, 0, 0], [40, 0, 0], [0, 40, 0], [0, 0, 40]], dtype=np.float64)
            p, _ = cv2.projectPoints(axes, pose.rvec, pose.tvec_mm, cam.K, cam.dist)
            p = p.reshape(-1, 2)
            for i in range(3):
                cv2.arrowedLine(img, tuple(np.round(p[0]).astype(int)), tuple(np.round(p[i + 1]).astype(int)), AXES[i], 2, cv2.LINE_AA, tipLength=0.2)
        label = f"presence {obs.presence:.2f}" + ("  re-detect" if obs.redetected else "")
        cv2.putText(img, label, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, label, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        return img
