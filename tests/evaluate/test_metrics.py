"""The evaluation's figures on synthetic frame records and ground truth with known answers."""

from __future__ import annotations

import dataclasses

import pytest

from guidance.evaluate.chain import MAX_PASSES_LIMIT, write_lifted_plan
from guidance.evaluate.evaluation import Pool, SessionResult, checklist
from guidance.evaluate.metrics import (calibration, gate_sigma, permit_safety, place_pulses, pulse_chart_errors,
                                       pulse_safety, stats, tip_chart_errors, tip_chart_errors_by_zone, truth_exposure, usable_permit_share)
from guidance.evaluate.truth import PlanTruth
from guidance.session.records import FaceRecord, FrameRecord, GateRecord, TipRecord, ZoneRecord
from guidance.sim.ground_truth import GTFrame
from guidance.zones.atlas import load_atlas
from guidance.zones.plan import load_plan

FOREHEAD = (0.0, -44.0)  # forehead_central, 16 mm inside the zone, 23.5 mm inside the full-face plan
CHEEK = (45.0, 30.0)  # cheek_left, 13 mm inside
EYE = (-39.0, -4.0)  # periorbital_right (exclusion), 17 mm outside the plan
EYE_EDGE = (45.0, 5.0)  # periorbital_left, 6 mm outside the plan
FPS = 30.0
T0 = 10**12


@pytest.fixture(scope="module")
def atlas():
    return load_atlas()


@pytest.fixture(scope="module")
def plan(atlas):
    return load_plan("full_face", atlas)


@pytest.fixture(scope="module")
def truth(plan, atlas):
    return PlanTruth(plan, atlas)


def gt_frame(atlas, i: int, uv, *, contact=True, face=True, tip_px=(320.0, 240.0), z_mm=640.0) -> GTFrame:
    zone, d = atlas.zone_at(*uv)
    nan = float("nan")
    return GTFrame(frame_index=i, t_video_ns=round(i * 1e9 / FPS), source_frame=i, face_found=face, segment=0,
                   segment_type="line" if contact else "move", contact=contact, height_mm=0.0 if contact else 10.0,
                   chart_u_mm=uv[0], chart_v_mm=uv[1], true_zone=zone.name if zone else "",
                   true_kind=zone.kind if zone else "", boundary_mm=d, in_plan=None, plan_distance_mm=nan,
                   tip_x_px=tip_px[0], tip_y_px=tip_px[1], tip_x_mm=nan, tip_y_mm=nan, tip_z_mm=z_mm,
                   skin_x_px=tip_px[0], skin_y_px=tip_px[1], speed_mm_s=0.0, chart_speed_mm_s=0.0, facing_camera=True,
                   markers_visible="1+2")


def record(i: int, *, permit=False, reasons=(), armed=True, chart=None, tip_px=(320.0, 240.0), sigma=1.0,
           tip_valid=True) -> FrameRecord:
    t = T0 + round(i * 1e9 / FPS)
    reason = "ok" if permit else (reasons[0] if reasons else "near_boundary")
    return FrameRecord(
        index=i, size=(640, 480), t_capture_ns=t, t_face_ns=t, t_tip_ns=t, t_zone_ns=t, t_decided_ns=t + 5_000_000,
        t_published_ns=t + 6_000_000, armed=armed, face=FaceRecord(found=True, presence=0.99),
        gate=GateRecord(permit=permit, reason=reason, reasons=() if permit else tuple(reasons or (reason,))),
        tip=TipRecord(valid=tip_valid, px=tip_px, sigma_lateral_mm=sigma),
        zone=None if chart is None else ZoneRecord(zone="x", kind="treat", surface="face", chart_mm=chart))


def test_the_truth_of_a_frame_under_the_plan(truth, atlas):
    deep = truth.judge(gt_frame(atlas, 0, FOREHEAD))
    assert deep.usable and deep.in_plan and not deep.on_exclusion and not deep.outside_plan
    assert deep.plan_distance_mm > 10  # 23.5 mm: the forehead zones together
    eye = truth.judge(gt_frame(atlas, 0, EYE))
    assert eye.on_exclusion and eye.outside_plan and not eye.usable and eye.exclusion_distance_mm > 0
    edge = truth.judge(gt_frame(atlas, 0, EYE_EDGE))
    assert edge.on_exclusion and edge.outside_plan  # 6 mm outside the plan: beyond the 2 mm margin
    assert not truth.judge(gt_frame(atlas, 0, FOREHEAD, contact=False)).usable  # lifted
    assert not truth.judge(gt_frame(atlas, 0, FOREHEAD, face=False)).usable  # no handpiece drawn
    near = truth.judge(gt_frame(atlas, 0, (45.0, -20.0)))  # forehead_left, 0.5 mm from its edge
    assert near.in_plan and not near.usable


