"""The live pipeline's own fail-closed paths: a fault on the hot path, and a face lost while armed."""

import numpy as np

from guidance.gate import Reason
from guidance.pipeline import GuidancePipeline
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.vision.capture.sources import Frame, open_source
from guidance.zones.plan import load_plan


def _pipeline():
    plan = load_plan("full_face")
    return GuidancePipeline(plan, load_handpiece_profile(plan.handpiece_profile))


def test_a_fault_on_the_hot_path_denies_disarms_and_is_recorded():
    pipe = _pipeline()
    pipe.set_armed(True, "test")

    def broken(frame, **kw):
        raise RuntimeError("landmark model exploded")

    pipe.face.process = broken
    r = pipe.process(Frame(0, 0, np.zeros((480, 640, 3), np.uint8)))
    assert not r.decision.permit and r.decision.reason == Reason.INTERNAL_ERROR
    assert not pipe.state.armed
    kinds = [e.kind for e in pipe.events]
    assert "fault" in kinds and any(e.kind == "disarm" and "fault" in e.cause for e in pipe.events)
    assert r.record().gate.reason == "internal_error"


def test_losing_the_face_for_longer_than_the_limit_disarms(sample):
    pipe = _pipeline()
    pipe.set_armed(True, "test")
    with open_source(sample("no_face.mp4")) as src:
        results = [pipe.process(f) for f in src]
    assert all(not r.decision.permit for r in results)
    disarm = [e for e in pipe.events if e.kind == "disarm"]
    assert disarm and disarm[0].cause == "face lost"
    # armed until the face had been gone for more than a second of capture time, then not
    t0 = results[0].frame.t_capture_ns
    first_disarmed = next(r for r in results if not r.armed)
    assert (first_disarmed.frame.t_capture_ns - t0) / 1e9 > 1.0
    assert all(r.decision.reason == Reason.NOT_ARMED for r in results if not r.armed)
