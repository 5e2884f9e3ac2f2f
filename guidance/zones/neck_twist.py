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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from guidance.vision.rigid import RigidPose, mean_rotation
from guidance.zones.surfaces import SurfaceHit, intersect_neck, ray_in_head_frame

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


@dataclass(frozen=True)
class TorsoState:
    """A frame's torso for a plan with neck zones: the reference once the rest pose is made, else None (a neck
    point is then denied neck_unreferenced)."""

    reference: TorsoReference | None


def twist_share(v_mm: np.ndarray | float, neck: dict) -> np.ndarray:
    """w(v): the share of the head's turn the neck's skin has at chart height v (1 under the jaw, 0 at the notch)."""
    span = float(neck["y_bottom_mm"]) - float(neck["y_top_mm"])
    return np.clip((float(neck["y_bottom_mm"]) - np.asarray(v_mm, float)) / span, 0.0, 1.0)


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
    if hit is None:
        return None
    u, v = hit.chart_mm
    u_rest = u + float(neck["radius_mm"]) * torso.psi_rad * float(twist_share(v, neck))
    p_head = head.inverse().apply(torso.rest.apply(hit.point_head_mm[None, :]))[0]
    return SurfaceHit("neck", hit.distance_mm, p_head, (float(u_rest), float(v)))


class TorsoReferenceBuilder:
    """Collects near-frontal head poses (the client facing the camera) into the rest pose; then gives each frame's
    `TorsoReference`. `reset` when a session is armed again (the client may have moved).

    With a skin patch on the sternum seen during the rest (`add(patch=)`: its pose, camera frame), the torso is
    the patch's from then on: this frame's torso frame is the rest frame moved as the patch moved since
    (patch_now o patch_rest^-1 o rest), so a client who shifts or turns the shoulders carries the neck's base with
    them; a frame without the patch then has no torso (a neck point is denied neck_unreferenced). Without a
    patch at rest, the torso is taken as still."""

    def __init__(self, frames: int = REST_FRAMES, max_yaw_deg: float = REST_MAX_YAW_DEG):
        self.frames = frames
        self.max_yaw_deg = max_yaw_deg
        self._poses: list[RigidPose] = []
        self._patches: list[RigidPose] = []
        self.rest: RigidPose | None = None
        self.patch_rest: RigidPose | None = None  # the sternum patch at rest, when it was seen then

    def reset(self) -> None:
        self._poses.clear()
        self._patches.clear()
        self.rest = None
        self.patch_rest = None

    def add(self, head: RigidPose | None, yaw_deg: float | None,
            patch: RigidPose | None = None) -> TorsoReference | None:
        """This frame's head pose (None: none valid), its yaw to the camera and the sternum patch's pose (None: not
        seen, or none worn); the reference, once made."""
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
        frame = self.rest
        if self.patch_rest is not None:
            if patch is None:
                return None  # the torso is the patch's, and the patch is not seen now
            frame = patch.compose(self.patch_rest.inverse()).compose(self.rest)
        return TorsoReference(frame, head_turn_rad(frame.R, head.R))
