"""Pose pipeline (shoulders) on real media, and the background ShoulderTracker."""

import math
import threading
import time

import cv2
import numpy as np
import pytest

from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.body.shoulders import (DETECTOR_INPUT, DETECTOR_STRIDES, PoseEstimator, ShoulderObservation,
                                  ShoulderTracker, roi_from_alignment)
from guidance.vision.face.detector import ssd_anchor_centres
from guidance.vision.capture.sources import Frame


@pytest.fixture(scope="module")
def estimator():
    return PoseEstimator()


def face_box(image):
    obs = FaceTracker(TrackerConfig(smoothing=False, head_pose=False)).process(Frame(0, 0, image))
    assert obs.found
    xy = obs.landmarks[:, :2]
    return xy.min(0), xy.max(0)


def assert_plausible_shoulders(o: ShoulderObservation, image):
    h, w = image.shape[:2]
    (fx0, fy0), (fx1, fy1) = face_box(image)
    assert o.valid and o.reason == "ok", o.reason
    left, right = np.array(o.left_px), np.array(o.right_px)
    # the client faces the camera: their left shoulder is on the image's right
    assert left[0] > right[0]
    # beside the face on each side, wider than it, below the chin, inside the image
    assert right[0] < fx0 and left[0] > fx1
    assert left[0] - right[0] > 1.3 * (fx1 - fx0)
    assert min(left[1], right[1]) > fy1
    assert 0 <= right[0] and left[0] <= w and max(left[1], right[1]) <= h * 1.02
    # roughly level for these upright sitters
    assert abs(left[1] - right[1]) < 0.1 * (left[0] - right[0])
    assert min(o.visibility) > 0.9
    assert o.landmarks.shape == (33, 3)


