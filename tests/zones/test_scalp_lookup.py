"""The scalp lookup on the head band's head pose: exact on the model's own geometry, fail-closed off it."""

import cv2
import numpy as np
import pytest

from guidance.sim.scalp import scalp_point
from guidance.sim.scalp_session import chart_error_mm
from guidance.vision.capture.camera import CameraModel
from guidance.vision.rigid import RigidPose
from guidance.zones.atlas import OFF_SURFACE
from guidance.zones.mapper import ZoneMapper

CAM = CameraModel.default(640, 480)


@pytest.fixture(scope="module")
def mapper():
    return ZoneMapper()


def _head(yaw_deg: float, tilt_back_deg: float = 0.0) -> RigidPose:
    yaw = cv2.Rodrigues(np.array([0.0, np.radians(yaw_deg), 0.0]))[0]
    R = yaw @ cv2.Rodrigues(np.array([np.radians(-tilt_back_deg), 0.0, 0.0]))[0]
    c = np.array([0.0, -20.0, 76.9])
    return RigidPose(R, np.array([0.0, 30.0, 520.0]) - R @ c)


def _pixel(head: RigidPose, p_head: np.ndarray) -> tuple[float, float]:
    px, _ = cv2.projectPoints(head.apply(p_head[None, :]), np.zeros(3), np.zeros(3), CAM.K, CAM.dist)
    return float(px[0, 0, 0]), float(px[0, 0, 1])


@pytest.mark.parametrize("yaw,tilt,theta_deg,phi_deg", [(0, 0, 0, 40), (0, 0, 30, 60), (90, 10, 90, 50),
                                                     (180, 25, 180, 65), (180, 25, 160, 58), (180, 25, 200, 62),
                                                     (-120, 20, -120, 70)])
def test_a_scalp_point_seen_by_the_camera_maps_to_its_own_chart_point(mapper, yaw, tilt, theta_deg, phi_deg):
    sc = mapper.chart.surfaces["scalp"]
    head = _head(yaw, tilt)
    p, n, uv = scalp_point(np.radians(theta_deg), np.radians(phi_deg), sc)
    assert head.R @ n @ head.apply(p[None, :])[0] < 0  # facing the camera
    z, cos = mapper.locate_on_band(head.R, head.t_mm, *_pixel(head, p), CAM)
    expected, d = mapper.atlas.zone_at(*uv)
    assert expected is not None and expected.surface == "scalp"
    assert z.surface == "scalp" and z.zone == expected.name and z.kind == "treat"
    assert chart_error_mm(z.chart_mm, uv, sc) < 0.05  # on the skin: points either side of the seam are one
    assert z.boundary_mm == pytest.approx(d, abs=0.6)  # one atlas cell
    assert 0.0 < cos <= 1.0


def test_the_back_of_the_head_below_the_crown_is_off_surface(mapper):
    """Below the planned crown at the back the atlas has no zone: off-surface, so the gate denies."""
    sc = mapper.chart.surfaces["scalp"]
    head = _head(180, 20)
    p, _, uv = scalp_point(np.pi, np.radians(30), sc)
    assert mapper.atlas.zone_at(*uv)[0] is None
    z, cos = mapper.locate_on_band(head.R, head.t_mm, *_pixel(head, p), CAM)
    assert z.zone == OFF_SURFACE and z.kind == OFF_SURFACE and z.chart_mm is None and np.isnan(cos)


def test_the_face_is_never_scalp(mapper):
    """A ray through the face (nose tip) meets the scalp ellipsoid where the face mesh is: not scalp."""
    from guidance.vision.face.head_pose import load_canonical_face
    head = _head(0)
    nose = load_canonical_face()[1]
    z, _ = mapper.locate_on_band(head.R, head.t_mm, *_pixel(head, nose), CAM)
    assert z.surface != "scalp" and z.kind == OFF_SURFACE
    miss, _ = mapper.locate_on_band(head.R, head.t_mm, 5.0, 5.0, CAM)  # the image corner: no head there
    assert miss.kind == OFF_SURFACE


def test_scalp_points_invert_the_scalp_chart(mapper):
    """The overlay's way from chart to head (surfaces.scalp_points) is the chart's own inverse, normals outward."""
    from guidance.zones.surfaces import scalp_chart, scalp_points

    sc = mapper.chart.surfaces["scalp"]
    rng = np.random.default_rng(3)
    thetas, phis = rng.uniform(-3.0, 3.0, 50), rng.uniform(0.05, 1.3, 50)
    truth = [scalp_point(t, f, sc) for t, f in zip(thetas, phis)]
    uv = np.array([u for _, _, u in truth])
    pts, normals = scalp_points(uv, sc)
    assert np.allclose(pts, np.array([p for p, _, _ in truth]), atol=1e-6)
    assert np.allclose(normals, np.array([n for _, n, _ in truth]), atol=1e-6)
    assert np.allclose([scalp_chart(p, sc) for p in pts], uv, atol=1e-6)
