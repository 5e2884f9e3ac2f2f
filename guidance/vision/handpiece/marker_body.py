"""A rigid set of ArUco markers with known 3D corners: the handpiece clip or the head band.

Both trackers solve the same problem (where is this rigid thing in camera
millimetres), so they share one description: marker id -> its four corners in
the body frame, in OpenCV's corner order (top-left, top-right, bottom-right,
bottom-left as seen from the front of the marker).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MarkerBody:
    """Markers rigidly attached to one object; coordinates in millimetres, body frame."""

    name: str
    dictionary: str  # an OpenCV predefined dictionary name, e.g. "DICT_4X4_50"
    corners_mm: dict[int, np.ndarray]  # id -> (4, 3)
    size_mm: dict[int, float]  # id -> black-square side length

    @property
    def ids(self) -> list[int]:
        return sorted(self.corners_mm)

    def centre_mm(self, marker_id: int) -> np.ndarray:
        return self.corners_mm[marker_id].mean(axis=0)

    def normal(self, marker_id: int) -> np.ndarray:
        """Outward unit normal (the side the marker is printed on)."""
        c = self.corners_mm[marker_id]
        u = c[1] - c[0]  # left -> right
        v = c[0] - c[3]  # bottom -> top
        n = np.cross(u, v)
        return n / np.linalg.norm(n)

    def local_square(self, marker_id: int) -> np.ndarray:
        """The marker's corners in its own frame, as `SOLVEPNP_IPPE_SQUARE` requires."""
        return square_corners(self.size_mm[marker_id])

    def marker_to_body(self, marker_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Rotation and translation taking marker-frame points to the body frame."""
        c = self.corners_mm[marker_id]
        x = c[1] - c[0]
        x = x / np.linalg.norm(x)
        n = self.normal(marker_id)
        y = np.cross(n, x)
        return np.column_stack([x, y, n]), c.mean(axis=0)


def square_corners(side_mm: float) -> np.ndarray:
    h = side_mm / 2.0
    return np.array([[-h, h, 0.0], [h, h, 0.0], [h, -h, 0.0], [-h, -h, 0.0]])


def plate_corners(centre: np.ndarray, right: np.ndarray, up: np.ndarray, side_mm: float) -> np.ndarray:
    """Corners of a square of side `side_mm` centred at `centre`, spanned by unit `right`/`up`."""
    h = side_mm / 2.0
    return np.array([centre - h * right + h * up, centre + h * right + h * up,
                     centre + h * right - h * up, centre - h * right - h * up])


def get_dictionary(name: str) -> cv2.aruco.Dictionary:
    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))
