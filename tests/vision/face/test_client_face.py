"""The client's face: chosen at arming and kept. A second real face slid across a simulated session (in front of
the client's) never takes over; the gate says `other_face`; `guidance locate` maps each hand-annotated point of a
five-face photo on the right face."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from guidance import samples
from guidance.cli import main
from guidance.pipeline import GuidancePipeline
from guidance.sim.second_face import composite, load_second_face
from guidance.sim.simulate import simulate
from guidance.vision.capture.sources import Frame
from guidance.vision.face.detector import _iou
from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.zones.plan import load_plan


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    base = tmp_path_factory.mktemp("two_faces")
    simulate(samples.fetch("single_face.mp4"), "demo_full_face", base / "sim", max_frames=240, size=(640, 480))
    return composite(base / "sim", base / "two"), base / "sim"


def _frames(folder):
    cap = cv2.VideoCapture(str(folder / "simulated.avi"))
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            yield img
    finally:
        cap.release()


def _whose(obs, row) -> str:
    """'client', 'other' or 'none': whose face the tracked mesh lies on, from the composite's truth."""
    if not obs.found:
        return "none"
    lm = obs.landmarks[:, :2]
    box = np.r_[lm.min(axis=0), lm.max(axis=0)]
    client = np.array([float(v) for v in row["client_box"].split()])
    iou_c = float(_iou(box, client[None])[0])
    iou_o = float(_iou(box, np.array([float(v) for v in row["box"].split()])[None])[0]) if row["box"] else 0.0
    return "other" if iou_o > iou_c else "client"


def _track(folder, lock: bool):
    tracker = FaceTracker(TrackerConfig())
    out = []
    for i, (img, row) in enumerate(zip(_frames(folder), load_second_face(folder))):
        obs = tracker.process(Frame(i, int(i * 1e9 / 30), img))
        if lock and i == 2:
            tracker.lock_client()
        out.append((obs, row, _whose(obs, row)))
    return out


def test_the_scene_has_a_second_face_that_covers_the_client_and_leaves(scene):
    two, _ = scene
    rows = load_second_face(two)
    cover = np.array([float(r["covers_client"]) for r in rows])
    visible = np.array([r["visible"] == "True" for r in rows])
    assert not visible[:20].any() and not visible[-10:].any()  # enters and leaves
    assert cover.max() > 0.5 and (cover > 0.5).sum() >= 20  # in front of the client's face for a while
    assert all(r["client_box"] for r in rows)  # the client is there throughout (the truth, on the clean frame)


def test_without_a_client_the_second_face_takes_over(scene):
    """What the tracker did before: it follows whatever face its ROI holds, and the other face walks off with it."""
    who = [w for _, _, w in _track(scene[0], lock=False)]
    assert who.count("other") >= 30


def test_the_locked_client_is_kept_and_the_other_face_never_takes_over(scene):
    track = _track(scene[0], lock=True)
    assert [i for i, (_, _, w) in enumerate(track) if w == "other"] == []
    uncovered = [(o, w) for o, r, w in track if float(r["covers_client"]) == 0.0]
    assert sum(w == "client" for _, w in uncovered) >= 0.95 * len(uncovered)  # back on the client once it is clear
    covered = [o for o, r, _ in track if float(r["covers_client"]) > 0.6]
    assert covered and all(not o.found and o.other_faces >= 1 and o.client for o in covered)


def test_no_false_drop_of_the_client_with_the_handpiece_over_the_face(scene):
    """The same simulated session without the second face: locking changes nothing (the handpiece is no stranger)."""
    _, sim = scene
    free, locked = FaceTracker(TrackerConfig()), FaceTracker(TrackerConfig())
    for i, img in enumerate(_frames(sim)):
        a = free.process(Frame(i, int(i * 1e9 / 30), img))
        b = locked.process(Frame(i, int(i * 1e9 / 30), img))
        if i == 2:
            locked.lock_client()
        assert a.found == b.found and b.other_faces == 0
        if i > 2:
            assert b.client and b.client_distance is not None


def test_the_gate_denies_other_face_and_never_permits_on_the_other_face(scene):
    two, _ = scene
    plan = load_plan("full_face")
    now = [0]
    pipe = GuidancePipeline(plan, load_handpiece_profile(plan.handpiece_profile), clock=lambda: now[0])
    reasons, on_other = [], []
    try:
        for i, (img, row) in enumerate(zip(_frames(two), load_second_face(two))):
            now[0] = int(i * 1e9 / 30)
            if i == 3:
                pipe.set_armed(True, "test")
            r = pipe.process(Frame(i, now[0], img))
            reasons.append(r.decision.reason.value)
            if _whose(r.face, row) == "other":
                on_other.append((i, r.decision.permit))
            if r.face.other_faces:
                assert r.record().face.other_faces == r.face.other_faces and r.record().face.client
    finally:
        pipe.close()
    assert on_other == []
    assert "ok" in reasons and reasons.count("other_face") >= 10
    assert "no_face" not in reasons  # a face was always in the picture: the deny says whose it is


def test_lock_before_any_face_takes_the_first_face_found_and_release_forgets_it():
    img = cv2.imread(str(samples.fetch("single_face.jpg")))
    blank = np.zeros_like(img)
    tracker = FaceTracker(TrackerConfig())
    assert not tracker.process(Frame(0, 0, blank)).found
    tracker.lock_client()  # armed with nobody in the picture
    assert tracker.client is None
    obs = tracker.process(Frame(1, 33_000_000, img))
    assert obs.found and obs.client and tracker.client is not None
    tracker.release_client()
    assert tracker.client is None and not tracker.process(Frame(2, 66_000_000, img)).client


# Hand-annotated on a zoomed picture of multi_face.jpg (five people): pixel -> (whose face, by the face's
# left edge in px, and the zone). A first pass put 4 of 12 points off their zone (a nose point on the upper
# lip, ...: docs/face_tracking.md); these are the corrected annotations.
MULTI_FACE_POINTS = {
    (258, 163): (215, "chin"), (293, 143): (215, "cheek_left"),  # sunglasses, top left
    (368, 303): (315, "nose"), (362, 250): (315, "forehead_central"), (330, 312): (315, "cheek_right"),
    (478, 265): (436, "nose"), (478, 228): (436, "forehead_central"),  # curly hair, at the back
    (575, 375): (531, "nose"), (612, 385): (531, "cheek_left"),
    (733, 360): (682, "nose"), (735, 308): (682, "forehead_central"), (698, 356): (682, "cheek_right"),
}


def test_locate_maps_each_annotated_point_on_the_right_face_of_a_five_face_photo(capsys):
    path = samples.fetch("multi_face.jpg")
    for (x, y), (left, zone) in MULTI_FACE_POINTS.items():
        assert main(["locate", str(path), str(x), str(y), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["faces"] == 5
        assert abs(out["face_box"][0] - left) < 6, (x, y, out["face_box"])
        assert (out["surface"], out["zone"]) == ("face", zone), (x, y, out["zone"])
    assert main(["locate", str(path), "900", "100", "--json"]) == 0  # the sky: off every face
    out = json.loads(capsys.readouterr().out)
    assert out["zone"] == "off-surface" and out["faces"] == 5


def test_find_faces_on_the_family_photo():
    img = cv2.imread(str(samples.fetch("facetorch_test.jpg")))
    faces = FaceTracker(TrackerConfig(smoothing=False)).find_faces(img)
    assert len(faces) == 4  # two adults, two children
    sizes = [float(np.linalg.norm(f.landmarks[33, :2] - f.landmarks[263, :2])) for f in faces]
    assert sizes == sorted(sizes, reverse=True)
