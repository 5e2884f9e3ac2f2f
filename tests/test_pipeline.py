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


def _chart_errors(sim_dir, skin_memory: bool):
    """Service chart position vs the true one, contact frames, through the whole pipeline (no publish)."""
    import dataclasses

    import cv2

    from guidance.pipeline import PipelineConfig
    from guidance.sim.ground_truth import load_ground_truth
    plan = load_plan("full_face")
    clock = [0]
    pipe = GuidancePipeline(plan, load_handpiece_profile(plan.handpiece_profile), clock=lambda: clock[0],
                            config=dataclasses.replace(PipelineConfig.for_plan(plan), skin_memory=skin_memory))
    gt = load_ground_truth(sim_dir)
    cap = cv2.VideoCapture(str(sim_dir / "simulated.avi"))
    errors, sigmas = [], []
    try:
        for g in gt:
            ok, img = cap.read()
            assert ok
            clock[0] = g.t_video_ns
            r = pipe.process(Frame(g.frame_index, g.t_video_ns, img))
            if g.contact and r.lookup is not None and r.lookup.chart_mm is not None:
                errors.append(float(np.hypot(r.lookup.chart_mm[0] - g.chart_u_mm, r.lookup.chart_mm[1] - g.chart_v_mm)))
                sigmas.append(r.decision.mapping_sigma_mm)
    finally:
        pipe.close()
    return np.array(errors), sigmas


def test_the_skin_memory_brings_the_skin_point_under_the_handpiece_closer_to_the_truth(tmp_path, sample):
    """On a simulated session of the training face, showing the landmark model the remembered skin instead of
    the handpiece must not make the mapping worse, and must fill (so the memory is actually used)."""
    from guidance.cli import main
    sim = tmp_path / "sim"
    assert main(["simulate", "--face-video", str(sample("single_face.mp4")), "--path", "demo_full_face", "-o", str(sim),
                 "--size", "640x480", "--max-frames", "240"]) == 0
    with_memory, sigmas = _chart_errors(sim, True)
    without, _ = _chart_errors(sim, False)
    assert len(with_memory) > 80
    assert np.median(with_memory) <= np.median(without) + 0.1, (np.median(with_memory), np.median(without))
    assert np.percentile(with_memory, 90) <= np.percentile(without, 90) + 0.2
    assert all(s is not None and s > 0 for s in sigmas)  # every mapped frame had its mapping sigma


def test_the_client_found_again_right_after_another_face_had_its_place_is_denied_for_the_settle_time():
    """The pipeline marks a frame whose only face was someone else's and the gate denies the client's face found
    again within client_settle_ms of it (the mark is carried in order, live and re-judged alike)."""
    from guidance.vision.face.tracker import FaceObservation

    plan = load_plan("full_face")
    pipe = GuidancePipeline(plan, load_handpiece_profile(plan.handpiece_profile), vision=False)
    settle_ns = int(pipe.policy.client_settle_ms * 1e6)
    frame_ns = 33_333_333
    seen = []
    for i in range(40):
        t = 1_000_000_000 + i * frame_ns
        someone_else = i in (5, 6)  # the client's face not found, another face is
        face = FaceObservation(i, t, t, not someone_else, 0.9, None, None, None, None, False, {},
                               other_faces=1 if someone_else else 0, client=True)
        _, d, _ = pipe.judge(Frame(i, t, np.zeros((480, 640, 3), np.uint8)), face, None, t + 5_000_000,
                             armed=True, lookahead_ms=15.0)
        seen.append((t, Reason.OTHER_FACE in d.reasons, Reason.NO_FACE in d.reasons))
    t_first, t_last = 1_000_000_000 + 5 * frame_ns, 1_000_000_000 + 6 * frame_ns
    for t, other, no_face in seen:
        assert not no_face
        assert other == (t_first <= t < t_last + settle_ns), (t - t_last) / 1e6
    assert 2 + 14 <= sum(other for _, other, _ in seen) <= 2 + 15  # half a second of frames after the last one
