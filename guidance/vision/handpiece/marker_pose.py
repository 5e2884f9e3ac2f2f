"""Pose of a rigid marker body from this frame's detections, or the reason there is none.

One marker alone: `SOLVEPNP_IPPE_SQUARE` gives two candidate poses (the planar
ambiguity). On small (20-45 px), blurred markers the reprojection errors do
not tell them apart reliably: motion blur from a fast swing moves the corners
by 1-3 px into a quad that the *mirror* pose (or a pose 10-15 deg off) fits
to 0.05-0.2 px, with an error ratio of 4-11 (simulated Wolfgang session,
frames 203 and 396). So a single marker never starts a track: it is refused
("pose_ambiguous") unless a valid pose of at most 100 ms ago exists, and then
the candidate must continue that pose's motion (rotation and body
displacement within the limits, clearly closer than the other candidate, and
not contradicted by a clear reprojection preference); otherwise refused. Every
single-marker pose thus descends, by plausible steps, from a multi-marker
pose. The rotation since the prior is added to the pose covariance as
rotation uncertainty (a fast swing blurs a lone marker into a consistent but
tilted quad), so `tip_sigma_mm` says how little a swinging single marker is
worth. Several markers: all their corners jointly (iterative PnP started from
the best single-marker candidate), with the worst marker dropped once if it
does not fit the others.

A marker seen nearly edge-on (more than 70 deg from its normal; on the
four-plate clip, the plates at the sides) has its corners found 1-2 px off
(simulated demo session: 1.3 px median residual against 0.2 px for the
plates facing the camera), which pulled the joint fit, and the tip, 1-3 px
off. So when the markers facing the camera are there, the steep ones are
left out and the pose refitted. If one marker is left, it is disambiguated
by the joint fit of this frame as by a prior (the same checks), and the
rotation between the two is its rotation uncertainty; if that fails, the
joint fit stands.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.marker_body import MarkerBody
from guidance.vision.handpiece.marker_detect import MarkerDetections
from guidance.vision.rigid import RigidPose, rotation_angle_deg

# Reasons (stable strings: they go into CSVs, recordings and deny messages).
NOT_SEEN = "marker_not_seen"
DUPLICATE = "duplicate_marker_id"
AMBIGUOUS = "pose_ambiguous"
REPROJECTION = "reprojection_error_too_high"
TOO_SMALL = "marker_too_small"
BEHIND = "pose_implausible"


@dataclass(frozen=True)
class PoseLimits:
    max_rms_px: float = 1.5  # joint reprojection RMS above this: something is wrong (occlusion, misdetection)
    ambiguity_ratio: float = 3.0  # single marker: second/best reprojection error above this is a clear preference
    single_marker_needs_prior: bool = True  # a lone marker never starts a track (its ratio test is fooled by blur)
    prior_max_age_ns: int = 100_000_000  # a previous pose older than this cannot disambiguate
    prior_max_angle_deg: float = 25.0  # single marker: rotation from the prior pose at most this
    prior_min_separation_deg: float = 15.0  # ... and the other candidate at least this much further from the prior
    prior_max_speed_mm_s: float = 600.0  # ... and the body origin moved at most this fast since the prior
    prior_slack_mm: float = 10.0  # ... plus this (corner noise, depth uncertainty of one marker)
    acquire_frames: int = 3  # no prior: a lone marker starts a track after this many consecutive frames ...
    acquire_max_step_deg: float = 4.0  # ... each rotating at most this from the last (steady: no blur) ...
    # ... all with a clear reprojection preference (ratio above ambiguity_ratio) for the candidates that chain.
    max_obliquity_deg: float = 70.0  # markers seen steeper than this are left out while flatter ones remain
    min_marker_side_px: float = 12.0
    # Corner noise assumed for the pose covariance, at least: a real webcam's corners (noise, compression,
    # blur, lens model) are not better than this, even when the fit's RMS says so.
    corner_noise_floor_px: float = 0.3
    min_depth_mm: float = 50.0
    max_depth_mm: float = 3000.0


@dataclass(frozen=True)
class BodyPose:
    """Pose of a body in one frame; `valid` False means `pose` must not be used, `reason` says why."""

    valid: bool
    reason: str
    pose: RigidPose | None
    rms_px: float
    ids_used: tuple[int, ...]
    n_corners: int
    ambiguity_ratio: float  # single marker only; inf when several markers were used
    cov6: np.ndarray | None  # covariance of (rvec, tvec) from the corner fit, for tip uncertainty
    t_capture_ns: int
    # A refused lone marker's preferred candidate, and how many consecutive steady frames agreed on it so far
    # (acquisition on a single marker; never to be used as a pose).
    tentative: RigidPose | None = None
    tentative_run: int = 0


def _invalid(reason: str, t_ns: int, ids=(), rms=float("nan")) -> BodyPose:
    return BodyPose(False, reason, None, rms, tuple(ids), 0, float("nan"), None, t_ns)


def _reproj_rms(obj: np.ndarray, img: np.ndarray, pose: RigidPose, cam: CameraModel) -> float:
    px, _ = cv2.projectPoints(obj, pose.rvec, pose.t_mm, cam.K, cam.dist)
    return float(np.sqrt(np.mean(np.sum((px.reshape(-1, 2) - img) ** 2, axis=1))))


def _single_candidates(body: MarkerBody, mid: int, img: np.ndarray, cam: CameraModel) -> list[tuple[RigidPose, float]]:
    """Both IPPE poses of one marker, expressed as body poses, best first, with their RMS errors."""
    n, rvecs, tvecs, errs = cv2.solvePnPGeneric(body.local_square(mid), img, cam.K, cam.dist,
                                                flags=cv2.SOLVEPNP_IPPE_SQUARE)
    R_mb, t_mb = body.marker_to_body(mid)
    body_in_marker = RigidPose(R_mb, t_mb).inverse()
    out = []
    for k in range(n):
        cam_marker = RigidPose.from_rvec(rvecs[k], tvecs[k])
        out.append((cam_marker.compose(body_in_marker), float(np.ravel(errs)[k]) if errs is not None else 0.0))
    out.sort(key=lambda c: c[1])
    return out


def _fit_covariance(obj: np.ndarray, pose: RigidPose, cam: CameraModel, sigma_px: float) -> np.ndarray | None:
    _, J = cv2.projectPoints(obj, pose.rvec, pose.t_mm, cam.K, cam.dist)
    J = J[:, :6]
    try:
        return sigma_px ** 2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        return None


def _continue_prior(cands: list[tuple[RigidPose, float]], ratio: float, prior: BodyPose, t_ns: int,
                    limits: PoseLimits) -> tuple[RigidPose | None, float]:
    """The single-marker candidate that plausibly continues the prior pose, and its rotation step (deg); None if none."""
    prior_pose = prior.pose
    assert prior_pose is not None, "only a prior with a pose (valid) can be continued"
    angles = [rotation_angle_deg(prior_pose.R, c[0].R) for c in cands]
    k = int(np.argmin(angles))
    if k != 0 and ratio >= limits.ambiguity_ratio:
        return None, 0.0  # reprojection clearly prefers the other one: the two clues disagree
    if len(cands) > 1 and min(a for j, a in enumerate(angles) if j != k) - angles[k] < limits.prior_min_separation_deg:
        return None, 0.0  # the prior does not tell them apart
    if angles[k] > limits.prior_max_angle_deg:
        return None, 0.0
    dt_s = (t_ns - prior.t_capture_ns) * 1e-9
    if np.linalg.norm(cands[k][0].t_mm - prior_pose.t_mm) > limits.prior_max_speed_mm_s * dt_s + limits.prior_slack_mm:
        return None, 0.0
    return cands[k][0], angles[k]


def _acquisition_run(cand: RigidPose, prior: BodyPose | None, t_ns: int, limits: PoseLimits) -> tuple[int, float]:
    """Consecutive steady frames preferring this lone-marker candidate (this one included), and the last step (deg)."""
    if (prior is None or prior.valid or prior.tentative is None
            or not 0 < t_ns - prior.t_capture_ns <= limits.prior_max_age_ns):
        return 1, 0.0
    step = rotation_angle_deg(prior.tentative.R, cand.R)
    if step > limits.acquire_max_step_deg:
        return 1, 0.0
    return prior.tentative_run + 1, step


def _obliquity_deg(body: MarkerBody, mid: int, pose: RigidPose) -> float:
    """Angle between a marker's normal and the line of sight to its centre (0 = seen face-on)."""
    centre = pose.apply(body.centre_mm(mid))
    cos = abs(float(np.dot(pose.R @ body.normal(mid), centre))) / max(float(np.linalg.norm(centre)), 1e-12)
    return float(np.degrees(np.arccos(min(cos, 1.0))))


