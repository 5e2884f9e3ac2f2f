"""The one list of training and evaluation faces: disjoint, pinned, complete, and what the docs say."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from guidance import samples
from guidance.errors import UserError
from guidance.evaluate.face_sets import load_face_sets, training_overlap
from guidance.resources import read_manifest

ROOT = Path(__file__).resolve().parents[2]


def test_the_bundled_face_sets_are_disjoint_and_pinned():
    fs = load_face_sets()
    train, evaluate = {f.name for f in fs.train}, {f.name for f in fs.evaluate}
    assert not train & evaluate
    assert train | evaluate <= set(samples.MEMBERS)
    assert set(fs.evaluation_videos) == set(samples.EVALUATION_FACE_VIDEOS) | {"WolfgangLanger_Pexels.mp4"}
    assert {"single_face.mp4", "face_noface.mov", "noface_face.mov"} <= train  # the demo man, thresholds tuned on him
    assert not set(samples.TWO_FACE_VIDEOS) & (train | evaluate)  # Obama and Biden are training identities
    assert fs.role("/somewhere/vidmag_face_input.mp4") == "evaluate" and fs.role("mine.mp4") is None


def test_every_face_a_model_was_trained_on_is_declared():
    """A new training face must be put in the list; no model is trained on an evaluation face."""
    fs = load_face_sets()
    declared = {f.name for f in fs.train} | {f.name for f in fs.evaluate}
    faces = set(samples.FACE_VIDEOS) | set(samples.TRAINING_FACE_IMAGES) | {
        "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "astronaut.png",
        "multi_face.jpg", "Image_with_alpha.png"}
    for model, entry in read_manifest()["models"].items():
        for src in entry.get("train_sources") or []:
            if src in faces:
                assert src in declared, f"{model} was trained on {src}: list it in face_sets.yaml"
    # face_landmark_occlusion was retrained without WolfgangLanger_Pexels.mp4, the last exception
    assert training_overlap(fs.evaluation_videos) == []


def test_the_docs_say_which_faces_train_and_which_evaluate():
    fs = load_face_sets()
    for doc in ("docs/evaluate.md", "models/README.md"):
        text = (ROOT / doc).read_text()
        for f in fs.evaluate:
            assert f.name in text, f"{doc} does not name the evaluation face {f.name}"
        assert "face_sets.yaml" in text


def test_a_face_in_both_lists_is_refused(tmp_path):
    doc = yaml.safe_load(Path(load_face_sets().source).read_text())
    doc["train"].append(dict(doc["evaluate"][0]))
    p = tmp_path / "face_sets.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match="listed to train and to evaluate"):
        load_face_sets(p)
    doc["train"].pop()
    doc["evaluate"][0]["name"] = "unpinned.mp4"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"evaluate\.0\.name.*not a pinned sample"):
        load_face_sets(p)