def test_permits_on_an_exclusion_are_counted_by_contact(truth, atlas):
    gt = [gt_frame(atlas, 0, FOREHEAD), gt_frame(atlas, 1, EYE), gt_frame(atlas, 2, EYE, contact=False),
          gt_frame(atlas, 3, EYE), gt_frame(atlas, 4, EYE_EDGE)]
    truths = truth.judge_all(gt)
    frames = [record(0, permit=True), record(1, permit=True), record(2, permit=True), record(3, permit=False),
              record(4, permit=True), record(9, permit=True)]  # frame 9: beyond the ground truth, ignored
    c = permit_safety(frames, truths)
    assert (c.exclusion_contact, c.exclusion_lifted) == (2, 1)
    assert (c.outside_contact, c.outside_lifted) == (2, 1)
    assert [e["frame"] for e in c.examples] == [1, 2, 4]
    seen = truth_exposure(frames, truths)
    assert seen["simulated"]["exclusion"] == {"contact": 3, "lifted": 1}
    assert seen["judged"]["exclusion"] == {"contact": 3, "lifted": 1}


def test_pulses_are_placed_by_time_between_two_frames(truth, atlas):
    gt = [gt_frame(atlas, i, FOREHEAD) for i in range(4)] + [gt_frame(atlas, 4, EYE), gt_frame(atlas, 5, EYE, contact=False)]
    truths = truth.judge_all(gt)
    frame_ns = 1e9 / FPS
    fired = [(T0 + int(1.5 * frame_ns), ("b", 1)),  # between frames 1 and 2: forehead
             (T0 + int(3.5 * frame_ns), ("b", 2)),  # between 3 and 4: the eye in contact
             (T0 + int(4.5 * frame_ns), ("b", 3)),  # between 4 and 5: the eye, lifted in frame 5
             (T0 + int(9 * frame_ns), ("b", 4))]  # after the video: not placed
    placed = place_pulses(fired, gt, T0, 0, FPS)
    assert [p.a for p in placed] == [1, 3, 4]
    assert placed[0].w == pytest.approx(0.5, abs=1e-6) and placed[0].u_mm == pytest.approx(FOREHEAD[0])
    c = pulse_safety(placed, truths)
    assert (c.exclusion_contact, c.exclusion_lifted, c.outside_contact, c.outside_lifted) == (1, 1, 1, 1)
    # where the service put them: 3-4-5 off for the first, the lifted one is left out
    service = {("b", 1): (FOREHEAD[0] + 3, FOREHEAD[1] + 4), ("b", 3): (0.0, 0.0)}
    assert pulse_chart_errors(placed, truths, service) == [pytest.approx(5.0)]


def test_tip_chart_error_only_in_contact_and_where_the_service_mapped_the_tip(atlas):
    gt = [gt_frame(atlas, 0, CHEEK), gt_frame(atlas, 1, CHEEK, contact=False), gt_frame(atlas, 2, CHEEK),
          gt_frame(atlas, 3, CHEEK, face=False)]
    frames = [record(0, chart=(CHEEK[0] + 3, CHEEK[1] - 4)), record(1, chart=(0.0, 0.0)), record(2, chart=None),
              record(3, chart=(0.0, 0.0))]
    assert tip_chart_errors(frames, gt) == [pytest.approx(5.0)]
    assert tip_chart_errors_by_zone(frames, gt) == {"cheek_left": [pytest.approx(5.0)]}
    s = stats([1.0, 2.0, 3.0, float("nan"), None])
    assert s["n"] == 3 and s["median"] == 2.0 and s["max"] == 3.0
    assert stats([]) == {"n": 0}


def test_usable_permit_share_leaves_out_dose_limits_and_unarmed_frames(truth, atlas):
    gt = [gt_frame(atlas, i, FOREHEAD) for i in range(7)] + [gt_frame(atlas, 7, EYE)]
    frames = [record(0, permit=True), record(1, permit=True), record(2, reasons=("near_boundary",)),
              record(3, reasons=("passes_exceeded",)), record(4, reasons=("zone_complete", "passes_exceeded")),
              record(5, reasons=("near_boundary", "passes_exceeded")), record(6, permit=True, armed=False),
              record(7, reasons=("zone_excluded",))]  # not usable: on the eye
    u = usable_permit_share(frames, truth.judge_all(gt))
    assert (u.usable, u.recorded, u.not_armed, u.dose_only, u.counted, u.permitted) == (7, 7, 1, 2, 4, 2)
    assert u.share == pytest.approx(0.5)
    assert u.denied_by_first_reason == {"near_boundary": 2}
    assert u.near_boundary["true_plan_distance_mm"] == [pytest.approx(23.5, abs=0.5)] * 2  # what it asked and had
    j = u.to_json()
    assert j["denied"]["near_boundary"] == {"n": 2, "share": 0.5}
    assert usable_permit_share([], []).share is None


