"""The neck on the torso, twisting under a turned head (zones/neck_twist.py): exact on its own geometry, and on a
rendered turn with the real face tracker far closer to the truth than the neck carried by the head."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from guidance.gate import GateInput, GatePolicy, Reason, ZoneKind, decide
from guidance.sim.head_scene import HeadScene
from guidance.sim.neck_turn import about_axis, neck_surface_point
from guidance.vision.capture.camera import CameraModel
from guidance.vision.capture.sources import Frame
from guidance.vision.face.head_pose import HeadPose, load_canonical_face
from guidance.vision.face.landmarks import ORIGINAL_LANDMARK_MODEL
from guidance.vision.face.tracker import FaceObservation, FaceTracker, TrackerConfig
from guidance.vision.rigid import RigidPose
from guidance.zones.mapper import ZoneMapper
from guidance.zones.neck_twist import (TWIST_SIGMA_SHARE, TorsoReference, TorsoReferenceBuilder, head_turn_rad,
                                       neck_skin_points, notch_point, twist_share, twist_sigma_mm)

CAM = CameraModel.default(640, 480)
TORSO = RigidPose(np.eye(3), np.array([0.0, -85.0, 470.0]))  # the head frame at rest: the chin mid-picture


@pytest.fixture(scope="module")
def mapper():
    return ZoneMapper()


def rest_point(u: float, v: float, neck: dict) -> tuple[np.ndarray, np.ndarray]:
    return neck_surface_point(u / neck["radius_mm"], v, neck)


def observation(head: RigidPose, canonical: np.ndarray) -> FaceObservation:
    """The face as a perfect tracker would see it: the canonical face through the head pose."""
    pc = head.apply(canonical)
    px, _ = cv2.projectPoints(pc.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), CAM.K, CAM.dist)
    lm = np.c_[px.reshape(-1, 2), pc[:, 2]]
    pose = HeadPose(head.rvec, head.t_mm, 0.3, True, True, 0)
    return FaceObservation(0, 0, 0, True, 1.0, lm, lm, None, pose, False)


def seen_neck_points(head_turn: float, neck: dict) -> list[tuple[float, float, np.ndarray]]:
    """(u, v, pixel) of neck skin points below the chin that face the camera, their skin twisted by the turn."""
    out = []
    for v in (135.0, 160.0, 185.0):
        for u in np.arange(-60.0, 61.0, 10.0):
            p, n = rest_point(u, v, neck)
            twist = about_axis(head_turn * float(twist_share(v, neck)), neck)
            pc, nc = TORSO.apply(twist.apply(p[None])[0][None])[0], TORSO.R @ twist.R @ n
            if nc @ pc < -0.3 * np.linalg.norm(pc):
                px, _ = cv2.projectPoints(pc.reshape(1, 1, 3), np.zeros(3), np.zeros(3), CAM.K, CAM.dist)
                out.append((u, v, px.reshape(2)))
    return out


@pytest.mark.parametrize("turn_deg", [0.0, 25.0, -40.0])
def test_each_skin_point_of_the_twisted_neck_maps_to_its_rest_chart_point(mapper, turn_deg):
    """With the exact poses the twist model is exact; the neck carried by the head is off by the turn's arc."""
    neck = mapper.chart.surfaces["neck"]
    canonical = load_canonical_face()
    psi = np.radians(turn_deg)
    head = TORSO.compose(about_axis(psi, neck))
    obs = observation(head, canonical)
    torso = TorsoReference(TORSO, head_turn_rad(TORSO.R, head.R))
    assert torso.psi_rad == pytest.approx(psi, abs=1e-9)
    twisted, carried, expected = [], [], []
    for u, v, px in seen_neck_points(psi, neck):
        a = mapper.locate(obs, px[0], px[1], camera=CAM, torso=torso)
        b = mapper.locate(obs, px[0], px[1], camera=CAM)
        if a.surface != "neck":
            continue  # under the jaw, behind the face mesh
        twisted.append(np.hypot(a.chart_mm[0] - u, a.chart_mm[1] - v))
        if b.surface == "neck":  # (carried whole, a point may even fall off the atlas's neck: off-surface)
            carried.append(np.hypot(b.chart_mm[0] - u, b.chart_mm[1] - v))
            expected.append(neck["radius_mm"] * abs(psi) * (1 - float(twist_share(v, neck))))
    assert len(twisted) >= 15 and len(carried) >= 10
    assert max(twisted) < 0.05
    assert np.allclose(carried, expected, atol=0.05)  # the head-carried neck misses by the turn's untwisted arc
    if abs(turn_deg) >= 25:
        assert np.median(carried) > 8.0


