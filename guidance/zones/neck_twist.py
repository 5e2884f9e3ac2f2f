"""The neck under a head turn: its skin twists between the head and the torso, it does not turn with the head.

Why: a face session used to carry the neck's chart cylinder with the head
pose, as if the neck turned whole with the head. With the head turned 30-45
degrees on a still torso that puts the skin point 19.5 mm (median) from where
it is, 24.7 mm at the lower neck, even with the exact head pose
(experiments/neck_twist/, docs/neck.md).

The model: the neck's cylinder (``surfaces["neck"]``) stands on the torso.
Its skin at height y has turned about the neck's axis by `w(y)` times the
head's turn since rest: all of it under the jaw (w = 1 at the cylinder's top),
none at the sternal notch (w = 0 at its bottom), linearly between. The torso
is not tracked in a face session: its frame is the head frame at *rest*, the
head pose while the client faced the camera at the start
(`TorsoReferenceBuilder`), and the torso is taken to stay still. A skin point
keeps its chart position (u, v) at rest; a camera ray meets the cylinder in
the torso frame at angle alpha and height v, and the point there has u = r *
(alpha + psi * w(v)) (a turn by +a about +y moves chart angle alpha to alpha
- a).

What it cannot know: how a real neck shares the turn (w linear is a guess;
the atlanto-axial joint takes about half of the rotation high up) -- the gate
widens the look-ahead by `TWIST_SIGMA_SHARE` of the turn's arc (`twist_sigma_mm`)
-- and whether the torso moved after rest (not detected: the shoulders or a
sternum patch would tell; docs/neck.md).

The sternal notch touched (band sessions registered by touches): the chart's
neck hangs from the head frame, 100-200 mm below the landmarks the band was
registered on, so a fraction of a degree of registration error moves its
lower part by 1-3 mm, and a real client's notch is not where the canonical
proportions put it (neck length, posture). The practitioner touches the notch
after the face's landmarks; the offset between that point and the model's
notch (torso frame) shears the neck's axis: not at all under the jaw (where
the chin touch pins it), fully at the notch, linearly between
(`neck_shift`). The face chart's décolletage plane, on the torso, moves by
the whole offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from guidance.vision.rigid import RigidPose, mean_rotation
from guidance.zones.surfaces import SurfaceHit, intersect_decolletage, intersect_neck, ray_in_head_frame

# The gate's 1-sigma for the twist model: this share of the arc the head's turn sweeps at the neck's radius
# (25 % of w: a neck sharing the turn as 0.75 w or 1.25 w is within one sigma). At 45 degrees: 10.8 mm.
TWIST_SIGMA_SHARE = 0.25
REST_FRAMES = 15  # near-frontal face poses averaged into the rest pose
REST_MAX_YAW_DEG = 12.0  # ... facing the camera within this yaw


@dataclass(frozen=True)
class TorsoReference:
    """The neck's frame this frame: the torso (the head frame at rest, camera frame), and the head's turn since."""

    rest: RigidPose  # the torso's frame this frame -> camera: the head frame at rest (moved with the sternum patch)
    psi_rad: float  # the head's turn about the neck's axis relative to that frame (about the head's +y)
    # The touched sternal notch minus the model's (torso frame, mm): the neck's axis is sheared by it (`neck_shift`),
    # the décolletage plane moved by it. None: no notch touched (the model's notch is used).
    notch_offset_mm: tuple[float, float, float] | None = None

    def shift_at(self, v_mm: np.ndarray | float, neck: dict) -> np.ndarray:
        """The neck axis' shift (torso frame, mm; (N, 3) or (3,)) at chart heights v."""
        return neck_shift(v_mm, neck, self.notch_offset_mm)


@dataclass(frozen=True)
class TorsoState:
    """A frame's torso for a plan with neck zones: the reference once the rest pose is made, else None (a neck
    point is then denied neck_unreferenced)."""

    reference: TorsoReference | None


def twist_share(v_mm: np.ndarray | float, neck: dict) -> np.ndarray:
    """w(v): the share of the head's turn the neck's skin has at chart height v (1 under the jaw, 0 at the notch)."""
    span = float(neck["y_bottom_mm"]) - float(neck["y_top_mm"])
    return np.clip((float(neck["y_bottom_mm"]) - np.asarray(v_mm, float)) / span, 0.0, 1.0)