def test_calibration_compares_the_error_that_the_gates_sigma_describes(atlas):
    # f = 640 px, true tip 640 mm away: 1 px off = 1 mm across the line of sight
    gt = [gt_frame(atlas, i, CHEEK, tip_px=(320.0, 240.0), z_mm=640.0) for i in range(4)] + \
         [gt_frame(atlas, 4, CHEEK, contact=False)]
    frames = [record(0, tip_px=(322.0, 240.0), sigma=0.5, chart=CHEEK),  # 2 mm > 1.5: beyond
              record(1, tip_px=(322.0, 240.0), sigma=1.0, chart=CHEEK),  # 2 mm < 3: within
              record(2, tip_px=(320.0, 243.0), sigma=0.9, chart=(CHEEK[0] + 9, CHEEK[1])),  # 3 > 2.7: beyond
              record(3, tip_px=(330.0, 240.0), sigma=0.1, tip_valid=False),  # no valid tip: the gate had no sigma
              record(4, tip_px=(330.0, 240.0), sigma=0.1)]  # lifted
    c = calibration(frames, gt, 640.0)
    assert (c.contact_frames, c.beyond) == (3, 2) and c.share == pytest.approx(2 / 3)
    assert c.beyond_chart == 1  # only frame 2's chart point is off by more than 3 sigma
    assert c.sigma_sources == {"tip.sigma_lateral_mm": 3}
    assert c.ratio == [pytest.approx(4.0), pytest.approx(2.0), pytest.approx(3 / 0.9)]


def test_a_sigma_the_gate_records_itself_is_preferred_and_judged_on_the_chart(atlas):
    r = record(0, tip_px=(322.0, 240.0), sigma=0.5, chart=(CHEEK[0] + 1, CHEEK[1]))
    assert gate_sigma(r) == (0.5, "tip.sigma_lateral_mm", "tip_lateral")
    total = dataclasses.replace(r, gate=dataclasses.replace(r.gate, sigma_mm=0.4))
    assert gate_sigma(total) == (0.4, "gate.sigma_mm", "chart")
    c = calibration([total], [gt_frame(atlas, 0, CHEEK)], 640.0)
    assert (c.contact_frames, c.beyond) == (1, 0)  # chart error 1 mm < 3 x 0.4 (the 2 mm tip error is not it)


def test_the_lifted_plan_keeps_the_zones_and_margin_and_drops_the_dose_limits(plan, tmp_path):
    lifted = load_plan(write_lifted_plan(plan, tmp_path / "lifted.yaml"))
    assert set(lifted.zones) == set(plan.zones) and lifted.exclusions == plan.exclusions
    assert lifted.margin_mm == plan.margin_mm and lifted.ttl_ms == plan.ttl_ms
    assert not lifted.stop_at_target
    assert {z.max_passes for z in lifted.zones.values()} == {MAX_PASSES_LIMIT} == {50}


def test_the_checklist_says_which_target_is_missed(truth, atlas, tmp_path):
    from guidance.evaluate.evaluation import SessionSpec
    from guidance.evaluate.judge import SessionFigures
    from guidance.evaluate.metrics import Calibration, SafetyCount, UsableShare

    def figures(tip_errors, share_permitted, exclusion_permits=0, cov=1.0):
        return SessionFigures(
            permits=SafetyCount(exclusion_contact=exclusion_permits), permits_lifted=SafetyCount(),
            pulses=SafetyCount(), pulses_fired=3, pulses_placed=3, tip_errors_by_zone={"chin": tip_errors},
            pulse_errors_mm=[],
            coverage_max_diff_pp=cov, coverage={}, usable=UsableShare(10, 10, 0, 0, 10, share_permitted, {}),
            calibration=Calibration(100, 0, 0, {}, []), health={}, contact_frames=100, violations_recorded=0,
            exposure={})

    spec = SessionSpec("a", "a.mp4", "p.yaml", "p", None, "full_face")
    good = SessionResult(spec, tmp_path, "ok", figures=figures([1.0] * 10, 10))
    bad = SessionResult(dataclasses.replace(spec, key="b", face="b.mp4"), tmp_path, "ok",
                        figures=figures([1.0] * 5 + [4.0] * 5, 8, exclusion_permits=1, cov=4.0))
    failed = SessionResult(dataclasses.replace(spec, key="c"), tmp_path, "failed", "run", "exit code 1")
    faces = {"a.mp4": Pool(), "b.mp4": Pool()}
    total = Pool()
    for r in (good, bad):
        faces[r.spec.face].add(r.figures)
        total.add(r.figures)
    items = {it["target"].split(":")[0].split(" in ")[0]: it for it in checklist([good, bad, failed], faces, total)}
    passed = {k: v["pass"] for k, v in items.items()}
    assert passed["0 permits"] is False
    assert passed["0 pulses"] is True
    assert passed["tip chart error"] is False and "1 of 2 faces miss" in items["tip chart error"]["value"]
    assert passed["usable-frame permit share >= 0.90"] is False and "(b)" in items["usable-frame permit share >= 0.90"]["value"]
    assert passed["worst-zone coverage error <= 3 pp"] is False
    assert passed["true lateral error beyond 3 sigma"] is True
    assert passed["every session ran"] is False