def test_the_rest_pose_is_made_from_near_frontal_poses_only_and_made_again_after_a_reset():
    b = TorsoReferenceBuilder(frames=3, max_yaw_deg=12.0)
    head = TORSO.compose(RigidPose(cv2.Rodrigues(np.array([0.0, 0.3, 0.0]))[0], np.zeros(3)))
    assert b.add(head, 17.0) is None and b.add(None, None) is None  # turned, or no face: not rest
    for _ in range(2):
        assert b.add(TORSO, 2.0) is None
    ref = b.add(TORSO, -1.0)
    assert ref is not None and ref.psi_rad == pytest.approx(0.0, abs=1e-9)
    assert b.add(head, 17.0).psi_rad == pytest.approx(0.3, abs=1e-9)  # after rest: the turn since
    b.reset()
    assert b.add(TORSO, 0.0) is None


def test_the_gate_denies_an_unplaced_neck_and_widens_the_look_ahead_by_the_twist_sigma():
    neck = ZoneMapper().chart.surfaces["neck"]
    g = GateInput(armed=True, t_capture_ns=10**9, face_found=True, t_face_ns=10**9, presence=0.9, tip_valid=True,
                  tip_confidence=0.9, zone="neck_anterior", zone_kind=ZoneKind.TREAT, zone_planned=True,
                  boundary_mm=12.0, speed_mm_s=0.0, pipeline_latency_ms=10.0, neck_torso="ok")
    now = 10**9 + 5_000_000
    assert decide(GatePolicy(), g, now).permit
    assert decide(GatePolicy(), GateInput(**{**g.__dict__, "neck_torso": "unreferenced"}), now).reason == \
        Reason.NECK_UNREFERENCED
    sigma = twist_sigma_mm(TorsoReference(TORSO, np.radians(45.0)), neck)
    assert sigma == pytest.approx(TWIST_SIGMA_SHARE * neck["radius_mm"] * np.pi / 4)
    d = decide(GatePolicy(), GateInput(**{**g.__dict__, "twist_sigma_mm": sigma}), now)
    assert not d.permit and d.reason == Reason.NEAR_BOUNDARY and d.twist_sigma_mm == sigma  # 12 mm < 2 + 10.8
    # a face session's face-pose placement sigma: in quadrature too; 30 mm inside passes 2 + 21.4, 12 mm does not
    from guidance.zones.face_pose_bias import face_pose_sigma_mm

    pose = face_pose_sigma_mm("neck")
    assert pose is not None and face_pose_sigma_mm("face") is None and face_pose_sigma_mm(None) is None
    d = decide(GatePolicy(), GateInput(**{**g.__dict__, "pose_sigma_mm": pose}), now)
    assert not d.permit and d.reason == Reason.NEAR_BOUNDARY and d.pose_sigma_mm == pose
    assert d.sigma_mm == pytest.approx(pose)
    assert decide(GatePolicy(), GateInput(**{**g.__dict__, "pose_sigma_mm": pose, "boundary_mm": 30.0}), now).permit
    assert not decide(GatePolicy(), GateInput(**{**g.__dict__, "pose_sigma_mm": float("nan"), "boundary_mm": 30.0}),
                      now).permit  # a broken term denies


