import numpy as np
import pytest

from guidance.pipeline import gate_confidence
from guidance.vision.handpiece.tracker import TipObservation
from guidance.vision.handpiece.marker_pose import lateral_sigma_mm


def test_depth_uncertainty_does_not_count_as_lateral():
    point = np.array([0.0, 0.0, 400.0])  # straight ahead: the line of sight is z
    along_ray = np.diag([0.01, 0.01, 25.0])  # 5 mm in depth, 0.1 mm across
    assert lateral_sigma_mm(along_ray, point) == pytest.approx(np.sqrt(0.02), rel=1e-6)
    iso = np.eye(3) * 4.0  # 2 mm in every direction: 2 * sqrt(2) across
    assert lateral_sigma_mm(iso, point) == pytest.approx(np.sqrt(8.0))
    oblique = np.array([300.0, 0.0, 400.0])  # the ray is tilted: depth noise along z now shows across it
    assert lateral_sigma_mm(along_ray, oblique) > 2.0
    assert lateral_sigma_mm(None, point) == float("inf")


def _tip(valid=True, lateral=1.0):
    return TipObservation(0, 0, valid, "" if valid else "marker_not_seen", (1.0, 2.0) if valid else None,
                          (0.0, 0.0, 400.0) if valid else None, None, None, 0.1, 5.0, 0.2, (0,), None, None, False, 0,
                          lateral if valid else None)


def test_the_gate_confidence_comes_from_the_lateral_sigma():
    assert gate_confidence(_tip(lateral=1.5)) == pytest.approx(0.5)
    assert gate_confidence(_tip(lateral=0.5)) > 0.85
    assert gate_confidence(_tip(valid=False)) == 0.0
    assert gate_confidence(_tip(lateral=float("nan"))) == 0.0
    assert gate_confidence(None) == 0.0
