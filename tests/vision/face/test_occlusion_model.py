"""The tracker's landmark model, fine-tuned against handpiece occlusion (models/distill_face_landmark.py).

It must be mediapipe's graph with other weights, answer like mediapipe's model
on a clean face, and, with the handpiece rendered in front of a face it never
saw in training (single_face.mp4, the demo's face), answer closer to what
mediapipe's model says on the same frame without the handpiece. Where there is
no face, it must say so as mediapipe's model does: the tracker lets go of a
face through this output, and the gate denies when the face is gone.
"""

import numpy as np
import pytest

from guidance import samples
from models import nonface_crops
from occlusion_pairs import HELD_OUT_VIDEO, TRAIN_IMAGES, TRAIN_VIDEOS, PairMaker, teacher_answer, video_frames
from guidance.vision.face.landmarks import OCCLUSION_LANDMARK_MODEL as LANDMARK_MODEL, ORIGINAL_LANDMARK_MODEL, FaceLandmarker
from guidance.vision.face.tracker import TrackerConfig
from guidance.resources import read_manifest
from guidance.vision.models import load_model


def test_the_tracker_uses_the_tuned_model_and_the_manifest_says_where_it_came_from():
    assert TrackerConfig().landmark_model == LANDMARK_MODEL != ORIGINAL_LANDMARK_MODEL
    models = read_manifest()["models"]
    entry = models[LANDMARK_MODEL]
    assert entry["derived_from"] == ORIGINAL_LANDMARK_MODEL
    assert entry["derived_from_sha256"] == models[ORIGINAL_LANDMARK_MODEL]["sha256"]
    assert entry["script"] == "models/distill_face_landmark.py"
    # the acceptance face is held out of training
    assert HELD_OUT_VIDEO not in entry["train_sources"] and HELD_OUT_VIDEO not in TRAIN_VIDEOS + TRAIN_IMAGES
    assert "single_face.jpg" not in entry["train_sources"]
    # the no-face test videos and the landscape are held out of the non-face crops
    held_out = {"no_face.mp4", "face_noface.mov", "noface_face.mov", nonface_crops.HELD_OUT_IMAGE, HELD_OUT_VIDEO}
    assert not held_out & set(entry["nonface_sources"])
    assert not held_out & set(samples.NON_FACE_IMAGES + TRAIN_VIDEOS + TRAIN_IMAGES)
    assert set(entry["nonface_val_sources"]) == {nonface_crops.HELD_OUT_VIDEO, nonface_crops.HELD_OUT_IMAGE}


def test_same_graph_inputs_and_outputs_as_the_original():
    tuned, original = load_model(LANDMARK_MODEL), load_model(ORIGINAL_LANDMARK_MODEL)
    sig = lambda s: ([(i.name, i.shape) for i in s.get_inputs()], [(o.name, o.shape) for o in s.get_outputs()])  # noqa: E731
    assert sig(tuned) == sig(original)


@pytest.fixture(scope="module")
def held_out_pairs():
    maker = PairMaker(np.random.default_rng(5))
    frames = video_frames(HELD_OUT_VIDEO, 6)  # every 6th frame of the held-out face
    pairs = [p for f in frames for p in maker.pairs(f, 2)]
    assert len(pairs) >= 16
    teacher = np.stack([maker.teacher(c)[0] for c, _ in pairs]).reshape(len(pairs), -1, 3)
    return pairs, teacher


def _error_px(model: str, crops: list[np.ndarray], teacher: np.ndarray) -> float:
    lm = FaceLandmarker(model=model)
    got = []
    for c in crops:
        tensor = (c[..., ::-1].astype(np.float32) / 255.0)[None]
        got.append(lm.infer(np.ascontiguousarray(tensor))[0])
    return float(np.mean(np.linalg.norm(np.stack(got)[..., :2] - teacher[..., :2], axis=2)))


def test_with_the_handpiece_in_front_it_answers_closer_to_the_clean_face(held_out_pairs):
    pairs, teacher = held_out_pairs
    occluded = [o for _, o in pairs]
    original = _error_px(ORIGINAL_LANDMARK_MODEL, occluded, teacher)
    tuned = _error_px(LANDMARK_MODEL, occluded, teacher)
    assert original > 0.3, "the pairs do not move the original model: the test would prove nothing"
    assert tuned < 0.85 * original, f"tuned {tuned:.3f} px vs original {original:.3f} px (crop pixels)"


def test_on_a_clean_face_it_answers_like_the_original(held_out_pairs):
    pairs, teacher = held_out_pairs
    assert _error_px(LANDMARK_MODEL, [c for c, _ in pairs], teacher) < 0.5  # crop pixels (192 per side)


@pytest.fixture(scope="module")
def held_out_nonface():
    """Crops with no face from no_face.mp4 (never trained on) and the teacher's presence logit on each."""
    maker = nonface_crops.NonFaceMaker(np.random.default_rng(6))
    crops = [c for f in video_frames(nonface_crops.HELD_OUT_VIDEO, 3)
             for _, c in maker.crops(f, 3, has_face=False, handpiece=True)]
    assert len(crops) >= 100
    return crops, np.array([teacher_answer(maker.pairs.landmarker, c)[1] for c in crops])


def test_where_mediapipes_model_sees_no_face_neither_does_it(held_out_nonface):
    crops, teacher_logit = held_out_nonface
    lm = FaceLandmarker(model=LANDMARK_MODEL)
    presence = np.array([lm.infer(np.ascontiguousarray((c[..., ::-1].astype(np.float32) / 255.0)[None]))[1]
                         for c in crops])
    no_face = teacher_logit < 0
    assert no_face.sum() >= 90
    false_face = presence[no_face] >= 0.5
    assert false_face.mean() <= 0.03, f"calls {false_face.sum()} of {no_face.sum()} non-face crops a face"