def test_on_a_rendered_turn_the_real_face_tracker_places_the_neck_far_better_twisted(mapper):
    """The rendered client turns 35 degrees on a still torso, the neck twisting (the rendering is the model); the
    face tracker's own poses: the rest pose from 5 frontal frames, then 4 turned frames. The twisted neck lands
    far closer than the neck carried by the head (whose error is mostly the turn's arc, not the face pose's)."""
    from guidance.samples import fetch

    chart, neck = mapper.chart, mapper.chart.surfaces["neck"]
    photo = cv2.imread(str(fetch("single_face.jpg")))
    seen = FaceTracker(TrackerConfig(smoothing=False, landmark_model=ORIGINAL_LANDMARK_MODEL)).process(Frame(0, 0, photo))
    scene = HeadScene(CAM, chart.surfaces, mapper.atlas, load_canonical_face(), chart.triangles, photo,
                      seen.landmarks_raw, np.full((480, 640, 3), 150, np.uint8), seed=2)
    tracker = FaceTracker(TrackerConfig(), CAM)
    builder = TorsoReferenceBuilder(frames=5)
    twisted, carried = [], []
    for i in range(12):
        psi = 0.0 if i < 6 else np.radians(35.0)
        head = TORSO.compose(about_axis(psi, neck))
        img = scene.render(head, neck=TORSO, neck_twist=lambda y, p=psi: p * twist_share(y, neck))
        obs = tracker.process(Frame(i, i * 33_000_000, img))
        assert obs.found and obs.head_pose is not None and obs.head_pose.valid
        hp = obs.head_pose
        ref = builder.add(RigidPose(hp.R, np.asarray(hp.tvec_mm, float)), float(hp.euler_deg()[0]))
        if i < 8:  # the rest pose, and the tracker's smoothing settling on the turned head
            continue
        assert ref is not None and abs(np.degrees(ref.psi_rad) - 35.0) < 10.0
        for u, v, px in seen_neck_points(psi, neck):
            a = mapper.locate(obs, px[0], px[1], camera=CAM, torso=ref)
            b = mapper.locate(obs, px[0], px[1], camera=CAM)
            if a.surface == "neck" and b.surface == "neck":
                twisted.append(np.hypot(a.chart_mm[0] - u, a.chart_mm[1] - v))
                carried.append(np.hypot(b.chart_mm[0] - u, b.chart_mm[1] - v))
    assert len(twisted) >= 30
    print(f"\nrendered 35 deg turn: twisted {np.median(twisted):.1f} mm, carried {np.median(carried):.1f} mm (median)")
    assert np.median(twisted) < 0.6 * np.median(carried)
    assert np.median(carried) - np.median(twisted) > 5.0


