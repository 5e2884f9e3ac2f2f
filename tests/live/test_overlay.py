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
