"""The handpiece's silhouette covers every pixel the rendered handpiece draws; the pose predictor extrapolates."""

import cv2
import numpy as np
import pytest

from guidance.sim.render import SceneRenderer, handpiece_item, pose_with_tip_at
from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.vision.handpiece.silhouette import HandpiecePose, PosePredictor, Silhouette

CAM = CameraModel.default(640, 480)


@pytest.mark.parametrize("tip,axis", [((0, 0, 400), (0.3, 0.1, 1.0)), ((40, -30, 350), (-0.6, 0.2, 1.0)),
                                      ((-60, 50, 450), (0.1, -0.7, 1.0)), ((0, 0, 300), (0.9, 0.0, 0.5))])
def test_every_rendered_handpiece_pixel_is_inside_the_silhouette(tip, axis):
    profile = load_handpiece_profile("handpiece_default")
    pose = pose_with_tip_at(profile, np.array(tip, float), np.array(axis, float), roll_rad=0.4)
    background = np.full((480, 640, 3), 127, np.uint8)
    image, _ = SceneRenderer(CAM).render(background, [handpiece_item(profile, pose)])
    drawn = np.abs(image.astype(int) - 127).max(2) > 8
    mask = Silhouette(profile, CAM).mask(HandpiecePose(0, pose.R, pose.t_mm), (640, 480), pad_px=4.0) > 0
    assert drawn.sum() > 500
    assert (drawn & ~mask).sum() == 0
    # and it is not a blanket: the padded silhouette is at most a few times the drawn area
    assert mask.sum() < 4 * drawn.sum()


def test_the_tip_is_where_the_profile_puts_it():
    profile = load_handpiece_profile("handpiece_default")
    pose = pose_with_tip_at(profile, np.array([20.0, -10.0, 380.0]), np.array([0.2, 0.3, 1.0]))
    x, y = Silhouette(profile, CAM).tip_px(HandpiecePose(0, pose.R, pose.t_mm))
    fx, cx, cy = CAM.K[0, 0], CAM.K[0, 2], CAM.K[1, 2]
    assert (x, y) == pytest.approx((fx * 20 / 380 + cx, fx * -10 / 380 + cy), abs=1e-6)


def test_the_pose_predictor_extrapolates_constant_motion_and_forgets_a_gap():
    p = PosePredictor()
    assert p.predict(0) is None
    R = cv2.Rodrigues(np.array([0.0, 0.1, 0.0]))[0]
    p.observe(HandpiecePose(0, np.eye(3), np.array([0.0, 0.0, 400.0])))
    p.observe(HandpiecePose(33_000_000, R, np.array([2.0, 1.0, 400.0])))
    q = p.predict(66_000_000)
    assert q.t_mm == pytest.approx([4.0, 2.0, 400.0])
    assert cv2.Rodrigues(q.R)[0].ravel() == pytest.approx([0.0, 0.2, 0.0], abs=1e-9)
    assert p.predict(66_000_000 + 200_000_000) is None  # too long since the last pose
    p.observe(None)
    assert p.predict(70_000_000) is None
