"""The décolletage's lower edge follows the pose model's shoulder line when shoulders are known."""

import dataclasses

import cv2
import numpy as np
import pytest

from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.body.shoulders import PoseEstimator
from guidance.vision.capture.sources import Frame
from guidance.zones.mapper import ZoneMapper


@pytest.fixture(scope="module")
def mapper():
    return ZoneMapper()


@pytest.fixture(scope="module")
def astronaut(sample):
    """Image, face observation and the pose model's shoulders (real, not made up)."""
    image = cv2.imread(str(sample("astronaut.png")))
    obs = FaceTracker(TrackerConfig(smoothing=False)).process(Frame(0, 1_000_000_000, image))
    assert obs.found and obs.head_pose.valid
    shoulders = PoseEstimator().process(image, 1_000_000_000, 0)
    assert shoulders.valid
    return image, obs, shoulders


def shifted(shoulders, dy):
    left, right = shoulders.left_px, shoulders.right_px
    return dataclasses.replace(shoulders, left_px=(left[0], left[1] + dy), right_px=(right[0], right[1] + dy))


def column(obs, shoulders, t):
    """A point on the line from the menton towards the middle of the shoulders (t = 1 at the line)."""
    chin = obs.landmarks[152, :2].astype(float)
    mid = (np.array(shoulders.left_px) + np.array(shoulders.right_px)) / 2
    p = chin + t * (mid - chin)
    return float(p[0]), float(p[1])


def test_the_shoulder_line_cuts_the_decolletage(mapper, astronaut):
    image, obs, shoulders = astronaut
    size = (image.shape[1], image.shape[0])
    with_line = mapper.prepare(obs, size, shoulders=shoulders)
    without = mapper.prepare(obs, size)
    assert with_line.limit is not None and with_line.limit_reason == "shoulder line"
    assert without.limit is None
    lim = with_line.limit
    # the line lies inside the proportional décolletage band on this picture (notch at v 212, bottom 362)
    assert 212 < lim.edge_v(0.0) < 362
    assert lim.right_uv[0] < 0 < lim.left_uv[0]  # the client's right shoulder at u < 0, as in the atlas

    above = with_line.locate(*column(obs, shoulders, 0.9))
    assert (above.surface, above.zone) == ("decolletage", "decolletage")
    assert above.limit_mm > 0 and above.boundary_mm <= above.limit_mm
    assert above.chart_mm == without.locate(*column(obs, shoulders, 0.9)).chart_mm  # same plane, same chart point

    below = with_line.locate(*column(obs, shoulders, 1.15))
    assert below.face_found and below.zone == "off-surface" and below.kind == "off-surface"
    assert without.locate(*column(obs, shoulders, 1.15)).zone == "decolletage"  # the proportional band went on

    # approaching the line, the distance to the edge shrinks to about zero at the line
    d = [with_line.locate(*column(obs, shoulders, t)).limit_mm for t in (0.85, 0.9, 0.95)]
    assert d[0] > d[1] > d[2] > 0
    at = with_line.locate(*column(obs, shoulders, 1.0))
    assert at.zone == "off-surface" or abs(at.limit_mm) < 2.0


def test_the_limit_moves_with_the_shoulder_line(mapper, astronaut):
    image, obs, shoulders = astronaut
    size = (image.shape[1], image.shape[0])
    p = column(obs, shoulders, 1.15)  # below the real line
    assert mapper.prepare(obs, size, shoulders=shoulders).locate(*p).zone == "off-surface"
    lower = mapper.prepare(obs, size, shoulders=shifted(shoulders, 40))
    assert lower.limit.edge_v(0) > mapper.prepare(obs, size, shoulders=shoulders).limit.edge_v(0) + 30
    r = lower.locate(*p)
    assert r.zone == "decolletage" and r.limit_mm > 0