def test_a_face_session_with_neck_zones_judges_the_neck_on_the_torso():
    """The pipeline: a neck plan builds a torso reference (a face-only plan does not); before the rest pose a tip
    on the neck is denied neck_unreferenced; with it, the lookup is the skin's rest chart point on a turned head,
    the twist sigma is in the decision and its record, and arming again starts a new rest pose."""
    from guidance.gate import Reason
    from guidance.pipeline import GuidancePipeline
    from guidance.session.records import frame_record, torso_state
    from guidance.vision.handpiece.profiles import load_handpiece_profile
    from guidance.vision.handpiece.tracker import TipObservation
    from guidance.zones.neck_twist import TorsoState
    from guidance.zones.plan import load_plan

    plan = load_plan("neck_decolletage")
    pipe = GuidancePipeline(plan, load_handpiece_profile(plan.handpiece_profile), vision=False)
    assert pipe.torso_builder is not None
    face_only = load_plan("full_face")
    assert GuidancePipeline(face_only, load_handpiece_profile(face_only.handpiece_profile),
                            vision=False).torso_builder is None
    neck = pipe.mapper.chart.surfaces["neck"]
    psi = np.radians(30.0)
    head = TORSO.compose(about_axis(psi, neck))
    obs = observation(head, load_canonical_face())
    u, v, px = next((u, v, px) for u, v, px in seen_neck_points(psi, neck) if abs(u) < 5 and v == 160.0)
    t = 1_000_000_000
    frame = Frame(0, t, np.zeros((480, 640, 3), np.uint8))
    obs = FaceObservation(0, t, t, True, 1.0, obs.landmarks, obs.landmarks, None, obs.head_pose, False)
    tip = TipObservation(0, t, True, "", (float(px[0]), float(px[1])), (0.0, 0.0, 470.0), (0.0, 0.0, 0.0), 0.0, 1.0,
                         0.3, 0.2, (0, 1), (0.0, 0.0, 0.0), (0.0, 0.0, 400.0), True, t)
    lookup, d, _ = pipe.judge(frame, obs, tip, t + 5_000_000, armed=True, lookahead_ms=10.0, camera=CAM,
                              torso=TorsoState(None))
    assert lookup.surface == "neck" and not d.permit and Reason.NECK_UNREFERENCED in d.reasons
    ref = TorsoReference(TORSO, head_turn_rad(TORSO.R, head.R))
    lookup, d, _ = pipe.judge(frame, obs, tip, t + 5_000_000, armed=True, lookahead_ms=10.0, camera=CAM,
                              torso=TorsoState(ref))
    assert lookup.zone == "neck_anterior" and np.hypot(lookup.chart_mm[0] - u, lookup.chart_mm[1] - v) < 0.05
    assert Reason.NECK_UNREFERENCED not in d.reasons
    assert d.twist_sigma_mm == pytest.approx(twist_sigma_mm(ref, neck))
    assert d.pose_sigma_mm == 21.4  # the face pose's placement of the neck (zones/face_pose_bias.py)
    # recorded, and read back as the same torso
    from guidance.pipeline import FrameResult
    result = FrameResult(frame, obs, tip, lookup, d, None, t, t, t, t, t, True, 10.0, None, torso=TorsoState(ref))
    r = frame_record(result, 1.0)
    assert r.torso.ready and r.gate.twist_sigma_mm == pytest.approx(d.twist_sigma_mm)
    assert r.gate.pose_sigma_mm == pytest.approx(21.4)
    back = torso_state(r).reference
    assert back.psi_rad == pytest.approx(ref.psi_rad) and np.allclose(back.rest.t_mm, TORSO.t_mm)
    for _ in range(15):
        pipe.torso_builder.add(TORSO, 0.0)
    assert pipe.torso_builder.rest is not None
    pipe.set_armed(True, "test")
    assert pipe.torso_builder.rest is None


def test_a_sternum_patch_seen_at_rest_carries_the_torso_when_the_client_moves():
    """With the patch seen during the rest, the torso frame follows it (a client turning and shifting in the chair);
    without the patch now the torso is not known; without a patch at rest the torso is taken as still."""
    sternum = RigidPose(np.eye(3), np.array([0.0, 250.0, 15.0]))  # on the torso, below the notch
    b = TorsoReferenceBuilder(frames=3)
    for _ in range(3):
        b.add(TORSO, 0.0, TORSO.compose(sternum))
    assert b.patch_rest is not None
    moved = TORSO.compose(RigidPose(cv2.Rodrigues(np.array([0.0, 0.1, 0.0]))[0], np.array([12.0, 0.0, -5.0])))
    head = moved.compose(RigidPose(cv2.Rodrigues(np.array([0.0, 0.5, 0.0]))[0], np.zeros(3)))
    ref = b.add(head, None, moved.compose(sternum))
    assert np.allclose(ref.rest.R, moved.R) and np.allclose(ref.rest.t_mm, moved.t_mm)
    assert ref.psi_rad == pytest.approx(0.5, abs=1e-9)  # the head's turn relative to the moved torso, not the camera
    assert b.add(head, None, None) is None  # the torso's patch not seen now: no torso
    still = TorsoReferenceBuilder(frames=3)
    for _ in range(3):
        still.add(TORSO, 0.0)
    assert still.patch_rest is None
    ref = still.add(head, None, moved.compose(sternum))
    assert np.allclose(ref.rest.t_mm, TORSO.t_mm)  # no patch at rest: the rest frame, taken as still


