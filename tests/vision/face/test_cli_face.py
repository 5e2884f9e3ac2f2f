"""The face commands end to end, as a user runs them (real subprocesses)."""

import json
import subprocess
import sys

import numpy as np


def guidance(*args, **kw):
    return subprocess.run([sys.executable, "-m", "guidance.cli", *map(str, args)], capture_output=True, text=True, timeout=300, **kw)


def test_landmarks_writes_frames_x_468_x_3_with_nan_for_no_face(tmp_path, sample):
    out = tmp_path / "lm.npy"
    r = guidance("landmarks", sample("noface_face.mov"), "-o", out)
    assert r.returncode == 0, r.stderr
    lm = np.load(out)
    assert lm.dtype == np.float32 and lm.shape == (169, 468, 3)
    assert np.isnan(lm[:96]).all()
    assert np.isfinite(lm[100:160]).all()
    assert 0 < np.nanmedian(lm[100:160, :, 0]) < 960


def test_landmarks_raw_differs_from_smoothed(tmp_path, sample):
    a, b = tmp_path / "s.npy", tmp_path / "r.npy"
    assert guidance("landmarks", sample("single_face.mp4"), "-o", a).returncode == 0
    assert guidance("landmarks", sample("single_face.mp4"), "-o", b, "--raw").returncode == 0
    s, r = np.load(a), np.load(b)
    assert s.shape == r.shape
    assert not np.allclose(s[5:], r[5:])
    # temporal smoothing: less frame-to-frame motion than raw
    assert np.abs(np.diff(s[5:], axis=0)).mean() < np.abs(np.diff(r[5:], axis=0)).mean()


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    r = guidance("landmarks", tmp_path / "missing.mp4", "-o", tmp_path / "x.npy")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "missing.mp4" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.npy").exists()
    bad_cam = tmp_path / "cam.yaml"
    bad_cam.write_text("image_size: [640, 480]\ncamera_matrix: [[1, 0], [0, 1]]\ndist_coeffs: []\n")
    r = guidance("landmarks", tmp_path / "missing.mp4", "-o", tmp_path / "x.npy", "--camera-calibration", bad_cam)
    assert r.returncode == 2 and "camera_matrix" in r.stderr and "cam.yaml" in r.stderr


def test_bench_json_has_the_promised_keys(sample):
    r = guidance("bench", sample("single_face.mp4"), "--stage", "face", "--frames", "60", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for key in ("frames", "fps", "track_ms_median", "track_ms_p99"):
        assert key in d
    assert d["frames"] == 60 and d["faces_found"] == 60
    assert d["frame_size"] == [640, 480]
    assert 0 < d["track_ms_median"] <= d["track_ms_p99"]


def test_bench_marker_and_bridge_stages(sample):
    r = guidance("bench", sample("single_face.mp4"), "--stage", "markers,zones,bridge", "--frames", "60", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["zones"]["face_found"] and 0 < d["zones"]["lookup_median_us"] <= d["zones"]["lookup_p99_us"]
    assert d["markers"]["frames"] == 60 and 0 < d["markers"]["median_ms"] <= d["markers"]["p99_ms"]
    assert d["markers"]["tip_found"] > 30
    assert d["bridge"]["curve"] is True and d["bridge"]["received"] > 0
    assert 0 < d["bridge"]["latency_median_ms"] <= d["bridge"]["latency_p99_ms"]
    r = guidance("bench", sample("single_face.mp4"), "--stage", "nope")
    assert r.returncode == 2


def test_every_command_has_help():
    from guidance.cli import COMMAND_MODULES, build_parser
    r = guidance("--help")
    assert r.returncode == 0
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = list(sub.choices)
    assert len(commands) >= len(COMMAND_MODULES)
    assert "landmarks" in commands and "bench" in commands
    for c in commands:
        h = guidance(c, "--help")
        assert h.returncode == 0 and "usage" in h.stdout, c
