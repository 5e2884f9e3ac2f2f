"""Camera calibration on rendered ChArUco views and pivot calibration on rendered pivot motion, via the CLI."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from guidance.resources import verified_path
from guidance.cli import main
from guidance.vision.capture.camera import CameraModel, load_camera
from guidance.vision.handpiece.designs import CharucoDesign
from guidance.vision.handpiece.pivot import pivot_calibrate
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.sim.render import SceneRenderer, handpiece_item, pose_with_tip_at, video_frames
from guidance.vision.rigid import RigidPose

PROFILE = "handpiece_default"
TRUE_CAM = CameraModel(np.array([[700.0, 0, 316.0], [0, 702.0, 245.0], [0, 0, 1]]),
                       np.array([-0.1, 0.05, 0.0, 0.0, 0.0]), (640, 480), True)


@pytest.fixture(scope="module")
def backgrounds(sample):
    return video_frames(str(sample("single_face.mp4")), (640, 480), limit=60)


def test_camera_calibration_recovers_focal_length(tmp_path, backgrounds, capsys):
    design = CharucoDesign()
    bw, bh = design.size_mm
    r = SceneRenderer(TRUE_CAM)
    rng = np.random.default_rng(0)
    folder = tmp_path / "views"
    folder.mkdir()
    for k in range(24):
        R = cv2.Rodrigues(np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.3)]))[0]
        c = np.array([rng.uniform(-60, 60), rng.uniform(-40, 40), rng.uniform(450, 700)])
        img, _ = r.render_charuco(backgrounds[k], design, RigidPose(R, c - R @ np.array([bw / 2, bh / 2, 0])),
                                  noise_sigma=1.5, rng=rng)
        cv2.imwrite(str(folder / f"v{k:02d}.png"), img)
    for k in range(3):  # frames without a board are rejected, not fatal
        cv2.imwrite(str(folder / f"w{k}.png"), backgrounds[30 + k])
    out = tmp_path / "cam.yaml"
    assert main(["calibrate", "camera", "--source", str(folder), "-o", str(out)]) == 0
    cam = load_camera(out)
    assert cam.calibrated and cam.size == (640, 480)
    assert abs(cam.fx - 700.0) / 700.0 < 0.01
    assert abs(cam.fy - 702.0) / 702.0 < 0.01
    assert cam.rms_px < 0.5
    assert "board not found" in capsys.readouterr().err


def test_camera_calibration_without_board_refuses(tmp_path, backgrounds, capsys):
    folder = tmp_path / "faces"
    folder.mkdir()
    for k in range(5):
        cv2.imwrite(str(folder / f"f{k}.png"), backgrounds[k])
    out = tmp_path / "cam.yaml"
    assert main(["calibrate", "camera", "--source", str(folder), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "usable ChArUco views" in err[0]
    assert not out.exists()


def _pivot_frames(folder, backgrounds, profile, cam, *, slip_frames=(), wander_mm=0.0, seed=0, n=50):
    rng = np.random.default_rng(seed)
    r = SceneRenderer(cam)
    folder.mkdir()
    dimple = np.array([15.0, 10.0, 380.0])
    for k in range(n):
        az = 2 * np.pi * k / n * 2
        tilt = np.radians(45 + 22 * np.sin(az))
        spin = np.radians(25 * np.cos(az))
        axis = np.array([np.sin(tilt) * np.cos(spin + 0.6), np.sin(tilt) * np.sin(spin + 0.6), np.cos(tilt)])
        tip = dimple + (np.array([8.0, -6.0, 0.0]) if k in slip_frames else 0) + rng.normal(0, wander_mm, 3)
        pose = pose_with_tip_at(profile, tip, axis, roll_rad=0.3 * k)
        img, _ = r.render(backgrounds[k % len(backgrounds)], [handpiece_item(profile, pose)], noise_sigma=1.5, rng=rng)
        cv2.imwrite(str(folder / f"p{k:03d}.png"), img)


def _profile_with_tip(tmp_path, tip):
    data = yaml.safe_load(open(verified_path(PROFILE, kind="profiles")))
    data["tip_offset_mm"] = tip
    path = tmp_path / "hp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_pivot_calibration_recovers_tip_offset(tmp_path, backgrounds, capsys):
    truth = load_handpiece_profile(PROFILE)
    cam_path = tmp_path / "cam.yaml"
    TRUE_CAM.save(cam_path)
    # slipped frames where two or more markers face the camera (only those poses go into the pivot solve)
    _pivot_frames(tmp_path / "pivot", backgrounds, truth, TRUE_CAM, slip_frames={8, 19, 34})
    prof = _profile_with_tip(tmp_path, [0.0, 0.0, 40.0])  # a wrong guess: the calibration must not depend on it
    rc = main(["calibrate", "handpiece", "--source", str(tmp_path / "pivot"), "--profile", str(prof),
               "--camera-calibration", str(cam_path)])
    assert rc == 0, capsys.readouterr().err
    out = load_handpiece_profile(prof)
    err = np.linalg.norm(out.tip_offset_mm - truth.tip_offset_mm)
    print(f"\npivot tip offset error {err:.3f} mm, {out.raw['pivot_calibration']}")
    assert err < 1.0
    assert out.raw["pivot_calibration"]["rms_mm"] < 1.5
    assert out.raw["pivot_calibration"]["poses_rejected"] >= 3  # the slipped frames


def test_pivot_calibration_refuses_when_tip_wanders(tmp_path, backgrounds, capsys):
    truth = load_handpiece_profile(PROFILE)
    cam_path = tmp_path / "cam.yaml"
    TRUE_CAM.save(cam_path)
    _pivot_frames(tmp_path / "pivot", backgrounds, truth, TRUE_CAM, wander_mm=3.0, seed=1, n=30)
    prof = _profile_with_tip(tmp_path, [0.0, 0.0, 40.0])
    before = prof.read_text()
    rc = main(["calibrate", "handpiece", "--source", str(tmp_path / "pivot"), "--profile", str(prof),
               "--camera-calibration", str(cam_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "refused" in err[0] and "mm" in err[0]
    assert prof.read_text() == before


def test_pivot_solver_needs_rotation():
    """Pure translation (no tilt about the tip) cannot determine the offset: refused, with that reason."""
    poses = [RigidPose(np.eye(3), np.array([0.0, 0.0, 400.0]) + 0.01 * k) for k in range(30)]
    res = pivot_calibrate(poses)
    assert not res.ok and "degrees" in res.reason
