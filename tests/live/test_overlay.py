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