def test_anchor_layout_matches_the_model_output():
    a = ssd_anchor_centres(DETECTOR_INPUT, DETECTOR_STRIDES)
    assert a.shape == (2254, 2)
    np.testing.assert_allclose(a[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(a[1], a[0])  # two anchors per cell at stride 8
    np.testing.assert_allclose(a[2], [1.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(a[-1], [6.5 / 7, 6.5 / 7])
    assert (a[-6:] == a[-1]).all()  # three stride-32 layers share a cell: six anchors


def test_roi_from_alignment_points_up_the_body():
    roi = roi_from_alignment(np.array([100.0, 400.0]), np.array([100.0, 200.0]))
    assert (roi.cx, roi.cy) == (100.0, 400.0)
    assert roi.size == pytest.approx(2 * 200 * 1.25)
    assert roi.rotation == pytest.approx(0.0)
    tilted = roi_from_alignment(np.array([0.0, 0.0]), np.array([100.0, -100.0]))  # body leaning to the right
    assert tilted.rotation == pytest.approx(math.pi / 4)


def test_shoulders_on_the_astronaut(sample, estimator):
    image = cv2.imread(str(sample("astronaut.png")))
    estimator.reset()
    o = estimator.process(image, 123, 7)
    assert (o.t_capture_ns, o.frame_index, o.redetected) == (123, 7, True)
    assert_plausible_shoulders(o, image)
    # the suit's shoulder seams are around x 105 and 305, y 245 (checked by eye on the image)
    assert o.right_px == pytest.approx((105, 245), abs=25)
    assert o.left_px == pytest.approx((305, 245), abs=25)


def test_shoulders_on_single_face_video_frames(sample, estimator):
    cap = cv2.VideoCapture(str(sample("single_face.mp4")))
    estimator.reset()
    results = []
    k = 0
    while k <= 60:
        ok, image = cap.read()
        if not ok:
            break
        if k % 12 == 0:
            o = estimator.process(image, k, k)
            assert_plausible_shoulders(o, image)
            assert min(o.left_px[1], o.right_px[1]) > 0.85 * image.shape[0]  # shoulders at the bottom edge
            results.append(o)
        k += 1
    cap.release()
    assert len(results) == 6  # frames 0, 12, …, 60 of the 72
    assert results[0].redetected and not any(r.redetected for r in results[1:])  # tracked from the landmarks
    spans = [r.left_px[0] - r.right_px[0] for r in results]
    assert max(spans) - min(spans) < 0.1 * np.mean(spans)  # a steady sitter: a steady shoulder width


def test_no_shoulders_without_a_person(sample, estimator):
    image = cv2.imread(str(sample("free-mountain-vector-01.jpg")))
    estimator.reset()
    o = estimator.process(image, 5, 1)
    assert not o.valid and o.reason == "no-person" and o.left_px is None and o.line() is None
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    estimator.reset()
    assert not estimator.process(noise).valid


def test_a_lost_pose_redetects(sample, estimator):
    person = cv2.imread(str(sample("astronaut.png")))
    empty = cv2.imread(str(sample("free-mountain-vector-01.jpg")))
    estimator.reset()
    assert estimator.process(person).valid
    tracked = estimator.process(person)
    assert tracked.valid and not tracked.redetected  # the ROI from the last landmarks
    # a picture without a person right after one: the tracked ROI alone would show a confident
    # "pose" here; the detector runs every time and says there is nobody
    lost = estimator.process(cv2.resize(empty, (512, 512)))
    assert not lost.valid and lost.reason == "no-person"
    again = estimator.process(person)
    assert again.valid and again.redetected


class _Blocking:
    """Stands in for the estimator: blocks until released, records what it saw."""

    def __init__(self, fail=False):
        self.release = threading.Event()
        self.started = threading.Event()
        self.seen: list[int] = []
        self.fail = fail

    def process(self, image, t_ns, idx):
        self.started.set()
        self.release.wait(10)
        self.seen.append(idx)
        if self.fail:
            raise RuntimeError("boom")
        return ShoulderObservation(idx, t_ns, time.monotonic_ns(), True, "ok", (300.0, 250.0), (100.0, 250.0),
                                   (0.99, 0.99), 0.99)


def _wait(cond, timeout=10.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.005)


def test_tracker_submit_never_waits_for_the_model():
    fake = _Blocking()
    tracker = ShoulderTracker(fake, every_n=3, max_age_ms=500)
    try:
        img = np.zeros((48, 64, 3), np.uint8)
        assert tracker.latest().reason == "pending" and not tracker.latest().valid
        taken = [tracker.submit(img, 1000 + k, k) for k in range(3)]
        assert taken == [True, False, False]  # every 3rd frame only
        assert fake.started.wait(5)
        # the worker is stuck inside the model; submitting must still return, on this thread
        done = []
        t = threading.Thread(target=lambda: done.append([tracker.submit(img, 2000 + k, 10 + k) for k in range(9)]))
        t.start()
        t.join(5)
        assert done and done[0] == [True, False, False] * 3
        assert tracker.latest().reason == "pending"  # still nothing finished: reading never waits either
        assert tracker.dropped == 2  # three frames taken while busy: only the newest is kept
        fake.release.set()
        _wait(lambda: tracker.runs == 2)
        assert fake.seen == [0, 16]  # the first frame, then the newest pending one
        got = tracker.latest(now_ns=2016 + 100_000_000)
        assert got.valid and got.frame_index == 16
        stale = tracker.latest(now_ns=2016 + 600_000_000)
        assert not stale.valid and stale.reason == "stale" and stale.frame_index == 16
    finally:
        fake.release.set()
        tracker.close()


def test_tracker_reports_a_failing_model_as_invalid():
    fake = _Blocking(fail=True)
    fake.release.set()
    with ShoulderTracker(fake, every_n=1) as tracker:
        tracker.submit(np.zeros((8, 8, 3), np.uint8), time.monotonic_ns(), 3)
        _wait(lambda: tracker.runs == 1)
        o = tracker.latest()
        assert not o.valid and o.reason.startswith("error: RuntimeError") and o.frame_index == 3


def test_tracker_copies_the_frame():
    fake = _Blocking()
    tracker = ShoulderTracker(fake, every_n=1)
    try:
        img = np.zeros((8, 8, 3), np.uint8)
        tracker.submit(img, 0, 0)
        assert fake.started.wait(5)
        tracker.submit(img, 1, 1)
        img[:] = 255  # the caller reuses its buffer
        assert tracker._pending[0].max() == 0
    finally:
        fake.release.set()
        tracker.close()


def test_tracker_with_the_real_model(sample):
    image = cv2.imread(str(sample("astronaut.png")))
    with ShoulderTracker(every_n=1) as tracker:
        t = time.monotonic_ns()
        assert tracker.submit(image, t, 42)
        _wait(lambda: tracker.runs >= 1, timeout=60)
        o = tracker.latest()
        assert o.valid and o.frame_index == 42 and o.t_capture_ns == t
        assert o.left_px[0] > o.right_px[0]
