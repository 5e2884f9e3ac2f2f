"""The skin reference patch: found and posed on rendered bodies, held briefly and flagged, and the plane mapping's
curvature bound holds on skin as curved as the area's smallest radius."""

from __future__ import annotations

import math

import numpy as np
import pytest

from guidance.sim.body import BodyRenderer, BodyScene
from guidance.vision.body.patch import HELD, PatchObservation, PatchTracker
from guidance.vision.capture.camera import CameraModel
from guidance.vision.rigid import rotation_angle_deg
from guidance.zones.body_atlas import load_body_area
from guidance.zones.body_mapper import PatchMapper

CAM = CameraModel.default(640, 480)


def _frame(renderer: BodyRenderer, t_s: float, with_patch: bool = True) -> tuple[np.ndarray, object]:
    skin = renderer.scene.skin_pose(t_s)
    bg = np.clip(renderer.body_image(skin) + 0.5, 0, 255).astype(np.uint8)
    items = [renderer.patch_item(skin, np.zeros(3))] if with_patch else []
    img, _ = renderer.markers.render(bg, items, noise_sigma=1.5, rng=np.random.default_rng(int(t_s * 1000)))
    return img, skin


@pytest.mark.parametrize("tilt,radius", [((14.0, -10.0), 400.0), ((-25.0, 20.0), 0.0), ((5.0, 30.0), 250.0)])
def test_the_patch_pose_and_the_chart_point_of_a_pixel_on_flat_skin(tilt, radius):
    scene = BodyScene(curvature_radius_mm=radius, tilt_deg=tilt, motion_mm=0.0, sway_deg=0.0)
    renderer = BodyRenderer(CAM, scene)
    tracker = PatchTracker(CAM)
    img, skin = _frame(renderer, 0.0)
    obs = tracker.process(img, 0, 0)
    assert obs.found and not obs.held and len(obs.marker_ids) == 8
    truth = renderer.patch_pose(skin)
    assert np.linalg.norm(obs.pose.t_mm - truth.t_mm) < 1.5  # mostly depth, along the line of sight
    assert rotation_angle_deg(obs.pose.R, truth.R) < 1.0
    # a skin point near the card (where any skin is nearly the plane): its pixel maps back to its chart point
    mapper = PatchMapper(load_body_area("abdomen"))
    for u, v in ((35.0, 0.0), (0.0, -60.0), (-30.0, 55.0)):
        p, _ = scene.skin_point(u, v)
        px = renderer.markers.project(skin.apply(p))[0]
        look = mapper.locate(obs, px[0], px[1], CAM)
        err = math.hypot(look.chart_mm[0] - u, look.chart_mm[1] - v)
        assert look.in_range and look.surface == "body" and look.zone != "patch"
        assert err < 0.6 + look.curvature_mm, (u, v, err, look.curvature_mm)
        assert look.mapping_sigma_mm >= look.curvature_mm


def test_a_hidden_patch_is_held_for_100_ms_with_its_own_time_then_lost():
    renderer = BodyRenderer(CAM, BodyScene(motion_mm=0.0, sway_deg=0.0))
    tracker = PatchTracker(CAM)
    img, _ = _frame(renderer, 0.0)
    first = tracker.process(img, 1_000_000_000, 0)
    bare, _ = _frame(renderer, 0.0, with_patch=False)
    held = tracker.process(bare, 1_033_000_000, 1)
    assert held.found and held.held and held.reason == HELD and held.t_capture_ns == first.t_capture_ns
    assert held.rvec == first.rvec
    gone = tracker.process(bare, 1_101_000_000, 2)
    assert not gone.found and gone.reason == "marker_not_seen" and gone.rvec is None


def _exact(pose) -> PatchObservation:
    r, t = pose.rvec, pose.t_mm
    return PatchObservation(0, 0, True, "", tuple(r), tuple(t), 0.1, (20,), np.eye(6) * 1e-12)


@pytest.mark.parametrize("area_name", ["abdomen", "flank", "thigh"])
def test_the_curvature_bound_holds_on_skin_curved_with_the_areas_smallest_radii(area_name):
    """Skin bent across the body with R_u (and, separately, along it with R_v): the plane mapping's error stays
    within the curvature part of its sigma at every point of the trusted ellipse, camera tilted up to 30 deg."""
    area = load_body_area(area_name)
    mapper = PatchMapper(area)
    standoff = mapper.standoff_mm
    rng = np.random.default_rng(3)
    ratios = []
    for along in (False, True):
        r = area.curvature_radius_mm[1 if along else 0]
        for _ in range(40):
            scene = BodyScene(curvature_radius_mm=0.0, tilt_deg=tuple(rng.uniform(-30, 30, 2)),
                              offset_mm=tuple(rng.uniform(-40, 40, 2)), motion_mm=0.0, sway_deg=0.0)
            skin = scene.skin_pose(0.0)
            card = skin.R, skin.t_mm - skin.R[:, 2] * standoff
            rad, th = math.sqrt(rng.uniform(0, 1)), rng.uniform(0, 2 * math.pi)
            u, v = area.range_mm[0] * rad * math.cos(th), area.range_mm[1] * rad * math.sin(th)
            s = v if along else u
            bent = np.array([r * math.sin(s / r), 0.0, r * (1 - math.cos(s / r))])
            p = np.array([u, bent[0], bent[2]]) if along else np.array([bent[0], v, bent[2]])
            px = CAM.K @ (skin.apply(p) / skin.apply(p)[2])
            from guidance.vision.rigid import RigidPose
            look = mapper.locate(_exact(RigidPose(*card)), px[0], px[1], CAM)
            if look.chart_mm is None:
                continue
            err = math.hypot(look.chart_mm[0] - u, look.chart_mm[1] - v)
            assert err <= look.curvature_mm + 0.05, (area_name, along, u, v, err, look.curvature_mm)
            ratios.append(err / max(look.curvature_mm, 1e-9))
    assert len(ratios) > 60 and np.median(ratios) > 0.2  # a bound, not a number pulled from the air
