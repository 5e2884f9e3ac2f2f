"""The face mapping's uncertainty: larger where the memory could not fill, with motion, on a smaller face."""

import numpy as np

from guidance.vision.face.head_pose import load_canonical_face
from guidance.vision.face.mapping_sigma import EYE_CORNERS, MappingSigmaModel

CANON = load_canonical_face()
EYE_MM = float(np.linalg.norm(CANON[EYE_CORNERS[0], :2] - CANON[EYE_CORNERS[1], :2]))


def face(px_per_mm: float, shift=(0.0, 0.0)) -> np.ndarray:
    lm = CANON.copy() * px_per_mm
    lm[:, 0] += 320 + shift[0]
    lm[:, 1] += 240 + shift[1]
    return lm


def test_the_base_sigma_is_the_model_noise_at_the_face_scale():
    m = MappingSigmaModel()
    assert np.isclose(m.sigma_mm(face(2.0), None, EYE_MM, covered=True, filled=True), m.base_px / 2.0)
    # a face half the size in the image: each landmark pixel is twice the millimetres
    assert np.isclose(m.sigma_mm(face(1.0), None, EYE_MM, True, True), 2 * m.sigma_mm(face(2.0), None, EYE_MM, True, True))


def test_an_unfilled_covered_tip_and_face_motion_raise_it():
    m = MappingSigmaModel()
    base = m.sigma_mm(face(2.0), None, EYE_MM, True, True)
    unfilled = m.sigma_mm(face(2.0), None, EYE_MM, True, False)
    moving = m.sigma_mm(face(2.0), face(2.0, (4.0, 0.0)), EYE_MM, True, True)
    assert unfilled > base and moving > base
    assert np.isclose(unfilled, np.hypot(m.base_px, m.covered_px) / 2.0)
    assert m.sigma_mm(None, None, EYE_MM, True, True) is None