def test_a_band_session_finds_the_decolletage_on_the_torso_whatever_the_head_does(mapper):
    """With the torso known the face chart's décolletage plane stands on it: a point there maps to its own chart
    point with the head turned 30 degrees; without the torso it is not looked up (off-surface)."""
    neck = mapper.chart.surfaces["neck"]
    dec = mapper.chart.surfaces["decolletage"]
    head = TORSO.compose(about_axis(np.radians(30.0), neck))
    torso = TorsoReference(TORSO, head_turn_rad(TORSO.R, head.R))
    for x, y in ((20.0, 260.0), (-45.0, 300.0)):
        p = TORSO.apply(np.array([[x, y, dec["plane_z_mm"]]]))
        px, _ = cv2.projectPoints(p.reshape(1, 1, 3), np.zeros(3), np.zeros(3), CAM.K, CAM.dist)
        u, v = px.reshape(2)
        lookup, cos = mapper.locate_on_band(head.R, head.t_mm, u, v, CAM, neck=True, torso=torso)
        assert lookup.zone == "decolletage" and lookup.surface == "decolletage" and cos == 1.0
        assert np.allclose(lookup.chart_mm, (x, y), atol=1e-6)
        off, _ = mapper.locate_on_band(head.R, head.t_mm, u, v, CAM, neck=True, torso=None)
        assert off.surface is None  # the torso not known yet: nothing there


def test_a_touched_notch_shears_the_neck_and_moves_the_decolletage(mapper):
    """A client whose notch lies 12 mm lower and 6 mm to the side of the model's (or a rest frame off by that much
    there): with the touched notch's offset the sheared neck maps each of its skin points to its own chart point, at
    rest and turned; the décolletage plane hangs from the notch. The builder turns the touched camera point into the
    offset, and with a notch required gives no torso before it."""
    neck = mapper.chart.surfaces["neck"]
    dec = mapper.chart.surfaces["decolletage"]
    offset = np.array([6.0, 12.0, -3.0])
    for turn_deg in (0.0, 35.0):
        head = TORSO.compose(about_axis(np.radians(turn_deg), neck))
        torso = TorsoReference(TORSO, head_turn_rad(TORSO.R, head.R), tuple(offset))
        n = 0
        for u in np.arange(-40.0, 41.0, 20.0):
            for v in (100.0, 150.0, 195.0):
                p, _ = neck_skin_points(torso, neck, np.array([[u, v]]))
                assert np.allclose(p[0] - neck_skin_points(TorsoReference(TORSO, torso.psi_rad), neck,
                                                           np.array([[u, v]]))[0][0],
                                   offset * (1.0 - float(twist_share(v, neck))))  # the shear
                px, _ = cv2.projectPoints(TORSO.apply(p).reshape(1, 1, 3), np.zeros(3), np.zeros(3), CAM.K, CAM.dist)
                lookup, _ = mapper.locate_on_band(head.R, head.t_mm, *px.reshape(2), CAM, neck=True, torso=torso)
                if lookup.surface != "neck":
                    continue  # under the face mesh, or on another surface in front
                assert np.allclose(lookup.chart_mm, (u, v), atol=0.02), (turn_deg, u, v, lookup.chart_mm)
                unsheared, _ = mapper.locate_on_band(head.R, head.t_mm, *px.reshape(2), CAM, neck=True,
                                                     torso=TorsoReference(TORSO, torso.psi_rad))
                if v > 180.0 and unsheared.chart_mm is not None:  # without the notch: off by most of the offset
                    assert np.hypot(*(np.asarray(unsheared.chart_mm) - (u, v))) > 6.0
                n += 1
        assert n >= 8, n
        x, y = 20.0, 280.0
        p = TORSO.apply(np.array([[x, y, dec["plane_z_mm"]]]) + offset)
        px, _ = cv2.projectPoints(p.reshape(1, 1, 3), np.zeros(3), np.zeros(3), CAM.K, CAM.dist)
        lookup, _ = mapper.locate_on_band(head.R, head.t_mm, *px.reshape(2), CAM, neck=True, torso=torso)
        assert lookup.surface == "decolletage" and np.allclose(lookup.chart_mm, (x, y), atol=1e-6)
    b = TorsoReferenceBuilder(frames=3, neck=neck, notch_required=True)
    for _ in range(3):
        assert b.add(TORSO, 0.0) is None  # the rest made, the notch not touched: no torso yet
    notch_cam = TORSO.apply((notch_point(neck) + offset)[None])[0]
    ref = b.add(TORSO, 0.0, notch_cam_mm=notch_cam)
    assert ref is not None and np.allclose(ref.notch_offset_mm, offset)
    with pytest.raises(ValueError, match="neck"):
        TorsoReferenceBuilder(notch_required=True)


