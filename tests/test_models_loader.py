import shutil

import pytest

from guidance.errors import ModelIntegrityError
from guidance.vision.face_landmarks import LANDMARK_MODEL
from guidance.vision.models import load_model, models_dir, read_manifest


def test_every_manifest_model_loads_and_verifies():
    manifest = read_manifest()
    assert {"face_detection_short_range", "face_landmark"} <= set(manifest["models"])
    for name in manifest["models"]:
        assert load_model(name).get_inputs()


@pytest.fixture
def model_copy(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(models_dir() / "MANIFEST.json", d)
    shutil.copy(models_dir() / "face_landmark.onnx", d)
    return d


def test_an_altered_model_is_refused_naming_the_file(model_copy):
    f = model_copy / "face_landmark.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="face_landmark.onnx.*sha256 mismatch"):
        load_model("face_landmark", model_copy)


def test_a_missing_model_is_refused_naming_the_file(model_copy):
    (model_copy / "face_landmark.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="face_landmark.onnx.*missing"):
        load_model("face_landmark", model_copy)


def test_the_cli_reports_a_tampered_model_in_one_line(model_copy, tmp_path, sample):
    import subprocess, sys, os
    shutil.copy(models_dir() / "face_detection_short_range.onnx", model_copy)
    shutil.copy(models_dir() / "face_mesh_topology.json", model_copy)
    shutil.copy(models_dir() / "canonical_face.json", model_copy)
    # the tracker's landmark model (the tuned one, by default) is the one tampered with
    (model_copy / f"{LANDMARK_MODEL}.onnx").write_bytes(b"garbage")
    env = dict(os.environ, GUIDANCE_MODELS=str(model_copy))
    r = subprocess.run([sys.executable, "-m", "guidance.cli", "landmarks", str(sample("single_face.mp4")), "-o", str(tmp_path / "x.npy")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert f"{LANDMARK_MODEL}.onnx: sha256 mismatch" in r.stderr and r.stderr.count("\n") == 1
