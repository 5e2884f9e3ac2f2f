"""A rendered neck session with exact ground truth: the head turns +-45 degrees on a still torso, the neck twists.

The client is rendered as for the scalp (``head_scene.HeadScene``: the face
photo on the canonical face, the cranium, the head band), with the neck's
cylinder standing on the torso and its skin twisting under the head
(``zones/neck_twist.py``'s model: w(v) = 1 under the jaw, 0 at the notch --
so the rendering is the model, as the scalp's head is). The markers of the
head band and the handpiece are drawn by ``render.SceneRenderer``.

The script (``NeckScript``, times in seconds):

- the touch registration as in the scalp session (``scalp.touch_tip``): the
  five landmarks, then (``notch_touch``) the sternal notch, aimed with the
  same error, held on the torso while the head sways; then the tip goes to
  the neck;
- ``rest_s``: the head straight (a sway of a degree), the tip stroking the
  front of the neck: the band's head makes the torso's rest pose;
- ``turn_s``: the head turns to +``turn_deg``, back, to -``turn_deg`` and back
  (one sine period) while the tip keeps stroking the part of the neck that
  faces the camera, its skin sliding under the strokes as it twists; the
  client also shifts in the chair meanwhile (the torso turns by
  ``torso_turn_deg`` about the neck's axis and slides ``torso_shift_mm``
  sideways, there and back).

With ``patch`` the skin patch of the body area ``decolletage`` is on the
sternum (42 mm below the notch): the service tracks it and the torso with it.

The strokes are set on the torso: across the front of the neck (angle
``stroke_half_deg`` either side), in lanes between ``v_low_mm`` and
``v_high_mm``, a 1 cm lift every ``lift_every_s``. The truth of a point is the
skin's own chart position (at rest), so a tip that stays still on the torso
while the head turns moves over the chart.

Written as ``guidance simulate`` writes (``simulated.avi``,
``ground_truth.csv``, ``info.json``); ``segment_type`` is ``touch``, ``rest``
or ``turn``; ``face_found`` is the truth's "the face is towards the camera".
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from guidance import __version__
from guidance.errors import UserError
from guidance.sim.ground_truth import GROUND_TRUTH_FILE, GTFrame, write_ground_truth
from guidance.sim.render import SceneItem
from guidance.sim.scalp import (HandpieceTake, ScalpScript, TouchPlan, lifted_arc, band_on_head,
                                client_scene, face_uv, tip_columns, touch_hold_normal, touch_tip)
from guidance.sim.simulate import INFO_FILE, VIDEO_FILE, commit_folder
from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.head_pose import load_canonical_face
from guidance.vision.handpiece.designs import PatchDesign
from guidance.vision.handpiece.profiles import load_handpiece_profile, load_head_band
from guidance.vision.rigid import RigidPose
from guidance.zones.atlas import load_atlas
from guidance.zones.chart import load_chart
from guidance.zones.mapper import ZoneMapper
from guidance.zones.neck_twist import notch_point, twist_share
from guidance.zones.plan import load_plan

NECK_SIM_VERSION = 1
NECK_PLAN = "neck_decolletage"


@dataclass(frozen=True)
class NeckScript(ScalpScript):
    """The scalp script's touches and hand, then a rest and a head turn on a still torso (the scalp's own turn,
    strokes and framing fields are not used)."""

    rest_s: float = 1.5
    turn_s: float = 8.0
    turn_deg: float = 45.0
    sway_deg: float = 1.5
    torso_y_mm: float = -85.0  # the head frame's origin (at rest) below the optical axis: negative is above
    torso_distance_mm: float = 540.0
    # The client shifts in the chair during the turn: the torso turns by torso_turn_deg about the neck's axis and
    # slides torso_shift_mm sideways, smoothly there and back (0: a still torso).
    torso_turn_deg: float = 6.0
    torso_shift_mm: float = 12.0
    patch: bool = True  # the skin patch of the body area `decolletage` on the sternum (it carries the torso)
    stroke_half_deg: float = 35.0
    stroke_hz: float = 0.45
    v_low_mm: float = 125.0
    v_high_mm: float = 185.0
    normal_weight: float = 0.55
    notch_touch: bool = True  # the sixth touch, on the sternal notch (the service asks for it in neck plans)
    # Then the décolletage: the head turns +-turn_deg once more over dec_s while the tip strokes the upper chest on
    # the client's left, beside the sternum patch (x dec_x_mm from the midline, dec_y_mm below the notch), after a
    # lifted move of dec_move_s from the neck (0: no décolletage leg).
    dec_s: float = 5.0
    dec_move_s: float = 0.4
    dec_x_mm: tuple[float, float] = (42.0, 80.0)
    dec_y_mm: tuple[float, float] = (12.0, 38.0)

    @property
    def face_touches_end_s(self) -> float:
        """When the tip leaves the last face landmark."""
        return ScalpScript.touches_end_s.fget(self)  # type: ignore[attr-defined]

    @property
    def touches_end_s(self) -> float:
        """When the tip leaves the last touch (the notch's, with `notch_touch`)."""
        return self.face_touches_end_s + (self.touch_move_s + self.touch_hold_s if self.notch_touch else 0.0)

    @property
    def strokes_from_s(self) -> float:
        return self.touches_end_s + self.touch_move_s

    @property
    def turn_from_s(self) -> float:
        return self.strokes_from_s + self.rest_s

    @property
    def dec_from_s(self) -> float:
        return self.turn_from_s + self.turn_s

    @property
    def duration_s(self) -> float:
        return self.dec_from_s + self.dec_s

    def phase(self, t: float) -> str:
        """rest | turn | decolletage (after the touches)."""
        return "rest" if t < self.turn_from_s else ("turn" if t < self.dec_from_s else "decolletage")

    def psi_rad(self, t: float) -> float:
        """The head's turn about the neck's axis (radians): a small sway until the turn, then one sine period over
        the turn and another over the décolletage leg."""
        if t < self.turn_from_s:
            return float(np.radians(self.sway_deg) * np.sin(2 * np.pi * 0.3 * t))
        if t >= self.dec_from_s and self.dec_s > 0:
            return float(np.radians(self.turn_deg) * np.sin(2 * np.pi * (t - self.dec_from_s) / self.dec_s))
        x = (t - self.turn_from_s) / self.turn_s
        sway = float(np.radians(self.sway_deg) * np.sin(2 * np.pi * 0.3 * self.turn_from_s))
        return sway * (1 - min(x * 4, 1.0)) + float(np.radians(self.turn_deg) * np.sin(2 * np.pi * x))

    def torso_motion(self, t: float) -> float:
        """How far the torso has shifted (0 at rest, 1 half way through the turn and the décolletage, back to 0 at
        the end)."""
        if t < self.turn_from_s:
            return 0.0
        x = min((t - self.turn_from_s) / (self.turn_s + self.dec_s), 1.0)
        return float(0.5 - 0.5 * np.cos(2 * np.pi * x))

    def dec_stroke(self, t: float) -> tuple[float, float]:
        """(x, y) on the décolletage plane (torso frame, mm below the notch's height added by the caller) at t."""
        into = t - self.dec_from_s
        across = 0.5 - 0.5 * np.cos(2 * np.pi * self.stroke_hz * into)
        lane = 0.5 - 0.5 * np.cos(2 * np.pi * 0.23 * into)
        x0, x1 = self.dec_x_mm
        y0, y1 = self.dec_y_mm
        return float(x0 + (x1 - x0) * across), float(y0 + (y1 - y0) * lane)

    def stroke(self, t: float) -> tuple[float, float]:
        """(torso angle about the neck's axis in radians, chart height v in mm) of the tip's stroke at t."""
        a = np.radians(self.stroke_half_deg) * np.sin(2 * np.pi * self.stroke_hz * (t - self.strokes_from_s))
        lane = 0.5 + 0.5 * np.sin(2 * np.pi * 0.17 * (t - self.strokes_from_s) - np.pi / 2)
        return float(a), float(self.v_low_mm + (self.v_high_mm - self.v_low_mm) * lane)

    def lifted_mm(self, t: float) -> float:
        if t < self.strokes_from_s + 0.3:
            return 0.0
        return self.height_mm(t - self.strokes_from_s)


def _twist(psi: float, neck: dict, y: np.ndarray) -> np.ndarray:
    """The skin's turn (radians) at heights y under a head turned by psi."""
    return psi * twist_share(y, neck)


def about_axis(angle_rad: float, neck: dict) -> RigidPose:
    """A turn about the neck's vertical axis (head frame at rest = torso frame)."""
    a = np.array([neck["axis_x_mm"], 0.0, neck["axis_z_mm"]])
    R = cv2.Rodrigues(np.array([0.0, angle_rad, 0.0]))[0]
    return RigidPose(R, a - R @ a)


def sternum_skin(neck: dict, below_notch_mm: float = 42.0) -> RigidPose:
    """Where the sternum patch sits in the torso frame: its skin frame (x right, y down, z into the body, as the
    body areas' patch), centred this far below the notch, on the neck's front plane."""
    return RigidPose(np.eye(3), np.array([0.0, float(neck["y_bottom_mm"]) + below_notch_mm,
                                          float(neck["axis_z_mm"]) - float(neck["radius_mm"])]))


def notch_aim(script: NeckScript, neck: dict) -> np.ndarray:
    """Where the scripted practitioner touches the notch (torso frame): the model's notch and an aim error in the
    skin's plane there (x, y), of `aim_mm` 3D RMS, seeded apart from the face's touches."""
    e = np.random.default_rng(script.seed + 202).normal(0.0, script.aim_mm / np.sqrt(2.0), 2)
    return notch_point(neck) + np.array([e[0], e[1], 0.0])


def notch_tip(script: NeckScript, t: float, head: RigidPose, torso: RigidPose, plan: TouchPlan, notch: np.ndarray,
              first: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The tip from the last face landmark to the notch, held there, then to the first stroke: (camera point,
    direction the hand holds it against, height off the skin in mm), or None outside that stretch."""
    t0 = script.face_touches_end_s
    if not script.notch_touch or t < t0 or t >= script.strokes_from_s:
        return None
    n_notch = np.array([0.0, 0.0, -1.0])  # the skin's outward normal at the notch, torso frame
    hold_n = torso.R @ touch_hold_normal(notch, n_notch)
    notch_cam = torso.apply(notch[None])[0]
    into = t - t0
    if into < script.touch_move_s:  # from the last landmark (on the head) to the notch (on the torso)
        p0, n0 = head.apply(plan.points[-1:])[0], head.R @ plan.normals[-1]
        p1, n1 = notch_cam, torso.R @ n_notch
        s = into / script.touch_move_s
    elif into < script.touch_move_s + script.touch_hold_s:
        return notch_cam, hold_n, 0.0
    else:  # to where the strokes begin
        p0, n0 = notch_cam, torso.R @ n_notch
        p1, n1 = torso.apply(first[0][None])[0], torso.R @ first[1]
        s = (into - script.touch_move_s - script.touch_hold_s) / script.touch_move_s
    q, n = lifted_arc(p0, n0, p1, n1, s)
    return q, n, max(1.0, float(np.linalg.norm(q - ((1 - s) * p0 + s * p1))))


def _neck_chart(p_torso: np.ndarray, neck: dict) -> tuple[float, float]:
    """(angle about the neck's axis, height) of a torso-frame point: the chart convention of ``neck_surface_point``."""
    return float(np.arctan2(p_torso[0] - neck["axis_x_mm"], neck["axis_z_mm"] - p_torso[2])), float(p_torso[1])


def _on_decolletage(script: NeckScript, t: float, torso: RigidPose, neck: dict, dec: dict
                    ) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
    """The tip on the décolletage leg: (camera point, direction held against, height off the skin in mm, the skin's
    chart point under it): a lifted move from the neck's last stroke, then strokes on the plane."""
    n_t = np.array([0.0, 0.0, -1.0])  # the plane's outward normal, torso frame
    notch_y = float(neck["y_bottom_mm"])

    def on_plane(x: float, y: float) -> np.ndarray:
        return np.array([x, notch_y + y, float(dec["plane_z_mm"])])

    into = t - script.dec_from_s
    if into < script.dec_move_s:
        a, v = script.stroke(script.dec_from_s)
        p0, n0 = neck_surface_point(a, v, neck)
        p1 = on_plane(*script.dec_stroke(script.dec_from_s + script.dec_move_s))
        s = into / script.dec_move_s
        q, n = lifted_arc(p0, n0, p1, n_t, s)
        h = max(1.0, float(np.linalg.norm(q - ((1 - s) * p0 + s * p1))))
        uv = (float(q[0]), float(q[1])) if q[1] >= notch_y else (
            float(neck["radius_mm"]) * _neck_chart(q, neck)[0], float(q[1]))
        return torso.apply(q[None])[0], torso.R @ n, h, uv
    x, y = script.dec_stroke(t)
    p = on_plane(x, y)
    h = script.lifted_mm(t)
    return torso.apply((p + n_t * h)[None])[0], torso.R @ n_t, h, (float(p[0]), float(p[1]))


def neck_surface_point(alpha: float, v: float, neck: dict) -> tuple[np.ndarray, np.ndarray]:
    """Torso-frame point and outward normal on the neck cylinder at angle alpha (chart convention) and height v."""
    r = float(neck["radius_mm"])
    n = np.array([np.sin(alpha), 0.0, -np.cos(alpha)])
    return np.array([neck["axis_x_mm"], v, neck["axis_z_mm"]]) + r * n * np.array([1.0, 0.0, 1.0]), n


@dataclass(frozen=True)
class NeckSimResult:
    out_dir: Path
    frames: int
    fps: float
    contact_frames: int


def simulate_neck(out_dir: str | Path, *, script: NeckScript = NeckScript(), plan: str | Path = NECK_PLAN,
                  size: tuple[int, int] = (640, 480), force: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> NeckSimResult:
    """Render the scripted neck session into OUT_DIR (video, ground truth, info), whole or not at all."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise UserError("output folder exists and is not empty (use --force to replace it)", path=out_dir)
    if not script.touches:
        raise UserError("a neck session registers the band by touches", field="touches")
    the_plan = load_plan(plan)
    profile = load_handpiece_profile(the_plan.handpiece_profile)
    band = load_head_band("head_band_default")
    atlas, chart = load_atlas(), load_chart()
    mapper = ZoneMapper(chart, atlas)
    neck, scalp, dec = chart.surfaces["neck"], chart.surfaces["scalp"], chart.surfaces["decolletage"]
    camera = CameraModel.default(*size)
    rng = np.random.default_rng(script.seed)
    canonical = load_canonical_face()
    touch_plan = TouchPlan.make(script, canonical, chart.triangles)
    scene = client_scene(camera, chart, atlas, canonical, rng, script.seed, script.face, script.face_frame)
    take = HandpieceTake(profile, camera, script)
    on_head = band_on_head()
    torso0 = RigidPose(np.eye(3), np.array([0.0, script.torso_y_mm, script.torso_distance_mm]))
    design = PatchDesign()
    patch_body = design.body()
    patch_plates = {k: design.pitch_mm for k in patch_body.ids}
    on_sternum = sternum_skin(neck)
    standoff = RigidPose(np.eye(3), np.array([0.0, 0.0, -design.standoff_mm]))  # the card, out of the skin
    planned = tuple(the_plan.zones)
    plate = {i: 36.0 for i in band.ids}
    a0, v0 = script.stroke(script.strokes_from_s)
    first = neck_surface_point(a0, v0, neck)
    notch = notch_aim(script, neck)
    n = int(np.floor(script.duration_s * script.fps + 1e-9)) + 1
    dt = 1.0 / script.fps
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    rows: list[GTFrame] = []
    poses: list[list[float]] = []
    try:
        writer = cv2.VideoWriter(str(tmp / VIDEO_FILE), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter.fourcc(*"MJPG"),
                                 script.fps, size, [cv2.VIDEOWRITER_PROP_QUALITY, 95])
        if not writer.isOpened():
            raise UserError("cannot write an MJPG video here", path=tmp / VIDEO_FILE)
        try:
            for i in range(n):
                t = i * dt
                psi = script.psi_rad(t)
                m = script.torso_motion(t)
                torso = torso0.compose(RigidPose(np.eye(3), np.array([script.torso_shift_mm * m, 0.0, 0.0]))
                                       ).compose(about_axis(np.radians(script.torso_turn_deg) * m, neck))
                head = torso.compose(about_axis(psi, neck))
                band_pose = head.compose(on_head)
                touching = (touch_tip(script, t, touch_plan, scalp, first)
                            if t < script.face_touches_end_s or not script.notch_touch else None)
                at_notch = notch_tip(script, t, head, torso, touch_plan, notch, first)
                on_neck = False
                if at_notch is not None:  # to the notch, on it, or on to the neck
                    tip, normal_cam, h_mm = at_notch
                    alpha, v = _neck_chart(torso.inverse().apply(tip[None])[0], neck)
                    u = float(neck["radius_mm"]) * (alpha + psi * float(twist_share(v, neck)))
                    phase, on_neck = "touch", True
                elif touching is not None:  # on the face (head frame), or on the way
                    p_head, n_head, h_mm, _ = touching
                    u, v = (float(x) for x in face_uv(p_head, canonical, chart.triangles, chart.vertex_uv_mm))
                    tip = head.apply(p_head[None])[0]
                    normal_cam = head.R @ touch_hold_normal(p_head, n_head)
                    phase = "touch"
                elif t >= script.dec_from_s:  # the décolletage, on the torso (no twist there)
                    tip, normal_cam, h_mm, (u, v) = _on_decolletage(script, t, torso, neck, dec)
                    phase = "decolletage"
                else:  # on the neck: set on the torso, the skin twisted under it
                    alpha, v = script.stroke(t)
                    h_mm = script.lifted_mm(t)
                    p_t, n_t = neck_surface_point(alpha, v, neck)
                    u = float(neck["radius_mm"]) * (alpha + psi * float(twist_share(v, neck)))
                    tip = torso.apply((p_t + n_t * h_mm)[None])[0]
                    normal_cam = torso.R @ n_t
                    phase = script.phase(t)
                body = scene.render(head, band_pose, neck=torso, neck_twist=functools.partial(_twist, psi, neck),
                                    chest=torso)
                after = ([SceneItem(patch_body, torso.compose(on_sternum).compose(standoff), patch_plates)]
                         if script.patch else [])
                image, gt, speed = take.shoot(body, tip, normal_cam, dt, [SceneItem(band, band_pose, plate)], after,
                                              rng)
                writer.write(image)
                zone, bnd = atlas.zone_at(u, v)
                surface = "decolletage" if phase == "decolletage" else "neck"
                if (phase != "touch" or on_neck) and zone is not None and (mapper.on_face_mesh(u, v)
                                                                            or surface not in zone.carried_on):
                    zone = None  # the neck lookup never claims these
                rows.append(GTFrame(
                    frame_index=i, t_video_ns=int(round(t * 1e9)), source_frame=-1,
                    face_found=bool(abs(np.degrees(psi)) < 90.0),
                    segment={"touch": 0, "rest": 1, "turn": 2, "decolletage": 3}[phase], segment_type=phase,
                    contact=bool(h_mm <= 0.0), height_mm=float(h_mm), chart_u_mm=u, chart_v_mm=v,
                    true_zone=zone.name if zone else "", true_kind=zone.kind if zone else "",
                    boundary_mm=float(bnd) if zone else float("nan"), in_plan=zone is not None and zone.name in planned,
                    plan_distance_mm=float(atlas.region_distance_mm(planned, u, v)), facing_camera=True,
                    **tip_columns(gt, tip, speed)))
                poses.append([*map(float, head.rvec), *map(float, head.t_mm), float(np.degrees(psi))])
                if progress:
                    progress(i + 1, n)
        finally:
            writer.release()
        write_ground_truth(tmp / GROUND_TRUTH_FILE, rows)
        info = {
            "sim_version": NECK_SIM_VERSION, "kind": "neck", "guidance_version": __version__,
            "video": VIDEO_FILE, "video_codec": "MJPG quality 95", "ground_truth": GROUND_TRUTH_FILE,
            "script": asdict(script), "face_photo": script.face,
            "path": {"name": "neck_turn", "duration_s": script.duration_s, "plan": the_plan.source,
                     "plan_zones": list(planned), "plan_margin_mm": the_plan.margin_mm},
            "handpiece_profile": {"source": str(the_plan.handpiece_profile),
                                  "electrode_diameter_mm": profile.electrode_diameter_mm},
            "head_band": {"profile": "head_band_default", "band_on_head_rvec": [float(x) for x in on_head.rvec],
                          "band_on_head_tvec_mm": [float(x) for x in on_head.t_mm]},
            "torso": {"rvec": [float(x) for x in torso0.rvec], "tvec_mm": [float(x) for x in torso0.t_mm],
                      "patch": script.patch},
            "camera": camera.to_dict(), "frame_size": list(size), "fps": script.fps, "frames": n,
            "contact_frames": int(sum(r.contact for r in rows)),
            "head_poses": poses,  # per frame: rvec (3), tvec_mm (3), head -> camera, and the turn psi (degrees)
            "touches": {"landmarks": list(touch_plan.landmarks), "aimed_points_mm": touch_plan.points.tolist(),
                        "end_s": script.touches_end_s,
                        "notch_aimed_mm": notch.tolist() if script.notch_touch else None},
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
        commit_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return NeckSimResult(out_dir, n, script.fps, sum(r.contact for r in rows))