def test_low_shoulders_do_not_extend_the_decolletage_past_its_outline(mapper, astronaut):
    """The shoulder line only cuts the décolletage: with it below the outline's V, the décolletage is the outline's."""
    image, obs, shoulders = astronaut
    size = (image.shape[1], image.shape[0])
    low = mapper.prepare(obs, size, shoulders=shifted(shoulders, 80))
    notch_v = mapper.chart.surfaces["decolletage"]["y_top_mm"]
    assert low.limit.edge_v(0) > notch_v + 150  # below the V's apex (notch + 130 mm)
    without = mapper.prepare(obs, size)
    column = [(low.locate(206.0, float(y)), without.locate(206.0, float(y))) for y in range(250, image.shape[0], 2)]
    on = [(a, b) for a, b in column if a.zone == "decolletage"]
    assert len(on) > 10
    for a, b in on:
        assert b.zone == "decolletage" and a.boundary_mm <= b.boundary_mm + 1e-6
    assert max(a.chart_mm[1] for a, _ in on) <= notch_v + 130.5
    below = [a for a, _ in column if a.chart_mm is None or a.chart_mm[1] > notch_v + 131]
    assert below and all(a.zone == "off-surface" for a in below)


def test_shoulders_above_the_notch_also_end_the_neck(mapper, astronaut):
    image, obs, shoulders = astronaut
    size = (image.shape[1], image.shape[0])
    high = shifted(shoulders, -25)  # a line across the neck
    frame = mapper.prepare(obs, size, shoulders=high)
    assert frame.limit.edge_v(0) < 212
    p = column(obs, shoulders, 0.75)  # neck skin just above the notch, below that line
    assert mapper.prepare(obs, size).locate(*p).surface == "neck"
    assert frame.locate(*p).zone == "off-surface"
    upper = frame.locate(*column(obs, shoulders, 0.2))
    assert upper.surface == "neck" and 0 < upper.boundary_mm <= upper.limit_mm


@pytest.mark.parametrize("why", ["stale", "invisible", "invalid", "another person", "no pose landmarks"])
def test_unusable_shoulders_fall_back_to_the_proportional_extension(mapper, astronaut, why):
    image, obs, shoulders = astronaut
    size = (image.shape[1], image.shape[0])
    bad = {
        "stale": dataclasses.replace(shoulders, t_capture_ns=obs.t_capture_ns - 2_000_000_000),
        "invisible": dataclasses.replace(shoulders, visibility=(0.2, 0.99)),
        "invalid": dataclasses.replace(shoulders, valid=False, reason="no-pose"),
        "another person": dataclasses.replace(shoulders, landmarks=shoulders.landmarks + [300, 0, 0]),
        "no pose landmarks": dataclasses.replace(shoulders, landmarks=None),
    }[why]
    frame = mapper.prepare(obs, size, shoulders=bad)
    assert frame.limit is None and frame.limit_reason != "shoulder line"
    p = column(obs, shoulders, 1.15)
    r = frame.locate(*p)
    assert r.zone == "decolletage" and r.limit_mm is None  # exactly the proportional behaviour
    assert r == mapper.prepare(obs, size).locate(*p)


def test_a_pose_found_in_a_cartoon_does_not_limit_a_real_face(sample, mapper, astronaut):
    """no_face.mp4 frame 60 (a title card) gives the pose model 'shoulders'; they are not this face's."""
    image, obs, _ = astronaut
    cap = cv2.VideoCapture(str(sample("no_face.mp4")))
    for _ in range(61):
        ok, card = cap.read()
        assert ok
    cap.release()
    ghost = PoseEstimator().process(card, obs.t_capture_ns, 60)
    frame = mapper.prepare(obs, (image.shape[1], image.shape[0]), shoulders=ghost)
    assert frame.limit is None


def test_face_zones_are_unchanged_by_shoulders(mapper, astronaut):
    image, obs, shoulders = astronaut
    size = (image.shape[1], image.shape[0])
    a, b = mapper.prepare(obs, size, shoulders=shoulders), mapper.prepare(obs, size)
    lm = obs.landmarks[:, :2]
    for k in range(0, 468, 7):
        ra, rb = a.locate(*map(float, lm[k])), b.locate(*map(float, lm[k]))
        assert ra == rb
    assert "limit_mm" not in b.locate(*map(float, lm[1])).to_json()
    j = a.locate(*column(obs, shoulders, 0.9)).to_json()
    assert j["limit_mm"] > 0 and j["zone"] == "decolletage"