def test_a_face_session_finds_the_decolletage_on_the_torso_when_the_head_turns(mapper):
    """Face sessions: the décolletage stands on the torso's rest frame like the neck. With the head turned 35° on a
    still torso a décolletage point maps to its own chart point; carried by the head (no torso) it swings tens of mm.
    The pipeline builds a torso for a décolletage-only plan and denies its points until the rest pose is made."""
    from guidance.gate import Reason
    from guidance.pipeline import GuidancePipeline
    from guidance.vision.handpiece.profiles import load_handpiece_profile
    from guidance.vision.handpiece.tracker import TipObservation
    from guidance.zones.neck_twist import TorsoState
    from guidance.zones.plan import load_plan

    neck = mapper.chart.surfaces["neck"]
    dec = mapper.chart.surfaces["decolletage"]
    head = TORSO.compose(about_axis(np.radians(35.0), neck))
    obs = observation(head, load_canonical_face())
    torso = TorsoReference(TORSO, head_turn_rad(TORSO.R, head.R))
    for x, y in ((30.0, 235.0), (-50.0, 250.0)):
        p = TORSO.apply(np.array([[x, y, dec["plane_z_mm"]]]))
        px, _ = cv2.projectPoints(p.reshape(1, 1, 3), np.zeros(3), np.zeros(3), CAM.K, CAM.dist)
        u, v = px.reshape(2)
        on_torso = mapper.locate(obs, u, v, camera=CAM, torso=torso)
        assert on_torso.surface == "decolletage" and np.allclose(on_torso.chart_mm, (x, y), atol=1e-6)
        carried = mapper.locate(obs, u, v, camera=CAM)
        assert carried.chart_mm is None or np.hypot(carried.chart_mm[0] - x, carried.chart_mm[1] - y) > 20.0
    base = load_plan("neck_decolletage")
    only_dec = dataclasses.replace(base, zones={"decolletage": base.zones["decolletage"]})
    pipe = GuidancePipeline(only_dec, load_handpiece_profile(only_dec.handpiece_profile), vision=False)
    assert pipe.torso_builder is not None and not pipe.neck_planned
    p = TORSO.apply(np.array([[30.0, 235.0, dec["plane_z_mm"]]]))
    px, _ = cv2.projectPoints(p.reshape(1, 1, 3), np.zeros(3), np.zeros(3), CAM.K, CAM.dist)
    t = 1_000_000_000
    frame = Frame(0, t, np.zeros((480, 640, 3), np.uint8))
    front = observation(TORSO, load_canonical_face())
    front = FaceObservation(0, t, t, True, 1.0, front.landmarks, front.landmarks, None, front.head_pose, False)
    tip = TipObservation(0, t, True, "", tuple(map(float, px.reshape(2))), (0.0, 0.0, 470.0), (0.0, 0.0, 0.0), 0.0,
                         1.0, 0.3, 0.2, (0, 1), (0.0, 0.0, 0.0), (0.0, 0.0, 400.0), True, t)
    lookup, d, _ = pipe.judge(frame, front, tip, t + 5_000_000, armed=True, lookahead_ms=10.0, camera=CAM,
                              torso=TorsoState(None))
    assert lookup.surface == "decolletage" and not d.permit and Reason.NECK_UNREFERENCED in d.reasons
    lookup, d, _ = pipe.judge(frame, front, tip, t + 5_000_000, armed=True, lookahead_ms=10.0, camera=CAM,
                              torso=TorsoState(TorsoReference(TORSO, 0.0)))
    assert lookup.zone == "decolletage" and Reason.NECK_UNREFERENCED not in d.reasons and d.twist_sigma_mm is None
    assert d.pose_sigma_mm == 33.4 and not d.permit and Reason.NEAR_BOUNDARY in d.reasons  # 23 mm below the notch


