"""`guidance markers`: sheets at true scale (DPI recorded, sizes measurable), readable by the detectors."""

from __future__ import annotations

import re
import struct

import cv2
import numpy as np

from guidance.cli import main
from guidance.vision.handpiece.marker_body import get_dictionary
from guidance.vision.handpiece.designs import CharucoDesign, ClipDesign, HeadBandDesign, PatchDesign

DPI = 300


def _png_dpi(path) -> float:
    data = path.read_bytes()
    i = data.index(b"pHYs")
    ppm_x, ppm_y, unit = struct.unpack(">IIB", data[i + 4:i + 13])
    assert unit == 1 and ppm_x == ppm_y
    return ppm_x * 0.0254


def _markers_mm(path, dictionary):
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    det = cv2.aruco.ArucoDetector(get_dictionary(dictionary))
    corners, ids, _ = det.detectMarkers(img)
    sides = {int(i): float(np.mean(np.linalg.norm(c.reshape(4, 2) - np.roll(c.reshape(4, 2), -1, 0), axis=1)))
             for c, i in zip(corners, ids.ravel())}
    return {i: s / DPI * 25.4 for i, s in sides.items()}, img.shape


def test_sheets_are_true_scale(tmp_path, capsys):
    assert main(["markers", "-o", str(tmp_path), "--dpi", str(DPI)]) == 0
    for name in ("handpiece_clip", "head_band", "skin_patch", "charuco_board"):
        assert abs(_png_dpi(tmp_path / f"{name}.png") - DPI) < 0.1
        pdf = (tmp_path / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
        box = [float(v) for v in re.search(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", pdf).groups()]
        # A4 in points (portrait or landscape), within a pixel.
        assert sorted(round(v / 72 * 25.4) for v in box) == [210, 297]
    clip, shape = _markers_mm(tmp_path / "handpiece_clip.png", "DICT_4X4_50")
    assert sorted(clip) == list(ClipDesign().ids)
    assert all(abs(s - ClipDesign().marker_mm) < 0.2 for s in clip.values())
    band, _ = _markers_mm(tmp_path / "head_band.png", "DICT_4X4_50")
    assert sorted(band) == list(HeadBandDesign().ids)
    assert all(abs(s - HeadBandDesign().marker_mm) < 0.2 for s in band.values())
    # The skin patch: two copies of the card, every marker at its size, and the pitch between them true too.
    img = cv2.imread(str(tmp_path / "skin_patch.png"), cv2.IMREAD_GRAYSCALE)
    corners, ids, _ = cv2.aruco.ArucoDetector(get_dictionary("DICT_4X4_50")).detectMarkers(img)
    design = PatchDesign()
    assert sorted(ids.ravel().tolist()) == sorted(list(design.ids) * 2)
    patch, _ = _markers_mm(tmp_path / "skin_patch.png", "DICT_4X4_50")
    assert all(abs(s - design.marker_mm) < 0.2 for s in patch.values())
    centres = {}
    for c, i in zip(corners, ids.ravel()):
        centres.setdefault(int(i), []).append(c.reshape(4, 2).mean(axis=0))
    first = {i: min(v, key=lambda p: p[0]) for i, v in centres.items()}  # the left card
    pitch_mm = np.linalg.norm(first[21] - first[20]) / DPI * 25.4
    assert abs(pitch_mm - design.pitch_mm) < 0.2
    # The board: every chessboard corner found, spaced by the stated square size.
    design = CharucoDesign()
    img = cv2.imread(str(tmp_path / "charuco_board.png"), cv2.IMREAD_GRAYSCALE)
    corners, ids, _, _ = cv2.aruco.CharucoDetector(design.board()).detectBoard(img)
    assert len(ids) == design.n_corners
    c = corners.reshape(-1, 2)[np.argsort(ids.ravel())]
    step_mm = np.linalg.norm(c[1] - c[0]) / DPI * 25.4
    assert abs(step_mm - design.square_mm) < 0.2


def test_markers_bad_dpi_is_exit_2(tmp_path, capsys):
    assert main(["markers", "-o", str(tmp_path / "x"), "--dpi", "10"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
