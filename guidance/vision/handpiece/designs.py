"""The marker designs: handpiece clip, head band and ChArUco calibration board.

One place says which dictionary and ids each object uses so they never collide:
the handpiece and head band share DICT_4X4_50 (large cells, readable at 20-30 px
wide) with disjoint id ranges; the calibration board uses DICT_5X5_100 so a board
lying on the trolley can never be mistaken for the handpiece.

Handpiece clip ("four-plate clip"): four square plates around the shaft, each
tilted 45 degrees towards the rear, so at least one plate faces the camera
whether the handpiece is seen from the side or from behind while the tip sits
on the skin. Handpiece frame: origin on the shaft axis at the plate centres,
+z along the shaft towards the tip, the tip on +z.

Skin reference patch: a rigid card (printed at true scale, laminated, stuck on
the skin with double-sided medical tape) carrying eight markers in two columns
of four, which defines a local chart in millimetres on the body: origin at the
card's centre, u to the right of the printed card, v down it (the printed
arrow points to the client's head), z into the skin. docs/body.md.

Head band: a rigid elliptical band (the markers must not move relative to each
other; an elastic strap holds the rigid band on the head) with eight plates
every 45 degrees, so some plates stay in view when the face turns away. Band
frame: +x to the wearer's left, +y up, +z forward out of the forehead.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from guidance.vision.handpiece.marker_body import MarkerBody, get_dictionary, plate_corners

TRACKING_DICTIONARY = "DICT_4X4_50"
CHARUCO_DICTIONARY = "DICT_5X5_100"


def _plates_body(name: str, plates: dict, marker_mm: float) -> MarkerBody:
    """The rigid body of square markers centred on plates given as (centre, right, up) per id."""
    corners = {i: plate_corners(c, r, u, marker_mm) for i, (c, r, u) in plates.items()}
    return MarkerBody(name, TRACKING_DICTIONARY, corners, {i: marker_mm for i in plates})


def _marker_entries(body: MarkerBody, ids, marker_mm: float, plate_mm: float) -> list[dict]:
    """The `markers` list of a profile file for this body."""
    return [{"id": i, "size_mm": marker_mm, "plate_mm": plate_mm,
             "corners_mm": np.round(body.corners_mm[i], 4).tolist()} for i in ids]


@dataclass(frozen=True)
class ClipDesign:
    ids: tuple[int, ...] = (0, 1, 2, 3)
    marker_mm: float = 22.0  # black square side
    plate_mm: float = 28.0  # white plate side (quiet zone around the marker)
    plate_radius_mm: float = 25.0  # shaft axis -> plate centre (plates clear the shaft and each other)
    tilt_deg: float = 45.0  # plate normal tilted from radial towards the rear
    tip_z_mm: float = 70.0  # clip centre -> tip along the shaft
    shaft_diameter_mm: float = 20.0
    shaft_rear_z_mm: float = -90.0  # where the handpiece body ends behind the clip
    electrode_diameter_mm: float = 10.0
    name: str = "default handpiece, four-plate clip"

    def plates(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """id -> (centre, right, up) of each plate in the handpiece frame."""
        out = {}
        tilt = np.radians(self.tilt_deg)
        for k, marker_id in enumerate(self.ids):
            phi = 2 * np.pi * k / len(self.ids)
            radial = np.array([np.cos(phi), np.sin(phi), 0.0])
            normal = np.cos(tilt) * radial + np.sin(tilt) * np.array([0.0, 0.0, -1.0])
            right = np.array([-np.sin(phi), np.cos(phi), 0.0])
            up = np.cross(normal, right)
            out[marker_id] = (self.plate_radius_mm * radial, right, up)
        return out

    def body(self) -> MarkerBody:
        return _plates_body(self.name, self.plates(), self.marker_mm)

    def profile_dict(self) -> dict:
        """The handpiece profile YAML content for this design."""
        body = self.body()
        return {
            "name": self.name,
            "kind": "handpiece",
            "dictionary": TRACKING_DICTIONARY,
            "markers": _marker_entries(body, self.ids, self.marker_mm, self.plate_mm),
            "tip_offset_mm": [0.0, 0.0, self.tip_z_mm],
            "electrode_diameter_mm": self.electrode_diameter_mm,
            "shaft": {"diameter_mm": self.shaft_diameter_mm, "rear_z_mm": self.shaft_rear_z_mm},
        }


@dataclass(frozen=True)
class HeadBandDesign:
    ids: tuple[int, ...] = (10, 11, 12, 13, 14, 15, 16, 17)
    marker_mm: float = 30.0
    plate_mm: float = 36.0
    half_width_mm: float = 95.0  # ellipse semi-axis, left-right
    half_length_mm: float = 110.0  # ellipse semi-axis, front-back
    name: str = "default head band, eight plates"

    def plates(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = {}
        up = np.array([0.0, 1.0, 0.0])
        a, b = self.half_width_mm, self.half_length_mm
        for k, marker_id in enumerate(self.ids):
            th = 2 * np.pi * k / len(self.ids)
            centre = np.array([a * np.sin(th), 0.0, b * np.cos(th)])
            normal = np.array([np.sin(th) / a, 0.0, np.cos(th) / b])
            normal /= np.linalg.norm(normal)
            right = np.cross(up, normal)
            out[marker_id] = (centre, right, up)
        return out

    def body(self) -> MarkerBody:
        return _plates_body(self.name, self.plates(), self.marker_mm)

    def profile_dict(self) -> dict:
        body = self.body()
        return {
            "name": self.name,
            "kind": "head_band",
            "dictionary": TRACKING_DICTIONARY,
            "markers": _marker_entries(body, self.ids, self.marker_mm, self.plate_mm),
        }


@dataclass(frozen=True)
class PatchDesign:
    """The skin reference patch: a rigid card, `columns` x `rows` markers on contiguous plates.

    Narrow across (u) and long along the body (v): a rigid card must sit on a body curved across (thigh,
    flank); 50 mm wide it stands off the skin by d^2/(2R) = 3.9 mm at its edges on a thigh of R = 80 mm,
    a 72 mm square card by 8.6 mm.
    """

    ids: tuple[int, ...] = (20, 21, 22, 23, 24, 25, 26, 27)  # row by row, from the top-left as printed
    columns: int = 2
    rows: int = 4
    marker_mm: float = 18.0  # black square side (25 px at 45 cm for a 640 px wide webcam)
    pitch_mm: float = 22.0  # plate side: the plates touch, one white card
    border_mm: float = 3.0  # white card beyond the outer plates (the cut line)
    # The printed face above the skin where the card touches it: laminated card (0.5 mm) on double-sided
    # medical tape (1 mm). The skin plane is this far behind the markers' plane.
    standoff_mm: float = 1.5
    name: str = "skin reference patch, 2 x 4 markers"

    @property
    def size_mm(self) -> tuple[float, float]:
        """Card width (u) and height (v)."""
        return (self.columns * self.pitch_mm + 2 * self.border_mm, self.rows * self.pitch_mm + 2 * self.border_mm)

    def plates(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """id -> (centre, right, up) in the patch frame (x = u right, y = v down, z into the skin)."""
        out = {}
        right, up = np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])
        for k, marker_id in enumerate(self.ids):
            r, c = divmod(k, self.columns)
            centre = np.array([(c - (self.columns - 1) / 2) * self.pitch_mm, (r - (self.rows - 1) / 2) * self.pitch_mm,
                               0.0])
            out[marker_id] = (centre, right, up)
        return out

    def body(self) -> MarkerBody:
        return _plates_body(self.name, self.plates(), self.marker_mm)


@dataclass(frozen=True)
class CharucoDesign:
    """Fits an A4 sheet in landscape with margins (245 x 175 mm)."""

    squares_x: int = 7
    squares_y: int = 5
    square_mm: float = 35.0
    marker_mm: float = 26.0
    dictionary: str = CHARUCO_DICTIONARY

    def board(self) -> cv2.aruco.CharucoBoard:
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_mm, self.marker_mm,
                                      get_dictionary(self.dictionary))

    @property
    def size_mm(self) -> tuple[float, float]:
        return self.squares_x * self.square_mm, self.squares_y * self.square_mm

    @property
    def n_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)


def marker_tile(dictionary: str, marker_id: int, marker_px: int, plate_px: int) -> np.ndarray:
    """A marker (grey uint8) centred on a white plate; sizes in pixels."""
    tile = np.full((plate_px, plate_px), 255, np.uint8)
    img = cv2.aruco.generateImageMarker(get_dictionary(dictionary), marker_id, marker_px)
    o = (plate_px - marker_px) // 2
    tile[o:o + marker_px, o:o + marker_px] = img
    return tile