def test_guidance_run_says_why_a_face_sessions_neck_is_mostly_denied():
    from guidance.commands.run import face_pose_note

    assert "--head-band" in face_pose_note("neck_decolletage", None) and "near_boundary" in face_pose_note(
        "neck_decolletage", None)
    assert face_pose_note("neck_decolletage", "head_band_default") == ""
    assert face_pose_note("full_face", None) == "" and face_pose_note("body_decolletage", None) == ""


def test_a_face_sessions_scalp_carries_the_face_pose_sigma_too():
    """Above the forehead a face session maps onto the canonical scalp ellipsoid, 5-22 mm from the face's own
    forehead edge on the training faces: the gate carries that as it does the neck's, so a scalp point 12 mm
    inside a planned zone is denied near_boundary, and one 40 mm inside is not."""
    from guidance.zones.face_pose_bias import face_pose_sigma_mm

    pose = face_pose_sigma_mm("scalp")
    assert pose is not None and pose >= 20.0
    g = GateInput(armed=True, t_capture_ns=10**9, face_found=True, t_face_ns=10**9, presence=0.9, tip_valid=True,
                  tip_confidence=0.9, zone="forehead_central", zone_kind=ZoneKind.TREAT, zone_planned=True,
                  boundary_mm=12.0, speed_mm_s=0.0, pipeline_latency_ms=10.0, pose_sigma_mm=pose)
    now = 10**9 + 5_000_000
    d = decide(GatePolicy(), g, now)
    assert not d.permit and d.reason == Reason.NEAR_BOUNDARY and d.pose_sigma_mm == pose
    assert decide(GatePolicy(), GateInput(**{**g.__dict__, "boundary_mm": 40.0}), now).permit


def test_a_face_session_judges_a_point_above_the_forehead_with_the_scalp_pose_sigma():
    """The pipeline, not only the gate: a face plan's tip high above the forehead (on the scalp ellipsoid, past the
    mesh's extended edge) carries the scalp's face-pose sigma and is not permitted; one on the mid-forehead (the
    mesh) carries none."""
    from guidance.pipeline import GuidancePipeline
    from guidance.samples import fetch
    from guidance.vision.handpiece.profiles import load_handpiece_profile
    from guidance.vision.handpiece.tracker import TipObservation
    from guidance.zones.face_pose_bias import face_pose_sigma_mm
    from guidance.zones.plan import load_plan

    image = cv2.imread(str(fetch("single_face.jpg")))
    h, w = image.shape[:2]
    cam = CameraModel.default(w, h)
    obs = FaceTracker(TrackerConfig(smoothing=False), cam).process(Frame(0, 10**9, image))
    assert obs.found and obs.head_pose is not None and obs.head_pose.valid
    plan = load_plan("full_face")
    pipe = GuidancePipeline(plan, load_handpiece_profile(plan.handpiece_profile), vision=False)
    lm = obs.landmarks[:, :2]
    down = lm[152] - lm[9]
    t = obs.t_capture_ns
    for px, surface, sigma in ((lm[10] - 0.25 * down, "scalp", face_pose_sigma_mm("scalp")), (lm[151], "face", None)):
        tip = TipObservation(0, t, True, "", (float(px[0]), float(px[1])), (0.0, 0.0, 470.0), (0.0, 0.0, 0.0), 0.0,
                             1.0, 0.3, 0.2, (0, 1), (0.0, 0.0, 0.0), (0.0, 0.0, 400.0), True, t)
        lookup, d, _ = pipe.judge(Frame(0, t, image), obs, tip, t + 5_000_000, armed=True, lookahead_ms=10.0,
                                  camera=cam)
        assert lookup.surface == surface and d.pose_sigma_mm == sigma, (surface, lookup, d)
        if surface == "scalp":
            assert not d.permit
