"""The renderer's ground truth is exact and its effects (blur, occlusion, culling) do what they say."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.marker_detect import MarkerDetector
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.sim.render import SceneRenderer, handpiece_item, pose_with_tip_at

CAM = CameraModel(np.array([[600.0, 0, 320.0], [0, 600.0, 240.0], [0, 0, 1]]), np.array([-0.08, 0.03, 0, 0, 0]),
                  (640, 480), True)


@pytest.fixture(scope="module")
def profile():
    return load_handpiece_profile("handpiece_default")


def test_tip_truth_is_the_camera_projection(profile):
    tip = np.array([40.0, -25.0, 420.0])
    pose = pose_with_tip_at(profile, tip, np.array([0.3, 0.4, 0.8]), 0.7)
    _, (gt,) = SceneRenderer(CAM).render(np.zeros((480, 640, 3), np.uint8), [handpiece_item(profile, pose)])
    np.testing.assert_allclose(gt.tip_mm, tip, atol=1e-9)
    px, _ = cv2.projectPoints(tip.reshape(1, 3), np.zeros(3), np.zeros(3), CAM.K, CAM.dist)
    np.testing.assert_allclose(gt.tip_px, px.reshape(2), atol=1e-9)


def test_culling_and_visibility(profile):
    """Plates facing away are neither drawn nor listed; a hidden clip lists nothing."""
    pose = pose_with_tip_at(profile, np.array([0.0, 0.0, 400.0]), np.array([1.0, 0.0, 0.4]), 0.0)
    r = SceneRenderer(CAM)
    _, (gt,) = r.render(np.zeros((480, 640, 3), np.uint8), [handpiece_item(profile, pose)])
    facing = {i for i in profile.body.ids if np.dot(pose.R @ profile.body.normal(i), -pose.apply(profile.body.centre_mm(i))) > 0}
    assert set(gt.visible_ids) == facing and 0 < len(facing) < 4
    img, (gt,) = r.render(np.zeros((480, 640, 3), np.uint8), [handpiece_item(profile, pose, hide_all=True)])
    assert gt.visible_ids == []
    assert MarkerDetector(profile.body.dictionary).detect(img).corners_px == {}


def test_motion_blur_smears_edges(profile):
    pose = pose_with_tip_at(profile, np.array([0.0, 0.0, 350.0]), np.array([0.6, 0.2, 0.7]), 0.2)
    r = SceneRenderer(CAM)
    bg = np.full((480, 640, 3), 128, np.uint8)
    sharp, _ = r.render(bg, [handpiece_item(profile, pose)])
    blurred, _ = r.render(bg, [handpiece_item(profile, pose, linear_velocity_mm_s=np.array([400.0, 0, 0]))],
                          exposure_s=0.02, blur_samples=7)
    def grad(im):
        return float(np.abs(cv2.Sobel(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_32F, 1, 0)).max())
    assert grad(blurred) < 0.7 * grad(sharp)


def test_wrong_background_size_is_an_error(profile):
    pose = pose_with_tip_at(profile, np.array([0.0, 0.0, 400.0]), np.array([0.0, 0.5, 0.8]))
    with pytest.raises(ValueError):
        SceneRenderer(CAM).render(np.zeros((360, 640, 3), np.uint8), [handpiece_item(profile, pose)])


def test_blur_samples_follow_the_turn_as_well_as_the_slide():
    """A fast wrist turn must smear the markers (enough poses over the exposure), not print them twice."""
    from guidance.sim.render import blur_samples
    prof = load_handpiece_profile("handpiece_default")
    still = blur_samples(prof, 400.0, 640.0, 0.012, np.zeros(3), np.zeros(3))
    slide = blur_samples(prof, 400.0, 640.0, 0.012, np.array([100.0, 0, 0]), np.zeros(3))
    turn = blur_samples(prof, 400.0, 640.0, 0.012, np.array([100.0, 0, 0]), np.array([0, 0, np.radians(300)]))
    assert still == 1 and 1 < slide < turn <= 12
    # the slide alone: 100 mm/s at 400 mm with f = 640 px over 12 ms is 1.92 px, so 2 steps of <= 1.5 px
    assert slide == 3
    lever = np.max(np.linalg.norm(np.concatenate(list(prof.body.corners_mm.values())) - prof.tip_offset_mm, axis=1))
    path_px = (100.0 + np.radians(300) * lever) * 640.0 / 400.0 * 0.012
    assert path_px / (turn - 1) <= 1.5
