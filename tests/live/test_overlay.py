import numpy as np

from guidance.live.overlay import BLUE, VERMILION, OverlayState, ZoneOutline, ZoneProgress, draw_overlay


def _frame():
    return np.full((480, 640, 3), 127, np.uint8)


def _banner_mean(img):
    return img[: 480 // 9].reshape(-1, 3).mean(0)


def test_permit_and_deny_banners_differ_in_colour_and_pattern():
    permit = draw_overlay(_frame(), OverlayState(armed=True, permit=True, zone="cheek_left"))
    deny = draw_overlay(_frame(), OverlayState(armed=True, permit=False, reason="near_boundary"))
    disarmed = draw_overlay(_frame(), OverlayState(armed=False))
    # blue-dominant for permit, red-dominant (vermilion) for deny, grey when disarmed
    p, d, g = _banner_mean(permit), _banner_mean(deny), _banner_mean(disarmed)
    assert p[0] > p[2] and d[2] > d[0]
    assert abs(g[0] - g[2]) < 10
    # deny is striped: many more dark pixels in the band than permit (not colour alone)
    dark = lambda img: (img[: 480 // 9].max(axis=2) < 30).mean()  # noqa: E731
    assert dark(deny) > 3 * dark(permit)


def test_layers_toggle_what_is_drawn():
    outline = ZoneOutline("cheek_left", "planned", [np.array([[100, 200], [300, 200], [300, 400], [100, 400]], float)])
    on = draw_overlay(_frame(), OverlayState(outlines=[outline]))
    st = OverlayState(outlines=[outline])
    st.layers["zones"] = False
    off = draw_overlay(_frame(), st)
    assert (on[300, 100] != 127).any()
    assert (off[300, 100] == 127).all()


def test_progress_bar_fill_grows_with_fraction():
    def filled(frac):
        img = draw_overlay(_frame(), OverlayState(progress=[ZoneProgress("chin", frac)]))
        region = img[60:140, 400:640].reshape(-1, 3)
        return (np.abs(region.astype(int) - BLUE).sum(1) < 10).sum()
    assert filled(0.0) < filled(0.5) < filled(1.0)


def test_overlay_never_modifies_the_input_frame():
    f = _frame()
    draw_overlay(f, OverlayState(armed=True, permit=False, tip_px=(320, 240), footprint_radius_px=10))
    assert (f == 127).all()
    assert VERMILION != BLUE


def test_a_body_plan_draws_its_zones_and_pulses_through_the_patch_pose():
    """Body plans: the zones of the patch chart are placed on the frame through the patch's pose (they were not
    drawn at all before), the card as an exclusion around the patch's own pixel, pulses where they landed."""
    import cv2

    from guidance.live.overlay_scene import OverlayScene
    from guidance.vision.body.patch import PatchObservation
    from guidance.vision.capture.camera import CameraModel
    from guidance.zones.body_atlas import load_body_area, plan_atlas
    from guidance.zones.body_mapper import PatchMapper
    from guidance.zones.chart import load_chart
    from guidance.zones.coverage import CoverageMap
    from guidance.zones.plan import load_plan

    plan = load_plan("body_decolletage")
    atlas = plan_atlas(plan)
    coverage = CoverageMap.for_plan(plan)
    scene = OverlayScene(plan, load_chart(), coverage, 10.0)
    assert {n for n, _, _ in scene.body_outlines} == set(atlas.zones) and not scene.outlines
    cam = CameraModel.default(640, 480)
    mapper = PatchMapper(load_body_area("decolletage"))
    patch = PatchObservation(0, 0, True, "", (0.2, -0.1, 0.05), (10.0, -5.0, 450.0), 0.3, (20, 21), None)
    centre = mapper.project(patch, np.array([[0.0, 0.0]]), cam)[0]
    coverage.deposit_pulse(30.0, -30.0, 10.0)
    scene.add_pulse(30.0, -30.0)
    st = scene.fill(OverlayState(), None, None, lambda uv: mapper.project(patch, uv, cam))
    kinds = {o.name: o.kind for o in st.outlines}
    assert kinds["patch"] == "exclusion" and kinds["decolletage_upper_left"] == "planned"
    assert kinds["decolletage_lower_right"] == "other"  # not in this plan
    card = next(o for o in st.outlines if o.name == "patch").polylines_px[0].astype(np.float32)
    assert cv2.pointPolygonTest(card, (float(centre[0]), float(centre[1])), False) > 0
    for o in st.outlines:
        for p in o.polylines_px:
            assert ((p >= 0) & (p < [640, 480])).all(), o.name  # on the frame
    pulse_px = mapper.project(patch, np.array([[30.0, -30.0]]), cam)[0]
    assert st.coverage_px is not None and np.allclose(st.coverage_px[0, :2], pulse_px) and st.coverage_px[0, 2] >= 1
    # no patch this frame: nothing drawn for the zones, the progress bars still there
    st2 = scene.fill(OverlayState(), None, None, lambda uv: mapper.project(None, uv, cam))
    assert st2.outlines == [] and st2.coverage_px is None and len(st2.progress) == 3


def test_a_prompt_is_written_under_the_banner_and_wrapped():
    """The step asked for (a scalp session's touch) in yellow under the banner, wrapped to stay in the picture."""
    ask = "touch 4 of 5: in front of the right ear, and hold the tip still"
    st = OverlayState(armed=True, reason="band_unregistered")
    plain = draw_overlay(_frame(), st)
    asked = draw_overlay(_frame(), OverlayState(armed=True, reason="band_unregistered", prompt=ask))
    below = slice(480 // 9, 480 // 9 + 120)
    diff = np.abs(asked[below].astype(int) - plain[below].astype(int)).sum(axis=2) > 60
    assert diff.mean() > 0.01  # written there
    yellowish = (asked[below][..., 2] > 180) & (asked[below][..., 1] > 180) & (asked[below][..., 0] < 120)
    assert yellowish.sum() > 200
    rows = np.flatnonzero(diff.any(axis=1))
    assert rows.max() - rows.min() > 30  # more than one line (about 20 px each): wrapped
    assert not diff[:, int(640 * 0.75):].any()  # and kept left of the progress bars
    assert np.array_equal(draw_overlay(_frame(), st)[below], plain[below])


def test_a_scalp_session_draws_the_scalp_zones_through_the_band_head_and_hides_the_far_side():
    """Scalp sessions: the scalp's zones (not drawn at all before) follow the head the band carries, closed where a
    zone is seen whole, in pieces where the head turns part of it away; pulses where they landed, hidden behind."""
    import cv2

    from guidance.live.overlay_scene import OverlayScene, project_scalp_chart
    from guidance.vision.capture.camera import CameraModel
    from guidance.vision.rigid import RigidPose
    from guidance.zones.chart import load_chart
    from guidance.zones.coverage import CoverageMap
    from guidance.zones.plan import load_plan

    plan = load_plan("scalp")
    chart = load_chart()
    sc = chart.surfaces["scalp"]
    coverage = CoverageMap.for_plan(plan)
    scene = OverlayScene(plan, chart, coverage, 10.0)
    scalp_zones = {n for n, z in coverage.atlas.zones.items() if z.surface == "scalp"}
    assert {n for n, _, _ in scene.offmesh_outlines["scalp"]} == scalp_zones
    cam = CameraModel.default(640, 480)

    def head(yaw_deg: float) -> RigidPose:  # the cranium 520 mm away, turned about its own vertical
        R = cv2.Rodrigues(np.array([0.0, np.radians(yaw_deg), 0.0]))[0]
        return RigidPose(R, np.array([0.0, 20.0, 520.0]) - R @ np.asarray(sc["centre_mm"], float))

    front, back = np.array([[0.0, -70.0]]), np.array([[150.0, -70.0]])  # the frontal hairline, far round the back
    assert np.isfinite(project_scalp_chart(head(0), sc, cam, front)).all()
    assert np.isnan(project_scalp_chart(head(0), sc, cam, back)).all()
    assert np.isfinite(project_scalp_chart(head(180), sc, cam, back)).all()
    coverage.deposit_pulse(0.0, -70.0, 10.0)
    scene.add_pulse(0.0, -70.0)
    for yaw, pulse_seen in ((0, True), (180, False)):
        st = scene.fill(OverlayState(), None, None, None,
                        {"scalp": lambda uv, y=yaw: project_scalp_chart(head(y), sc, cam, uv)})
        drawn = {o.name: o for o in st.outlines}
        assert set(drawn) <= scalp_zones and drawn
        assert all(o.kind == ("planned" if o.name in plan.zones else "other") for o in drawn.values())
        assert any(not o.closed for o in drawn.values())  # a zone half round the head is drawn in pieces
        for o in drawn.values():
            for p in o.polylines_px:
                assert np.isfinite(p).all() and len(p) > 1
        assert (st.coverage_px is not None) == pulse_seen
    st = scene.fill(OverlayState(), None, None, None, {"scalp": lambda uv: project_scalp_chart(head(0), sc, cam, uv)})
    assert np.allclose(st.coverage_px[0, :2], project_scalp_chart(head(0), sc, cam, front)[0])
    img = draw_overlay(_frame(), st)
    assert (np.abs(img.astype(int) - draw_overlay(_frame(), OverlayState()).astype(int)).sum(axis=2) > 60).mean() > 0.005


def test_the_landmark_to_touch_is_marked_on_the_face():
    """A touch registration under way: a ring where the landmark asked for is on this frame's face, none once
    registered or without a face; the ring is drawn there."""
    from guidance.live.run import touch_target
    from guidance.vision.face.head_band import BandHead, Registration
    from guidance.vision.face.touch_registration import TOUCH_POINTS

    landmarks = np.c_[np.random.default_rng(1).uniform(100, 380, (468, 2)), np.zeros(468)]  # inside the 640x480 frame
    nan = float("nan")
    asking = Registration(False, "head_band_not_registered: touch 3 of 5: the chin (mouth closed), and hold the tip "
                          "still", None, 2, nan, nan, "touch")
    band = BandHead("unregistered", None, True, "", asking)
    assert touch_target(band, landmarks) == tuple(landmarks[TOUCH_POINTS[2].landmark][:2])
    assert TOUCH_POINTS[2].name == "chin"
    assert touch_target(band, None) is None
    done = Registration(True, "", None, 5, 0.8, nan, "touch")
    assert touch_target(BandHead("ok", None, True, "", done), landmarks) is None
    face_only = Registration(False, "head_band_not_registered: face the camera and keep the head still", None, 0,
                             nan, nan, "touch")
    assert touch_target(BandHead("unregistered", None, True, "", face_only), landmarks) is None
    # the sixth touch, the sternal notch: not a face landmark, its ring where the face pose puts the model's notch
    from guidance.vision.face.touch_registration import NOTCH_POINT

    notch = Registration(False, f"head_band_not_registered: touch 6 of 6: {NOTCH_POINT.words}, and hold the tip "
                         "still", None, 5, nan, nan, "touch")
    assert touch_target(BandHead("unregistered", None, True, "", notch), landmarks, (320.0, 440.0)) == (320.0, 440.0)
    assert touch_target(BandHead("unregistered", None, True, "", notch), landmarks) is None
    x, y = touch_target(band, landmarks)
    plain = draw_overlay(_frame(), OverlayState())
    marked = draw_overlay(_frame(), OverlayState(target_px=(x, y)))
    changed = np.argwhere(np.abs(marked.astype(int) - plain.astype(int)).sum(axis=2) > 60)
    assert len(changed) > 50
    assert np.abs(changed[:, 1] - x).max() <= 28 and np.abs(changed[:, 0] - y).max() <= 28  # around the landmark


def test_the_neck_zones_are_drawn_twisted_on_the_torso():
    """Plans with neck zones: the neck's zones follow the skin as it twists under the turned head (a chart point
    lands where the twisted skin is), the far side hidden; the neck's pulses through the same projection."""
    import cv2

    from guidance.live.overlay_scene import OverlayScene, project_neck_chart
    from guidance.vision.capture.camera import CameraModel
    from guidance.vision.rigid import RigidPose
    from guidance.zones.chart import load_chart
    from guidance.zones.coverage import CoverageMap
    from guidance.zones.neck_twist import TorsoReference, twist_share
    from guidance.zones.plan import load_plan

    plan = load_plan("neck_decolletage")
    chart = load_chart()
    neck = chart.surfaces["neck"]
    coverage = CoverageMap.for_plan(plan)
    scene = OverlayScene(plan, chart, coverage, 10.0)
    neck_zones = {n for n, z in coverage.atlas.zones.items() if z.surface == "neck"}
    assert {n for n, _, _ in scene.offmesh_outlines["neck"]} == neck_zones
    cam = CameraModel.default(640, 480)
    rest = RigidPose(np.eye(3), np.array([0.0, -85.0, 470.0]))
    psi = np.radians(40.0)
    torso = TorsoReference(rest, psi)
    u, v = 20.0, 160.0
    # where the skin of chart (u, v) is now: turned by psi * w(v) about the neck's axis, on the still torso
    a = np.array([neck["axis_x_mm"], 0.0, neck["axis_z_mm"]])
    R = cv2.Rodrigues(np.array([0.0, psi * float(twist_share(v, neck)), 0.0]))[0]
    al = u / neck["radius_mm"]
    p_rest = np.array([a[0] + neck["radius_mm"] * np.sin(al), v, a[2] - neck["radius_mm"] * np.cos(al)])
    p_now = rest.apply((R @ (p_rest - a) + a)[None])
    want, _ = cv2.projectPoints(p_now.reshape(1, 1, 3), np.zeros(3), np.zeros(3), cam.K, cam.dist)
    got = project_neck_chart(torso, neck, cam, np.array([[u, v]]))
    assert np.allclose(got, want.reshape(1, 2), atol=1e-6)
    assert np.isnan(project_neck_chart(torso, neck, cam, np.array([[170.0, v]]))).all()  # round the back
    coverage.deposit_pulse(u, v, 10.0)
    scene.add_pulse(u, v)
    st = scene.fill(OverlayState(), None, None, None, {"neck": lambda q: project_neck_chart(torso, neck, cam, q)})
    assert {o.name for o in st.outlines} == neck_zones
    assert st.coverage_px is not None and np.allclose(st.coverage_px[0, :2], got[0])
    st = scene.fill(OverlayState(), None, None)  # without the torso (not referenced yet): nothing on the neck
    assert not st.outlines and st.coverage_px is None
    # the décolletage on the torso, moved by a touched notch's offset; its pulses through the same projection
    from guidance.live.overlay_scene import project_decolletage_chart

    dec = chart.surfaces["decolletage"]
    assert [n for n, _, _ in scene.offmesh_outlines["decolletage"]] == ["decolletage"]
    moved = TorsoReference(rest, psi, (4.0, 9.0, -2.0))
    want, _ = cv2.projectPoints(rest.apply(np.array([[40.0, 240.0, dec["plane_z_mm"]]]) + [[4.0, 9.0, -2.0]]
                                           @ rest.R.T).reshape(1, 1, 3), np.zeros(3), np.zeros(3), cam.K, cam.dist)
    got = project_decolletage_chart(moved, dec, cam, np.array([[40.0, 240.0]]))
    assert np.allclose(got, want.reshape(1, 2), atol=1e-6)
    coverage.deposit_pulse(40.0, 240.0, 10.0)
    scene.add_pulse(40.0, 240.0)
    st = scene.fill(OverlayState(), None, None, None,
                    {"decolletage": lambda q: project_decolletage_chart(moved, dec, cam, q)})
    assert {o.name for o in st.outlines} == {"decolletage"}
    assert st.coverage_px is not None and np.allclose(st.coverage_px[-1, :2], got[0])


def test_the_notch_ring_is_where_the_face_pose_puts_the_models_notch():
    """A neck plan: the ring for the sixth touch is the model's notch through this frame's face pose, below the
    chin in the picture; a face-only plan has none."""
    import cv2

    from guidance.live.run import _notch_px
    from guidance.pipeline import FrameResult, GuidancePipeline
    from guidance.vision.capture.sources import Frame
    from guidance.vision.face.head_pose import HeadPose
    from guidance.vision.face.tracker import FaceObservation
    from guidance.vision.handpiece.profiles import load_handpiece_profile
    from guidance.zones.neck_twist import notch_point
    from guidance.zones.plan import load_plan

    plan = load_plan("neck_decolletage")
    pipe = GuidancePipeline(plan, load_handpiece_profile(plan.handpiece_profile), vision=False)
    frame = Frame(0, 0, np.zeros((480, 640, 3), np.uint8))
    pipe._tracker_for(frame)
    rvec, tvec = np.zeros(3), np.array([0.0, -120.0, 520.0])
    pose = HeadPose(rvec, tvec, 0.3, True, True, 0)
    lm = np.zeros((468, 3))
    face = FaceObservation(0, 0, 0, True, 1.0, lm, lm, None, pose, False)
    result = FrameResult(frame, face, None, None, None, None, 0, 0, 0, 0, 0, True, 10.0, None)
    x, y = _notch_px(result, pipe)
    cam = pipe.hand.camera
    want, _ = cv2.projectPoints((notch_point(pipe.mapper.chart.surfaces["neck"]) + tvec).reshape(1, 1, 3),
                                np.zeros(3), np.zeros(3), cam.K, cam.dist)
    assert np.allclose((x, y), want.reshape(2)) and y > 240.0  # below the picture's middle: under the chin
    face_only = load_plan("full_face")
    other = GuidancePipeline(face_only, load_handpiece_profile(face_only.handpiece_profile), vision=False)
    other._tracker_for(frame)
    assert _notch_px(result, other) is None