def _without_steep(body: MarkerBody, det: MarkerDetections, cam: CameraModel, t_ns: int, ids: list[int],
                   joint: RigidPose, prior: BodyPose | None, fresh_prior: bool,
                   limits: PoseLimits) -> tuple[RigidPose, list[int], float, float, float] | None:
    """The pose from the markers seen flat enough, or None to keep the joint fit; (pose, ids, rms, step_deg, ratio)."""
    keep = [i for i in ids if _obliquity_deg(body, i, joint) <= limits.max_obliquity_deg]
    if not keep or len(keep) == len(ids):
        return None
    obj = np.concatenate([body.corners_mm[i] for i in keep])
    img = np.concatenate([det.corners_px[i] for i in keep])
    if len(keep) > 1:
        ok, rvec, tvec = cv2.solvePnP(obj, img, cam.K, cam.dist, joint.rvec.reshape(3, 1).copy(),
                                      joint.t_mm.reshape(3, 1).copy(), useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            return None
        fitted = RigidPose.from_rvec(rvec, tvec)
        return fitted, keep, _reproj_rms(obj, img, fitted, cam), 0.0, float("inf")
    cands = _single_candidates(body, keep[0], img, cam)
    ratio = (cands[1][1] if len(cands) > 1 else float("inf")) / max(cands[0][1], 1e-6)
    this_frame = BodyPose(True, "", joint, 0.0, tuple(ids), 0, float("inf"), None, t_ns)
    pose, step = _continue_prior(cands, ratio, this_frame, t_ns, limits)
    if pose is None:
        return None
    if fresh_prior:
        assert prior is not None and prior.pose is not None, "fresh_prior means a valid prior with a pose"
        step = max(step, rotation_angle_deg(prior.pose.R, pose.R))
    return pose, keep, _reproj_rms(obj, img, pose, cam), step, ratio


def estimate_body_pose(body: MarkerBody, det: MarkerDetections, cam: CameraModel, t_ns: int,
                       prior: BodyPose | None = None, limits: PoseLimits = PoseLimits()) -> BodyPose:
    if det.duplicate_ids and any(i in body.corners_mm for i in det.duplicate_ids):
        return _invalid(DUPLICATE, t_ns, det.duplicate_ids)
    ids = [i for i in sorted(det.corners_px) if i in body.corners_mm]
    if not ids:
        return _invalid(NOT_SEEN, t_ns)
    sides = {i: float(np.mean(np.linalg.norm(det.corners_px[i] - np.roll(det.corners_px[i], -1, 0), axis=1)))
             for i in ids}
    ids = [i for i in ids if sides[i] >= limits.min_marker_side_px]
    if not ids:
        return _invalid(TOO_SMALL, t_ns, sorted(sides))
    fresh_prior = (prior is not None and prior.valid and prior.pose is not None
                   and 0 <= t_ns - prior.t_capture_ns <= limits.prior_max_age_ns)
    step_deg = 0.0

    while True:
        obj = np.concatenate([body.corners_mm[i] for i in ids])
        img = np.concatenate([det.corners_px[i] for i in ids])
        if len(ids) == 1:
            cands = _single_candidates(body, ids[0], img, cam)
            best, e1 = cands[0]
            e2 = cands[1][1] if len(cands) > 1 else float("inf")
            ratio = e2 / max(e1, 1e-6)
            if not fresh_prior:
                if ratio < limits.ambiguity_ratio:
                    return _invalid(AMBIGUOUS, t_ns, ids, e1)
                if limits.single_marker_needs_prior:
                    run, step_deg = _acquisition_run(best, prior, t_ns, limits)
                    if run < limits.acquire_frames:
                        return BodyPose(False, AMBIGUOUS, None, e1, tuple(ids), 0, ratio, None, t_ns, best, run)
            else:
                assert prior is not None, "fresh_prior means a prior"
                continued, step_deg = _continue_prior(cands, ratio, prior, t_ns, limits)
                if continued is None:
                    return _invalid(AMBIGUOUS, t_ns, ids, e1)
                best = continued
            pose = best
        else:
            # Seed: the single-marker candidate that best explains all corners.
            seeds = [c[0] for i in ids for c in _single_candidates(body, i, det.corners_px[i], cam)]
            seed = min(seeds, key=lambda p: _reproj_rms(obj, img, p, cam))
            ok, rvec, tvec = cv2.solvePnP(obj, img, cam.K, cam.dist, seed.rvec.reshape(3, 1).copy(),
                                          seed.t_mm.reshape(3, 1).copy(), useExtrinsicGuess=True,
                                          flags=cv2.SOLVEPNP_ITERATIVE)
            pose = RigidPose.from_rvec(rvec, tvec) if ok else seed
            ratio = float("inf")
        rms = _reproj_rms(obj, img, pose, cam)
        # (break-first rather than `continue`: mypy reports the names bound in a `while True` that
        # continues as used before definition when they are rebound after the loop)
        if not (rms > limits.max_rms_px and len(ids) > 1):
            break
        per: dict[int, float] = {}
        for i in ids:
            per[i] = _reproj_rms(body.corners_mm[i], det.corners_px[i], pose, cam)
        ids = [i for i in ids if i != max(per, key=per.__getitem__)]  # once per marker at most: the list shrinks
    if len(ids) > 1 and rms <= limits.max_rms_px:
        flat = _without_steep(body, det, cam, t_ns, ids, pose, prior, fresh_prior, limits)
        if flat is not None:
            pose, ids, rms, step_deg, ratio = flat
            obj = np.concatenate([body.corners_mm[i] for i in ids])
    if rms > limits.max_rms_px:
        return _invalid(REPROJECTION, t_ns, ids, rms)
    depth = pose.apply(np.array([body.centre_mm(i) for i in ids]))[:, 2]
    if depth.min() < limits.min_depth_mm or depth.max() > limits.max_depth_mm:
        return _invalid(BEHIND, t_ns, ids, rms)
    cov = _fit_covariance(obj, pose, cam, max(rms, limits.corner_noise_floor_px))
    if len(ids) == 1 and cov is not None:
        # Rotation uncertainty of a lone marker: at least the rotation since the prior (motion blur risk).
        cov = cov.copy()
        cov[:3, :3] += np.eye(3) * np.radians(step_deg) ** 2 / 3.0
    return BodyPose(True, "", pose, rms, tuple(ids), len(ids) * 4, ratio, cov, t_ns)


def point_sigma_mm(pose: RigidPose, cov6: np.ndarray | None, point_body: np.ndarray) -> float:
    """1-sigma 3D uncertainty (root of the covariance trace) of a body point, propagated from the pose fit."""
    cov = point_covariance_mm2(pose, cov6, point_body)
    return float("inf") if cov is None else float(np.sqrt(max(np.trace(cov), 0.0)))


def lateral_sigma_mm(cov3: np.ndarray | None, point_cam_mm: np.ndarray) -> float:
    """1-sigma uncertainty of a camera-frame point across the line of sight: what moves its pixel.

    Depth along the viewing ray (usually the larger part for a small marker far away) does not
    change where the point is seen, and so not which skin point a pixel lookup finds.
    """
    if cov3 is None:
        return float("inf")
    d = np.asarray(point_cam_mm, float)
    d = d / max(float(np.linalg.norm(d)), 1e-9)
    P = np.eye(3) - np.outer(d, d)
    return float(np.sqrt(max(np.trace(P @ cov3 @ P), 0.0)))


def point_covariance_mm2(pose: RigidPose, cov6: np.ndarray | None, point_body: np.ndarray) -> np.ndarray | None:
    """3×3 covariance (mm²) of a body point in the camera frame, propagated from the pose fit."""
    if cov6 is None:
        return None
    rvec = pose.rvec
    p0 = pose.R @ point_body
    J = np.zeros((3, 6))
    eps = 1e-6
    for k in range(3):
        dr = rvec.copy()
        dr[k] += eps
        J[:, k] = (cv2.Rodrigues(dr.reshape(3, 1))[0] @ point_body - p0) / eps
    J[:, 3:] = np.eye(3)
    return J @ cov6 @ J.T