def notch_point(neck: dict) -> np.ndarray:
    """The model's sternal notch (head frame at rest = torso frame, mm): the front of the neck's cylinder at its
    bottom."""
    return np.array([float(neck["axis_x_mm"]), float(neck["y_bottom_mm"]),
                     float(neck["axis_z_mm"]) - float(neck["radius_mm"])])


def neck_shift(v_mm: np.ndarray | float, neck: dict, offset_mm) -> np.ndarray:
    """How far the neck's axis is moved at chart height v by a touched notch `offset_mm` (torso frame): none under
    the jaw, all of it at the notch, linear between (the chin touch pins the top, the notch touch the bottom)."""
    v = np.asarray(v_mm, float)
    if offset_mm is None:
        return np.zeros(v.shape + (3,))
    share = 1.0 - twist_share(v, neck)
    return share[..., None] * np.asarray(offset_mm, float)


def neck_skin_points(torso: TorsoReference, neck: dict, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neck chart points (N, 2; the skin's rest chart) -> where that skin is now in the torso frame, and its outward
    normal there: turned by the twist, on the axis sheared by the touched notch."""
    uv = np.asarray(uv, float).reshape(-1, 2)
    r = float(neck["radius_mm"])
    alpha = uv[:, 0] / r - torso.psi_rad * twist_share(uv[:, 1], neck)
    normal = np.stack([np.sin(alpha), np.zeros(len(alpha)), -np.cos(alpha)], axis=1)
    p = np.array([neck["axis_x_mm"], 0.0, neck["axis_z_mm"]]) + r * normal
    p[:, 1] = uv[:, 1]
    return p + torso.shift_at(uv[:, 1], neck), normal


def head_turn_rad(rest_R: np.ndarray, head_R: np.ndarray) -> float:
    """The head's turn about its vertical (+y of the head frame) from rest to now, radians (positive: about +y)."""
    rel = np.asarray(rest_R, float).T @ np.asarray(head_R, float)
    return float(np.arctan2(rel[0, 2], rel[2, 2]))


def twist_sigma_mm(torso: TorsoReference, neck: dict) -> float:
    return TWIST_SIGMA_SHARE * float(neck["radius_mm"]) * abs(torso.psi_rad)


def locate_neck(torso: TorsoReference, head: RigidPose, ray_cam: np.ndarray, neck: dict) -> SurfaceHit | None:
    """A camera ray on the twisted neck: the hit with the skin's rest chart (u, v); its point given in the head
    frame (as every other hit), its distance along the ray as the other surfaces'."""
    o, d = ray_in_head_frame(torso.rest.R, torso.rest.t_mm, ray_cam)
    hit = intersect_neck(o, d, neck)
    if torso.notch_offset_mm is not None:
        # The sheared axis: the cylinder moved by the shift at the hit's own height, found by fixed point (the shift
        # changes by |offset| / 140 mm per mm of height, so each step shrinks the height's error by that much or
        # more; 4 steps leave < 0.01 mm for offsets up to 40 mm).
        v_guess = (0.5 * (float(neck["y_top_mm"]) + float(neck["y_bottom_mm"])) if hit is None
                   else float(hit.chart_mm[1]))
        hit = None
        for _ in range(4):
            shift = torso.shift_at(v_guess, neck)
            moved = intersect_neck(o - shift, d, neck)
            if moved is None:
                break
            hit = SurfaceHit("neck", moved.distance_mm, moved.point_head_mm + shift, moved.chart_mm)
            if abs(float(moved.chart_mm[1]) - v_guess) < 1e-3:
                break
            v_guess = float(moved.chart_mm[1])
    if hit is None:
        return None
    u, v = hit.chart_mm
    u_rest = u + float(neck["radius_mm"]) * torso.psi_rad * float(twist_share(v, neck))
    p_head = head.inverse().apply(torso.rest.apply(hit.point_head_mm[None, :]))[0]
    return SurfaceHit("neck", hit.distance_mm, p_head, (float(u_rest), float(v)))


def locate_decolletage(torso: TorsoReference, head: RigidPose, ray_cam: np.ndarray, dec: dict) -> SurfaceHit | None:
    """A camera ray on the chart's décolletage plane standing on the torso (no twist there; moved by the touched
    notch's offset): its chart (u, v) is the plane's (x, y) in the torso frame; its point given in the head frame,
    as every other hit."""
    o, d = ray_in_head_frame(torso.rest.R, torso.rest.t_mm, ray_cam)
    offset = np.zeros(3) if torso.notch_offset_mm is None else np.asarray(torso.notch_offset_mm, float)
    hit = intersect_decolletage(o - offset, d, dec)
    if hit is None:
        return None
    p_head = head.inverse().apply(torso.rest.apply((hit.point_head_mm + offset)[None, :]))[0]
    return SurfaceHit("decolletage", hit.distance_mm, p_head, hit.chart_mm)


class TorsoReferenceBuilder:
    """Collects near-frontal head poses (the client facing the camera) into the rest pose; then gives each frame's
    `TorsoReference`. `reset` when a session is armed again (the client may have moved).

    With a skin patch on the sternum seen during the rest (`add(patch=)`: its pose, camera frame), the torso is
    the patch's from then on: this frame's torso frame is the rest frame moved as the patch moved since
    (patch_now o patch_rest^-1 o rest), so a client who shifts or turns the shoulders carries the neck's base with
    them; a frame without the patch then has no torso (a neck point is denied neck_unreferenced). Without a
    patch at rest, the torso is taken as still.

    With `neck` and a sternal notch touched (`add(notch_cam_mm=)`: the touched point, camera frame, given with the
    band's registration just before the rest), the reference carries the notch's offset from the model's in the
    rest frame (the torso taken as still from the touch to the rest, half a second). `notch_required`: no
    reference until a notch is given (a band session registered by touches)."""

    def __init__(self, frames: int = REST_FRAMES, max_yaw_deg: float = REST_MAX_YAW_DEG, *,
                 neck: dict | None = None, notch_required: bool = False):
        if notch_required and neck is None:
            raise ValueError("a required notch needs the neck's chart parameters")
        self.frames = frames
        self.max_yaw_deg = max_yaw_deg
        self.neck = neck
        self.notch_required = notch_required
        self._poses: list[RigidPose] = []
        self._patches: list[RigidPose] = []
        self.rest: RigidPose | None = None
        self.patch_rest: RigidPose | None = None  # the sternum patch at rest, when it was seen then

    def reset(self) -> None:
        self._poses.clear()
        self._patches.clear()
        self.rest = None
        self.patch_rest = None

    def notch_offset(self, notch_cam_mm) -> tuple[float, float, float] | None:
        """The touched notch (camera frame) minus the model's, in the rest frame (None before the rest, or none
        touched)."""
        if notch_cam_mm is None or self.rest is None or self.neck is None:
            return None
        p = self.rest.inverse().apply(np.asarray(notch_cam_mm, float).reshape(1, 3))[0] - notch_point(self.neck)
        return (float(p[0]), float(p[1]), float(p[2]))

    def add(self, head: RigidPose | None, yaw_deg: float | None,
            patch: RigidPose | None = None, notch_cam_mm=None) -> TorsoReference | None:
        """This frame's head pose (None: none valid), its yaw to the camera, the sternum patch's pose (None: not
        seen, or none worn) and the touched notch (camera frame; None: not touched); the reference, once made."""
        if self.rest is None and head is not None and yaw_deg is not None and abs(yaw_deg) <= self.max_yaw_deg:
            self._poses.append(head)
            if patch is not None:
                self._patches.append(patch)
            if len(self._poses) >= self.frames:
                ts = np.array([p.t_mm for p in self._poses])
                self.rest = RigidPose(mean_rotation([p.R for p in self._poses]), np.median(ts, axis=0))
                if 2 * len(self._patches) >= len(self._poses):  # the patch seen in most of the rest: it carries
                    pts = np.array([p.t_mm for p in self._patches])
                    self.patch_rest = RigidPose(mean_rotation([p.R for p in self._patches]), np.median(pts, axis=0))
        if self.rest is None or head is None:
            return None
        offset = self.notch_offset(notch_cam_mm)
        if self.notch_required and offset is None:
            return None  # the notch is not touched yet
        frame = self.rest
        if self.patch_rest is not None:
            if patch is None:
                return None  # the torso is the patch's, and the patch is not seen now
            frame = patch.compose(self.patch_rest.inverse()).compose(self.rest)
        return TorsoReference(frame, head_turn_rad(frame.R, head.R), offset)
