"""Handpiece profile validation and the `guidance tip` command: user errors are one line and exit 2."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import yaml

from guidance.resources import verified_path
from guidance.cli import main
from guidance.errors import UserError
from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.designs import ClipDesign
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.sim.render import SceneRenderer, handpiece_item, sample_tip_pose, video_frames
from guidance.vision.handpiece.tip_csv import COLUMNS

PROFILE = "handpiece_default"


def test_default_profile_is_the_clip_design():
    p = load_handpiece_profile(PROFILE)
    body = ClipDesign().body()
    assert p.body.ids == body.ids
    for i in body.ids:
        np.testing.assert_allclose(p.body.corners_mm[i], body.corners_mm[i], atol=1e-3)
    np.testing.assert_allclose(p.tip_offset_mm, [0, 0, ClipDesign().tip_z_mm])


def _broken(tmp_path, edit):
    data = yaml.safe_load(open(verified_path(PROFILE, kind="profiles")))
    edit(data)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.pop("tip_offset_mm"), "tip_offset_mm"),
    (lambda d: d.__setitem__("tip_offset_mm", [0, 0]), "tip_offset_mm"),
    (lambda d: d.__setitem__("electrode_diameter_mm", "ten"), "electrode_diameter_mm"),
    (lambda d: d["markers"][1].__setitem__("size_mm", 25.0), "markers.1.corners_mm"),
    (lambda d: d["markers"][2].__setitem__("id", 0), "markers.2.id"),
    (lambda d: d["markers"][0]["corners_mm"][2].__setitem__(2, 5.0), "markers.0.corners_mm"),
    (lambda d: d.__setitem__("kind", "head_band"), "kind"),
    (lambda d: d.__setitem__("dictionary", "DICT_NOPE"), "dictionary"),
    (lambda d: d.__setitem__("colour", "red"), "colour"),
])
def test_bad_profile_names_the_field(tmp_path, edit, field):
    path = _broken(tmp_path, edit)
    with pytest.raises(UserError) as exc:
        load_handpiece_profile(path)
    assert exc.value.field == field
    assert str(path) in str(exc.value)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    for p in (bad, tmp_path / "missing.yaml"):
        with pytest.raises(UserError):
            load_handpiece_profile(p)


def test_tip_command_bad_profile_is_one_line_exit_2(tmp_path, capsys, sample):
    path = _broken(tmp_path, lambda d: d.pop("markers"))
    out = tmp_path / "tips.csv"
    rc = main(["tip", str(sample("single_face.mp4")), "--handpiece", str(path), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "markers" in err[0]
    assert not out.exists()


def test_tip_command_unreadable_video_is_exit_2(tmp_path, capsys):
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"not a video at all")
    out = tmp_path / "tips.csv"
    rc = main(["tip", str(video), "--handpiece", PROFILE, "-o", str(out)])
    assert rc == 2 and not out.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_tip_command_csv_matches_ground_truth(tmp_path, capsys, sample):
    """Rendered frames (lossless PNG) -> CSV: one row per frame, right tips, empty cells plus reason when hidden."""
    cam = CameraModel(np.array([[600.0, 0, 318.0], [0, 600.0, 242.0], [0, 0, 1]]), np.zeros(5), (640, 480), True)
    cam_path = tmp_path / "cam.yaml"
    cam.save(cam_path)
    profile = load_handpiece_profile(PROFILE)
    rng = np.random.default_rng(8)
    r = SceneRenderer(cam)
    frames = tmp_path / "frames"
    frames.mkdir()
    truth = []
    bgs = video_frames(str(sample("single_face.mp4")), (640, 480), limit=12)
    for k in range(12):
        pose = sample_tip_pose(profile, cam, rng)
        img, (gt,) = r.render(bgs[k], [handpiece_item(profile, pose, hide_all=(k == 5))], noise_sigma=1.0, rng=rng)
        cv2.imwrite(str(frames / f"f{k:03d}.png"), img)
        truth.append(gt)
    out = tmp_path / "tips.csv"
    rc = main(["tip", str(frames), "--handpiece", PROFILE, "--camera-calibration", str(cam_path), "-o", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0].keys()) == COLUMNS
    assert [int(r["frame_index"]) for r in rows] == list(range(12))
    t = [int(r["t_capture_ns"]) for r in rows]
    assert all(b > a for a, b in zip(t, t[1:]))
    hidden = rows[5]
    assert hidden["reason"] == "marker_not_seen"
    assert all(hidden[c] == "" for c in ("tip_x_px", "tip_y_px", "tip_x_mm", "tip_y_mm", "tip_z_mm", "speed_mm_s"))
    errs = []
    for row, gt in zip(rows, truth):
        if row["reason"]:
            continue
        assert row["camera_calibrated"] == "1"
        errs.append(np.linalg.norm([float(row["tip_x_mm"]) - gt.tip_mm[0], float(row["tip_y_mm"]) - gt.tip_mm[1],
                                    float(row["tip_z_mm"]) - gt.tip_mm[2]]))
        assert abs(float(row["tip_x_px"]) - gt.tip_px[0]) < 3 and abs(float(row["tip_y_px"]) - gt.tip_px[1]) < 3
    assert len(errs) >= 9 and np.median(errs) < 2.0


def test_tip_command_without_calibration_says_uncalibrated(tmp_path, capsys, sample):
    frames = tmp_path / "frames"
    frames.mkdir()
    for k, img in enumerate(video_frames(str(sample("single_face.mp4")), (640, 480), limit=3)):
        cv2.imwrite(str(frames / f"f{k}.png"), img)
    out = tmp_path / "tips.csv"
    assert main(["tip", str(frames), "--handpiece", PROFILE, "-o", str(out)]) == 0
    assert "uncalibrated" in capsys.readouterr().err
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 3 and all(r["reason"] == "marker_not_seen" and r["camera_calibrated"] == "0" for r in rows)
