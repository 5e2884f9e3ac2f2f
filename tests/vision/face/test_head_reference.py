"""Head band: registered to the face's head frame while the face is seen, then carries the head pose alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.head_band import (BAND_MOVED, NO_HEAD, NOT_REGISTERED, HeadPoseSample,
                                            HeadReferenceTracker)
from guidance.vision.handpiece.profiles import load_head_band
from guidance.sim.render import SceneItem, SceneRenderer, video_frames
from guidance.vision.rigid import RigidPose, rotation_angle_deg

CAM = CameraModel(np.array([[610.0, 0, 321.0], [0, 610.0, 239.0], [0, 0, 1]]), np.zeros(5), (640, 480), True)
# Where the band sits on the head: 85 mm above the head origin, 25 mm back, pitched 8 degrees.
BAND_ON_HEAD = RigidPose(cv2.Rodrigues(np.array([np.radians(8), 0, 0]))[0], np.array([0.0, 85.0, -25.0]))
FACING = np.diag([1.0, -1.0, -1.0])  # head x -> camera x, head up -> camera up, face towards the camera


def head_pose(yaw_deg: float, t=(10.0, 30.0, 650.0)) -> RigidPose:
    return RigidPose(FACING @ cv2.Rodrigues(np.array([0, np.radians(yaw_deg), 0]))[0], np.array(t))


@pytest.fixture(scope="module")
def band():
    return load_head_band("head_band_default")


@pytest.fixture(scope="module")
def backgrounds(sample):
    return video_frames(str(sample("WolfgangLanger_Pexels.mp4")), (640, 480), limit=40)


def _frame(renderer, band, bg, head: RigidPose, rng):
    band_pose = head.compose(BAND_ON_HEAD)
    plate = {i: 36.0 for i in band.ids}
    img, _ = renderer.render(bg, [SceneItem(band, band_pose, plate)], noise_sigma=1.5, rng=rng)
    return img


def test_band_holds_head_pose_when_face_turns_away(band, backgrounds):
    rng = np.random.default_rng(2)
    r = SceneRenderer(CAM)
    tr = HeadReferenceTracker(band, CAM)
    t = 1_000_000_000
    # Face visible, small head motion: the tracker registers band -> head from noisy face poses.
    for k in range(20):
        head = head_pose(-10 + k, (10.0 + k, 30.0, 650.0))
        face = HeadPoseSample(head.R @ cv2.Rodrigues(rng.normal(0, np.radians(1.0), 3))[0],
                              head.t_mm + rng.normal(0, 2.0, 3), t)
        obs = tr.process(_frame(r, band, backgrounds[k], head, rng), t, face)
        assert obs.valid and obs.source == "face"
        t += 33_000_000
    assert tr.registration.result.registered
    # Face turned away (no face pose): the band gives the head pose.
    errs_mm, errs_deg = [], []
    for k, yaw in enumerate(range(20, 181, 10)):
        head = head_pose(yaw)
        obs = tr.process(_frame(r, band, backgrounds[20 + k % 20], head, rng), t, None)
        t += 33_000_000
        assert obs.valid, obs.reason
        assert obs.source == "band"
        errs_mm.append(np.linalg.norm(obs.t_mm - head.t_mm))
        errs_deg.append(rotation_angle_deg(obs.R, head.R))
    print(f"\nhead from band: median {np.median(errs_mm):.2f} mm, max {max(errs_mm):.2f} mm, "
          f"max {max(errs_deg):.2f} deg")
    assert np.median(errs_mm) < 3.0 and max(errs_mm) < 6.0
    assert max(errs_deg) < 2.0


def test_unregistered_band_and_no_face_is_no_head_pose(band, backgrounds):
    rng = np.random.default_rng(3)
    r = SceneRenderer(CAM)
    tr = HeadReferenceTracker(band, CAM)
    obs = tr.process(_frame(r, band, backgrounds[0], head_pose(90), rng), 5, None)
    assert obs.band_valid and not obs.valid and obs.reason.startswith(NOT_REGISTERED) and obs.R is None
    obs = tr.process(backgrounds[1], 40_000_005, None)
    assert not obs.valid and obs.reason == NO_HEAD


def test_band_moved_on_head_is_detected(band, backgrounds):
    rng = np.random.default_rng(4)
    r = SceneRenderer(CAM)
    tr = HeadReferenceTracker(band, CAM)
    t = 1
    for k in range(16):
        head = head_pose(0)
        tr.process(_frame(r, band, backgrounds[k], head, rng), t, HeadPoseSample(head.R, head.t_mm, t))
        t += 33_000_000
    assert tr.registration.result.registered
    # The band slides 15 mm: the face and the band now disagree, so the band is no longer trusted.
    slid = RigidPose(np.eye(3), np.array([0.0, 15.0, 0.0]))
    head = head_pose(0)
    img = _frame(r, band, backgrounds[17], head.compose(slid), rng)
    obs = tr.process(img, t, HeadPoseSample(head.R, head.t_mm, t))
    assert obs.face_band_disagreement_mm > 8.0
    assert not tr.registration.result.registered
    obs = tr.process(_frame(r, band, backgrounds[18], head_pose(120).compose(slid), rng), t + 33_000_000, None)
    assert not obs.valid and obs.reason == BAND_MOVED
