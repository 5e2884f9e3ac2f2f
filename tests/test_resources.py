"""Bundled files: every one is listed in the one manifest and refused when altered, naming the file."""

import os
import shutil
import subprocess
import sys

import pytest

from guidance.errors import ModelIntegrityError, UserError
from guidance.resources import SECTIONS, data_dir, read_manifest, sha256_file, user_or_bundled, verified_path
from guidance.vision.face.landmarks import LANDMARK_MODEL
from guidance.vision.models import load_model


def test_every_manifest_model_loads_and_verifies():
    manifest = read_manifest()
    assert {"face_detection_short_range", "face_landmark"} <= set(manifest["models"])
    for name in manifest["models"]:
        assert load_model(name).get_inputs()


def test_every_bundled_file_is_in_the_manifest_and_matches():
    """Nothing under guidance/data escapes the manifest, and every entry verifies."""
    manifest = read_manifest()
    listed = set()
    for kind in SECTIONS:
        for name, entry in manifest[kind].items():
            assert verified_path(name, kind=kind).is_file()
            listed.add(entry["file"])
    on_disk = {str(p.relative_to(data_dir())) for p in data_dir().rglob("*") if p.is_file() and p.name != "MANIFEST.json"}
    assert on_disk == listed
    assert {"atlas", "face_chart"} <= set(manifest["zones"])
    assert {"full_face", "neck_decolletage", "scalp"} <= set(manifest["plans"])


@pytest.fixture
def data_copy(tmp_path):
    d = tmp_path / "data"
    shutil.copytree(data_dir(), d)
    return d


def test_an_altered_model_is_refused_naming_the_file(data_copy):
    f = data_copy / "models" / "face_landmark.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="face_landmark.onnx.*sha256 mismatch"):
        load_model("face_landmark", data_copy)


def test_a_missing_model_is_refused_naming_the_file(data_copy):
    (data_copy / "models" / "face_landmark.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="face_landmark.onnx.*missing"):
        load_model("face_landmark", data_copy)


@pytest.mark.parametrize("kind,name", [("zones", "atlas"), ("zones", "face_chart"), ("plans", "full_face")])
def test_an_altered_atlas_chart_or_plan_is_refused(data_copy, kind, name):
    f = data_copy / read_manifest(data_copy)[kind][name]["file"]
    f.write_bytes(f.read_bytes().replace(b"1", b"2", 1))
    with pytest.raises(ModelIntegrityError, match=rf"{f.name}.*sha256 mismatch"):
        verified_path(name, data_copy, kind=kind)


def test_bundled_plans_are_found_by_name_and_user_files_win(tmp_path, monkeypatch):
    assert user_or_bundled("full_face", "plans", what="plan") == verified_path("full_face", kind="plans")
    assert user_or_bundled("full_face.yaml", "plans", what="plan").name == "full_face.yaml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "full_face.yaml").write_text("mine")
    assert user_or_bundled("full_face.yaml", "plans", what="plan") == tmp_path.joinpath("full_face.yaml").relative_to(tmp_path)
    with pytest.raises(UserError, match="nope.yaml: plan not found.*full_face"):
        user_or_bundled("nope.yaml", "plans", what="plan")


def test_the_cli_reports_a_tampered_model_in_one_line(data_copy, tmp_path, sample):
    # the tracker's landmark model (the tuned one, by default) is the one tampered with
    (data_copy / "models" / f"{LANDMARK_MODEL}.onnx").write_bytes(b"garbage")
    env = dict(os.environ, GUIDANCE_DATA=str(data_copy))
    r = subprocess.run([sys.executable, "-m", "guidance.cli", "landmarks", str(sample("single_face.mp4")), "-o", str(tmp_path / "x.npy")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert f"{LANDMARK_MODEL}.onnx: sha256 mismatch" in r.stderr and r.stderr.count("\n") == 1


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib
    f = tmp_path / "x"
    f.write_bytes(b"abc" * 1000)
    assert sha256_file(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
