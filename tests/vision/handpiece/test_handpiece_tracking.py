"""Tip accuracy, refusal and velocity on handpiece renders over real face video, against exact ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.tracker import HandpieceTracker, VelocityFilter
from guidance.vision.handpiece.marker_detect import MarkerDetector
from guidance.vision.handpiece.marker_pose import AMBIGUOUS, NOT_SEEN
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.sim.render import SceneRenderer, handpiece_item, sample_tip_pose, video_frames

PROFILE = "handpiece_default"
# A "calibrated" webcam: not the default intrinsics, off-centre principal point, barrel distortion.
CAM = CameraModel(np.array([[612.0, 0, 324.5], [0, 615.0, 236.0], [0, 0, 1]]),
                  np.array([-0.06, 0.02, 0.0005, -0.0003, 0.0]), (640, 480), True)


@pytest.fixture(scope="module")
def profile():
    return load_handpiece_profile(PROFILE)


@pytest.fixture(scope="module")
def backgrounds(sample):
    return video_frames(str(sample("WolfgangLanger_Pexels.mp4")), (640, 480), limit=60)


def test_detected_corners_match_ground_truth(profile, backgrounds):
    """Edge-fitted corners on a clean render sit within a tenth of a pixel of the projected truth."""
    rng = np.random.default_rng(3)
    r = SceneRenderer(CAM)
    det = MarkerDetector(profile.body.dictionary, profile.body.ids)
    errs = []
    for k in range(20):
        pose = sample_tip_pose(profile, CAM, rng)
        img, (gt,) = r.render(backgrounds[k], [handpiece_item(profile, pose)])
        det.reset()
        found = det.detect(img).corners_px
        for i in set(found) & set(gt.corners_px):
            errs.extend(np.linalg.norm(found[i] - gt.corners_px[i], axis=1))
    assert len(errs) >= 40
    assert np.median(errs) < 0.1


def test_tip_accuracy_on_renders_over_face_video(profile, backgrounds):
    """Issue acceptance: tip px median <= 1.5, tip 3D median <= 2 mm at 30-50 cm, calibrated intrinsics."""
    rng = np.random.default_rng(11)
    r = SceneRenderer(CAM)
    tracker = HandpieceTracker(profile, CAM)
    e_px, e_mm, refused = [], [], 0
    for k in range(120):
        pose = sample_tip_pose(profile, CAM, rng)
        item = handpiece_item(profile, pose, linear_velocity_mm_s=rng.normal(0, 40, 3))
        # Each pose is held for three 30 fps frames (fresh noise each), poses 1 s apart (no prior carries
        # over): a lone marker only starts a track after three steady frames, a multi-marker pose at once.
        for j in range(3):
            img, (gt,) = r.render(backgrounds[k % len(backgrounds)], [item], exposure_s=0.008, blur_samples=3,
                                  noise_sigma=2.0, rng=rng)
            obs = tracker.process(img, k * 1_000_000_000 + j * 33_000_000, 3 * k + j)
        if not obs.valid:
            refused += 1
            assert obs.tip_mm is None and obs.tip_px is None and obs.reason
            continue
        e_px.append(np.linalg.norm(np.subtract(obs.tip_px, gt.tip_px)))
        e_mm.append(np.linalg.norm(np.subtract(obs.tip_mm, gt.tip_mm)))
    e_px, e_mm = np.array(e_px), np.array(e_mm)
    print(f"\ntip px median {np.median(e_px):.2f} p95 {np.percentile(e_px, 95):.2f}; "
          f"mm median {np.median(e_mm):.2f} p95 {np.percentile(e_mm, 95):.2f}; refused {refused}/120")
    assert refused <= 12
    assert np.median(e_px) <= 1.5
    assert np.median(e_mm) <= 2.0
    assert np.percentile(e_mm, 95) <= 6.0


def test_uncertainty_tracks_error(profile, backgrounds):
    """Frames with a large stated tip sigma are the ones with large errors: confidence means something."""
    rng = np.random.default_rng(5)
    r = SceneRenderer(CAM)
    tracker = HandpieceTracker(profile, CAM)
    sig, err = [], []
    for k in range(60):
        pose = sample_tip_pose(profile, CAM, rng)
        img, (gt,) = r.render(backgrounds[k % len(backgrounds)], [handpiece_item(profile, pose)],
                              noise_sigma=2.0, rng=rng)
        obs = tracker.process(img, k * 200_000_000, k)
        if obs.valid:
            sig.append(obs.tip_sigma_mm)
            err.append(np.linalg.norm(np.subtract(obs.tip_mm, gt.tip_mm)))
            assert 0.0 < obs.confidence <= 1.0
    sig, err = np.array(sig), np.array(err)
    # The error rarely exceeds three stated sigmas.
    assert np.mean(err > 3 * sig) < 0.05


def _sequence(profile, backgrounds, n, hidden=(), occlude=None, velocity=(60.0, -20.0, 0.0), seed=0):
    """A continuous 30 fps stroke; yields (image, truth, t_ns)."""
    rng = np.random.default_rng(seed)
    r = SceneRenderer(CAM)
    pose0 = sample_tip_pose(profile, CAM, rng, depth_mm=(380, 420), tilt_deg=(40, 50), margin=0.4)
    v = np.array(velocity)
    for k in range(n):
        t = k / 30.0
        pose = pose0.advanced(v, np.zeros(3), t)
        item = handpiece_item(profile, pose, linear_velocity_mm_s=v, hide_all=k in hidden,
                              occlude=(occlude or {}) if k in hidden else {})
        if occlude:
            item.hide_all = False
        img, (gt,) = r.render(backgrounds[k % len(backgrounds)], [item], exposure_s=0.01, blur_samples=3,
                              noise_sigma=1.5, rng=rng)
        yield img, gt, int(round(t * 1e9)) + 1_000_000_000


def test_occluded_marker_gives_no_tip_in_that_same_frame(profile, backgrounds):
    """A hand over the clip: that very frame has no tip (never the previous one), and it comes back after."""
    tracker = HandpieceTracker(profile, CAM)
    hidden = {10, 11, 12}
    out = [tracker.process(img, t, k) for k, (img, gt, t) in enumerate(_sequence(profile, backgrounds, 18, hidden))]
    for k, obs in enumerate(out):
        if k in hidden:
            assert not obs.valid and obs.reason == NOT_SEEN
            assert obs.tip_mm is None and obs.tip_px is None and obs.speed_mm_s is None and obs.confidence == 0
        else:
            assert obs.valid, (k, obs.reason)
    # After re-acquisition the speed is unknown for one frame (no velocity across the gap), then measured again.
    assert out[13].speed_mm_s is None and out[14].speed_mm_s is not None


def test_partially_covered_marker_never_gives_a_wrong_tip(profile, backgrounds):
    """A finger over part of each marker: either no tip, or a tip that is still right."""
    tracker = HandpieceTracker(profile, CAM)
    hidden = set(range(0, 20, 2))
    frac = {0: 0.35, 1: 0.35, 2: 0.35, 3: 0.35}
    for k, (img, gt, t) in enumerate(_sequence(profile, backgrounds, 20, hidden, occlude=frac, seed=4)):
        obs = tracker.process(img, t, k)
        if obs.valid:
            assert np.linalg.norm(np.subtract(obs.tip_mm, gt.tip_mm)) < 5.0, k


def test_speed_is_measured(profile, backgrounds):
    """A steady 63 mm/s stroke with motion blur: filtered speed within 15 % after settling."""
    tracker = HandpieceTracker(profile, CAM)
    speeds = []
    for k, (img, _gt, t) in enumerate(_sequence(profile, backgrounds, 30, seed=2)):
        obs = tracker.process(img, t, k)
        assert obs.valid, obs.reason
        if k >= 10:
            speeds.append(obs.speed_mm_s)
    true = float(np.hypot(60.0, 20.0))
    assert abs(np.median(speeds) - true) / true < 0.15


def test_single_marker_without_history_is_refused_when_ambiguous(profile):
    """A lone, nearly frontal marker has two mirror poses that fit equally: no tip unless history decides."""
    from guidance.vision.handpiece.marker_body import MarkerBody
    from guidance.vision.rigid import RigidPose
    body = MarkerBody("one", profile.body.dictionary, {0: profile.body.corners_mm[0]}, {0: profile.body.size_mm[0]})
    R_mb, t_mb = body.marker_to_body(0)
    # Marker seen face-on from 45 cm: its normal points straight at the camera.
    pose = RigidPose(np.diag([1.0, -1.0, -1.0]), np.array([5.0, 3.0, 450.0])).compose(RigidPose(R_mb, t_mb).inverse())
    from guidance.sim.render import SceneItem
    r = SceneRenderer(CAM)
    img, _ = r.render(np.full((480, 640, 3), 140, np.uint8), [SceneItem(body, pose)], noise_sigma=2.0)
    from dataclasses import replace
    one = replace(profile, body=body)
    obs = HandpieceTracker(one, CAM).process(img, 1, 0)
    assert not obs.valid and obs.reason == AMBIGUOUS


def test_velocity_filter_resets_on_gap():
    f = VelocityFilter(max_gap_ns=100_000_000)
    assert f.update(np.zeros(3), 0) is None
    v = f.update(np.array([3.0, 0, 0]), 33_000_000)
    assert v[0] == pytest.approx(3.0 / 0.033)
    assert f.update(np.array([6.0, 0, 0]), 233_000_000) is None  # 200 ms gap: unknown again


# --- Single-marker pose ambiguity (simulated Wolfgang session, frames 203 and 396: a lone marker after a fast
# swing, accepted on its reprojection ratio, tip 28 and 136 px off while tip_sigma_mm said 2.7-2.9 mm). ---------

_GREY = np.full((480, 640, 3), 120, np.uint8)
SWING_DEG = 60.0


def _swing_poses(profile):
    """Pose A (markers 0 and 3 in view: a multi-marker pose) and pose B, A swung 60 deg about the tip."""
    from guidance.sim.render import pose_with_tip_at
    tip = np.array([20.0, 10.0, 380.0])
    a = pose_with_tip_at(profile, tip, [np.sin(np.radians(20)), 0, np.cos(np.radians(20))], np.radians(45))
    return a, a.advanced(np.zeros(3), np.array([0.0, np.radians(SWING_DEG), 0.0]), 1.0, about_mm=tip)


def _lone(profile, pose, keep=0, **kw):
    return handpiece_item(profile, pose, occlude={i: 1.0 for i in profile.body.ids if i != keep}, **kw)


def _err_px(obs, gt):
    return float(np.linalg.norm(np.subtract(obs.tip_px, gt.tip_px)))


def test_lone_marker_without_history_needs_steady_frames(profile):
    """No prior: a lone marker is refused even with a clear reprojection preference, until three steady frames
    agree; then the tip is right. (Before: accepted on the first frame, which is how frame 396 went wrong.)"""
    _, b = _swing_poses(profile)
    r = SceneRenderer(CAM)
    rng = np.random.default_rng(7)
    tracker = HandpieceTracker(profile, CAM)
    out = []
    for j in range(4):
        img, (gt,) = r.render(_GREY, [_lone(profile, b)], noise_sigma=1.5, rng=rng)
        assert 0 in gt.visible_ids
        out.append((tracker.process(img, 1_000_000_000 + j * 33_000_000, j), gt))
    assert [o.valid for o, _ in out] == [False, False, True, True]
    assert all(o.reason == AMBIGUOUS and o.tip_px is None for o, _ in out[:2])
    for o, gt in out[2:]:
        assert o.marker_ids == (0,) and _err_px(o, gt) < 5.0 and np.isfinite(o.tip_sigma_mm)


def test_fast_swing_to_a_lone_marker_is_refused_then_reacquired(profile):
    """A valid two-marker pose, then 33 ms later the clip swung 60 deg with one marker in view (blurred by the
    swing): no tip (the rotation is implausible for a lone marker's pose), also while the old pose is fresh;
    held still afterwards, the lone marker is acquired and right. Never a valid tip more than 5 px off."""
    a, b = _swing_poses(profile)
    r = SceneRenderer(CAM)
    rng = np.random.default_rng(8)
    tracker = HandpieceTracker(profile, CAM)
    swing = np.array([0.0, np.radians(SWING_DEG) * 30, 0.0])  # 60 deg in one 30 fps frame
    frames = [handpiece_item(profile, a), _lone(profile, b, angular_velocity_rad_s=swing, rotate_about_tip=True)]
    frames += [_lone(profile, b) for _ in range(7)]
    out = []
    for k, item in enumerate(frames):
        img, (gt,) = r.render(_GREY, [item], exposure_s=0.0015, blur_samples=5, noise_sigma=1.5, rng=rng)
        o = tracker.process(img, 1_000_000_000 + k * 33_333_333, k)
        out.append(o)
        if o.valid:
            assert _err_px(o, gt) < 5.0, (k, _err_px(o, gt), o.marker_ids)
    assert out[0].valid and len(out[0].marker_ids) >= 2
    assert not out[1].valid and out[1].reason == AMBIGUOUS
    assert not any(o.valid for o in out[1:4])  # the prior (<= 100 ms old) still says "not a continuation"
    assert out[-1].valid and out[-1].marker_ids == (0,)


def test_prior_on_the_mirror_side_against_clear_reprojection_is_refused(profile):
    """The prior sits on the mirror candidate while reprojection clearly prefers the other: the two clues
    disagree, so no pose (before: the reprojection pick was taken without looking at the prior)."""
    from guidance.vision.handpiece.marker_detect import MarkerDetections
    from guidance.vision.handpiece.marker_pose import BodyPose, _single_candidates, estimate_body_pose
    _, b = _swing_poses(profile)
    _, (gt,) = SceneRenderer(CAM).render(_GREY, [_lone(profile, b)])
    corners = gt.corners_px[0] + np.random.default_rng(1).normal(0, 0.05, (4, 2))
    cands = _single_candidates(profile.body, 0, corners, CAM)
    assert cands[1][1] / cands[0][1] > 3.0
    det = MarkerDetections({0: corners}, (), False)
    t = 1_000_000_000
    prior = BodyPose(True, "", cands[1][0], 0.1, (0, 3), 8, float("inf"), None, t - 33_000_000)
    assert estimate_body_pose(profile.body, det, CAM, t, prior).reason == AMBIGUOUS
    # The same frame continuing a prior on the right side is accepted.
    prior = BodyPose(True, "", cands[0][0], 0.1, (0, 3), 8, float("inf"), None, t - 33_000_000)
    body = estimate_body_pose(profile.body, det, CAM, t, prior)
    assert body.valid and np.allclose(body.pose.t_mm, cands[0][0].t_mm)


def test_markers_seen_edge_on_are_left_out_when_flatter_ones_are_there(profile, backgrounds):
    """A plate seen nearly edge-on has its corners found off; leaving it out puts the tip closer to the truth."""
    from guidance.vision.handpiece.marker_pose import PoseLimits, _obliquity_deg, estimate_body_pose
    rng = np.random.default_rng(21)
    r = SceneRenderer(CAM)
    det = MarkerDetector(profile.body.dictionary, profile.body.ids)
    joint_limits = PoseLimits(max_obliquity_deg=90.0)  # every marker found is used: the old rule

    def tip_px_error(body, gt):
        tip = body.pose.apply(profile.tip_offset_mm.reshape(1, 3))[0]
        px, _ = cv2.projectPoints(tip.reshape(1, 3), np.zeros(3), np.zeros(3), CAM.K, CAM.dist)
        return float(np.linalg.norm(px.reshape(2) - gt.tip_px))

    errs = []
    for k in range(150):
        pose = sample_tip_pose(profile, CAM, rng)
        img, (gt,) = r.render(backgrounds[k % len(backgrounds)], [handpiece_item(profile, pose)], noise_sigma=1.5,
                              rng=rng)
        det.reset()
        d = det.detect(img)
        joint = estimate_body_pose(profile.body, d, CAM, 0, None, joint_limits)
        if not joint.valid or len(joint.ids_used) < 2:
            continue
        steep = [i for i in joint.ids_used if _obliquity_deg(profile.body, i, joint.pose) > 70.0]
        if not steep or len(steep) == len(joint.ids_used):
            continue
        flat = estimate_body_pose(profile.body, d, CAM, 0, None, PoseLimits())
        assert flat.valid and not set(steep) & set(flat.ids_used) or flat.ids_used == joint.ids_used
        errs.append((tip_px_error(joint, gt), tip_px_error(flat, gt)))
    errs = np.array(errs)
    assert len(errs) >= 10, "too few frames with a steep marker: the test would prove nothing"
    print(f"\n{len(errs)} frames with a steep marker: tip px error joint {np.median(errs[:, 0]):.2f} -> {np.median(errs[:, 1]):.2f} median")
    assert np.median(errs[:, 1]) < 0.6 * np.median(errs[:, 0]), errs
