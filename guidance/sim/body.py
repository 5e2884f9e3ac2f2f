"""Simulated body sessions: a skin reference patch and the handpiece on a rendered, gently curved body, with truth.

A body path (a path file whose plan has `area: body`) is scripted on the body
area's patch chart. There is no body video to draw into, so the body is
rendered: a skin-textured cylinder (radius `curvature_radius_mm` across the body,
straight along it; 0 is a flat plane) in front of a dark background, breathing
(a slow motion towards the camera and a slight sway), seen by the camera the
trackers get. The rigid patch card sits tangent to the skin at the chart's
origin, `standoff_mm` (tape and card) in front of it, exactly as
`designs.PatchDesign` says; its markers and the handpiece are drawn by the
marker renderer (`render.SceneRenderer`), the handpiece held as in a face
session (`simulate.Hand`: the clip leaning away from the patch, plates towards
the camera).

Chart truth: (u, v) are millimetres *on the skin* (arc length across the
cylinder from the patch centre, straight length along it), which is what the
atlas's zones mean. The service maps through the patch's plane, so on curved
skin its chart point falls short of the truth by what docs/body.md computes.

Everything else is as in a face simulation: the same video format, the same
ground-truth columns (`face_found` means the body and patch are drawn), and a
`patch_truth.csv` with the patch's true pose per frame.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from guidance import __version__
from guidance.errors import UserError
from guidance.resources import sha256_file
from guidance.sim.ground_truth import GROUND_TRUTH_FILE, GTFrame, write_ground_truth
from guidance.sim.path import SimPath, Trajectory, build_trajectory
from guidance.sim.render import SceneItem, SceneRenderer, blur_samples, handpiece_item
from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.designs import PatchDesign
from guidance.vision.handpiece.profiles import HandpieceProfile
from guidance.vision.rigid import RigidPose
from guidance.zones.atlas import Atlas
from guidance.zones.body_atlas import BodyArea, load_body_area

PATCH_TRUTH_FILE = "patch_truth.csv"
_TEX_PX_PER_MM = 2.0
_TEX_HALF_MM = 320.0


@dataclass(frozen=True)
class BodyScene:
    """The rendered body: its shape, where it is in front of the camera, and how it moves."""

    curvature_radius_mm: float = 400.0  # across the body (u); 0: a flat plane. Straight along v.
    distance_mm: float = 450.0  # camera to the patch centre
    offset_mm: tuple[float, float] = (15.0, 10.0)  # patch centre off the optical axis (camera x, y)
    tilt_deg: tuple[float, float] = (14.0, -10.0)  # body turned about the camera's x and y axes
    motion_mm: float = 3.0  # breathing: towards / away from the camera, amplitude
    breathing_period_s: float = 4.0
    sway_deg: float = 1.0  # a slight turn about the body's long axis
    sway_period_s: float = 7.0
    seed: int = 0

    def skin_pose(self, t_s: float) -> RigidPose:
        """Skin frame (origin on the skin under the card centre, x = u, y = v, z into the body) → camera."""
        tx, ty = np.radians(self.tilt_deg)
        sway = np.radians(self.sway_deg) * math.sin(2 * math.pi * t_s / self.sway_period_s)
        R = cv2.Rodrigues(np.array([tx, 0.0, 0.0]))[0] @ cv2.Rodrigues(np.array([0.0, ty, 0.0]))[0] \
            @ cv2.Rodrigues(np.array([0.0, sway, 0.0]))[0]
        breathe = self.motion_mm * math.sin(2 * math.pi * t_s / self.breathing_period_s)
        t = np.array([self.offset_mm[0], self.offset_mm[1], self.distance_mm]) - R[:, 2] * breathe
        return RigidPose(R, t)

    def skin_point(self, u_mm: float, v_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """The skin point at chart (u, v) and its outward normal, in the skin frame."""
        r = self.curvature_radius_mm
        if r <= 0:
            return np.array([u_mm, v_mm, 0.0]), np.array([0.0, 0.0, -1.0])
        th = u_mm / r
        return (np.array([r * math.sin(th), v_mm, r * (1 - math.cos(th))]),
                np.array([-math.sin(th), 0.0, -math.cos(th)]))


def skin_texture(seed: int, half_mm: float = _TEX_HALF_MM, px_per_mm: float = _TEX_PX_PER_MM) -> np.ndarray:
    """A skin-coloured texture over the chart (BGR float32): tone variation, mottling, pores, a few moles."""
    rng = np.random.default_rng(seed)
    n = int(2 * half_mm * px_per_mm)
    base = np.array([150.0, 178.0, 226.0], np.float32)
    img = np.empty((n, n, 3), np.float32)
    img[:] = base
    for sigma_mm, amp in ((40.0, 10.0), (8.0, 6.0), (1.5, 4.0), (0.4, 3.0)):
        noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, (n, n)).astype(np.float32), (0, 0), sigma_mm * px_per_mm)
        img += (noise * (amp / max(float(noise.std()), 1e-6)))[..., None] * np.array([0.8, 0.9, 1.0], np.float32)
    for _ in range(int(n * n / (px_per_mm * 60) ** 2)):  # moles, about one per 60 x 60 mm
        c = (int(rng.uniform(0, n)), int(rng.uniform(0, n)))
        cv2.circle(img, c, int(rng.uniform(0.6, 1.5) * px_per_mm), (70, 90, 125), -1, cv2.LINE_AA)
    return img


class BodyRenderer:
    """Ray-casts the skin (and the patch card's white border) for each pixel, then draws the markers."""

    def __init__(self, camera: CameraModel, scene: BodyScene, design: PatchDesign = PatchDesign()):
        self.camera = camera
        self.scene = scene
        self.design = design
        w, h = camera.size
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        pts = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2)
        und = cv2.undistortPoints(pts, camera.K, camera.dist).reshape(h, w, 2)
        self.rays = np.concatenate([und, np.ones((h, w, 1))], axis=2)  # camera frame, z = 1
        self.texture = skin_texture(scene.seed)
        rng = np.random.default_rng(scene.seed + 1)
        cloth = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 3.0)
        self.background = (np.array([52.0, 44.0, 40.0], np.float32)
                           + cloth[..., None] * np.array([6.0, 6.0, 6.0], np.float32) / max(float(cloth.std()), 1e-6))
        self.markers = SceneRenderer(camera)
        self.patch_body = design.body()

    def patch_pose(self, skin_pose: RigidPose) -> RigidPose:
        """The card's (markers') frame: the skin frame moved `standoff_mm` out of the skin."""
        return RigidPose(skin_pose.R, skin_pose.t_mm - skin_pose.R[:, 2] * self.design.standoff_mm)

    def body_image(self, skin_pose: RigidPose) -> np.ndarray:
        """The skin and the card (white) under this pose, shaded; BGR float32."""
        R, t = skin_pose.R, skin_pose.t_mm
        o = -R.T @ t  # camera centre in the skin frame
        d = self.rays @ R  # ray directions in the skin frame (each row: R.T @ ray)
        h, w = d.shape[:2]
        r = self.scene.curvature_radius_mm
        if r > 0:
            a = d[..., 0] ** 2 + d[..., 2] ** 2
            b = 2 * (o[0] * d[..., 0] + (o[2] - r) * d[..., 2])
            c = o[0] ** 2 + (o[2] - r) ** 2 - r * r
            disc = b * b - 4 * a * c
            lam = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * np.maximum(a, 1e-12))
            p = o + lam[..., None] * d
            theta = np.arctan2(p[..., 0], r - p[..., 2])
            hit = (disc > 0) & (lam > 0) & (np.abs(theta) < np.radians(80))
            u, v = r * theta, p[..., 1]
            normal = np.stack([-np.sin(theta), np.zeros_like(theta), -np.cos(theta)], axis=-1)
        else:
            lam = (0.0 - o[2]) / np.where(np.abs(d[..., 2]) > 1e-12, d[..., 2], 1e-12)
            p = o + lam[..., None] * d
            hit = lam > 0
            u, v = p[..., 0], p[..., 1]
            normal = np.broadcast_to(np.array([0.0, 0.0, -1.0]), p.shape)
        s = _TEX_PX_PER_MM
        mx = ((u + _TEX_HALF_MM) * s - 0.5).astype(np.float32)
        my = ((v + _TEX_HALF_MM) * s - 0.5).astype(np.float32)
        skin = cv2.remap(self.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        # a lamp above-left of the camera; normals in the camera frame
        n_cam = normal @ R.T
        light = np.array([-0.35, -0.5, -1.0])
        light /= np.linalg.norm(light)
        shade = 0.6 + 0.45 * np.clip(n_cam @ light, 0.0, 1.0)  # light: towards the lamp, beside the camera
        img = np.where(hit[..., None], skin * shade[..., None], self.background)
        # the card's white border (the plates inside it are drawn by the marker renderer)
        zc = -self.design.standoff_mm
        lam_c = (zc - o[2]) / np.where(np.abs(d[..., 2]) > 1e-12, d[..., 2], 1e-12)
        pc = o + lam_c[..., None] * d
        cw, ch = self.design.size_mm
        card = (lam_c > 0) & (np.abs(pc[..., 0]) <= cw / 2) & (np.abs(pc[..., 1]) <= ch / 2)
        card_shade = 0.55 + 0.45 * abs(float(R[:, 2] @ (t / np.linalg.norm(t))))
        img[card] = 235.0 * card_shade
        return img.astype(np.float32).reshape(h, w, 3)

    def patch_item(self, skin_pose: RigidPose, velocity_mm_s: np.ndarray) -> SceneItem:
        plates = {i: self.design.pitch_mm for i in self.patch_body.ids}
        return SceneItem(self.patch_body, self.patch_pose(skin_pose), plates, linear_velocity_mm_s=velocity_mm_s)


def _patch_truth_row(i: int, pose: RigidPose, renderer: BodyRenderer) -> dict:
    w, h = renderer.camera.size
    visible = []
    for mid in renderer.patch_body.ids:
        px = renderer.markers.project(pose.apply(renderer.patch_body.corners_mm[mid]))
        if np.all((px[:, 0] >= 0) & (px[:, 0] <= w - 1) & (px[:, 1] >= 0) & (px[:, 1] <= h - 1)):
            visible.append(mid)
    r, t = pose.rvec, pose.t_mm
    return {"frame_index": i, "rvec": " ".join(f"{x:.8f}" for x in r), "tvec_mm": " ".join(f"{x:.5f}" for x in t),
            "markers_in_image": "+".join(str(k) for k in visible)}


def load_patch_truth(sim_dir: str | Path) -> list[RigidPose]:
    """The true patch (card) pose per frame of a body simulation."""
    out = []
    with open(Path(sim_dir) / PATCH_TRUTH_FILE, newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(RigidPose.from_rvec(np.array([float(x) for x in row["rvec"].split()]),
                                           np.array([float(x) for x in row["tvec_mm"].split()])))
    return out


def body_area_of(sim: SimPath) -> BodyArea:
    assert sim.plan is not None and sim.plan.area == "body", "a body path has a body plan"
    return load_body_area(sim.plan.body_area)


def body_trajectory(sim: SimPath, area: BodyArea) -> Trajectory:
    g = area.atlas.grid
    uu, vv = np.meshgrid(g.u0_mm + np.arange(g.width) * g.cell_mm, g.v0_mm + np.arange(g.height) * g.cell_mm)
    cells = (uu / area.range_mm[0]) ** 2 + (vv / area.range_mm[1]) ** 2 <= 1.0

    def in_range(uv: np.ndarray) -> np.ndarray:
        uv = np.atleast_2d(uv)
        return (uv[:, 0] / area.range_mm[0]) ** 2 + (uv[:, 1] / area.range_mm[1]) ** 2 <= 1.0

    return build_trajectory(sim, area.atlas, in_range, cells,
                            off_mesh="leaves the body area's range around the patch at ({u:.1f}, {v:.1f}) mm "
                                     "(guidance atlas --body AREA --list)")


def simulate_body(sim: SimPath, out_dir: Path, *, profile: HandpieceProfile, profile_path: str | Path,
                  camera: CameraModel | None, size: tuple[int, int] | None, max_frames: int | None,
                  progress: Callable[[int, int], None] | None, commit: Callable[[Path, Path], None],
                  fps: float = 30.0) -> tuple[int, float, float, int, int]:
    """Render a body path into OUT_DIR (through `commit(tmp, out_dir)`); (frames, fps, duration, drawn, contact)."""
    from guidance.sim.simulate import INFO_FILE, PATH_COPY, SIM_VERSION, VIDEO_FILE

    area = body_area_of(sim)
    traj = body_trajectory(sim, area)
    w, h = size or (camera.size if camera is not None else (640, 480))
    if camera is not None and abs(camera.size[0] / camera.size[1] - w / h) > 0.01:
        raise UserError(f"calibrated for {camera.size[0]}x{camera.size[1]}, but the frames are {w}x{h}",
                        path=camera.source, field="image_size")
    camera = camera.scaled_to(w, h) if camera is not None else CameraModel.default(w, h)
    opts = sim.render
    scene = BodyScene(curvature_radius_mm=float(opts.get("curvature_radius_mm", BodyScene.curvature_radius_mm)),
                      motion_mm=float(opts.get("body_motion_mm", BodyScene.motion_mm)), seed=int(opts["seed"]))
    n_out = int(np.floor(traj.duration_s * fps + 1e-9)) + 1
    if max_frames is not None:
        n_out = min(n_out, max_frames)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    try:
        rows, patch_rows = _render_body(sim, traj, area.atlas, scene, profile, camera, fps, n_out, tmp / VIDEO_FILE,
                                        progress)
        write_ground_truth(tmp / GROUND_TRUTH_FILE, rows)
        with open(tmp / PATCH_TRUTH_FILE, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=list(patch_rows[0]))
            wr.writeheader()
            wr.writerows(patch_rows)
        shutil.copyfile(sim.source, tmp / PATH_COPY)
        assert sim.plan is not None
        info = {
            "sim_version": SIM_VERSION, "guidance_version": __version__, "video": VIDEO_FILE,
            "video_codec": "MJPG quality 95", "ground_truth": GROUND_TRUTH_FILE,
            "face_video": None,
            "body": {"area": area.name, "scene": asdict(scene), "patch_truth": PATCH_TRUTH_FILE,
                     "note": "rendered body (skin cylinder), no face video; face_found = body and patch drawn"},
            "path": {"source": str(sim.source), "copy": PATH_COPY, "sha256": sha256_file(sim.source),
                     "name": sim.name, "duration_s": traj.duration_s, "plan": sim.plan.source,
                     "plan_zones": list(sim.plan.zones), "plan_margin_mm": sim.plan.margin_mm},
            "handpiece_profile": {"source": str(profile_path), "sha256": sha256_file(Path(profile.source)),
                                  "electrode_diameter_mm": profile.electrode_diameter_mm},
            "camera": camera.to_dict() | {"source": camera.source},
            "frame_size": [w, h], "fps": fps, "frames": n_out, "render": opts,
            "face_found_frames": int(sum(r.face_found for r in rows)),
            "contact_frames": int(sum(r.contact for r in rows)),
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        commit(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n_out, fps, traj.duration_s, int(sum(r.face_found for r in rows)), int(sum(r.contact for r in rows))


def _render_body(sim: SimPath, traj: Trajectory, atlas: Atlas, scene: BodyScene, profile: HandpieceProfile,
                 camera: CameraModel, fps: float, n_out: int, video_path: Path,
                 progress) -> tuple[list[GTFrame], list[dict]]:
    from guidance.sim.simulate import Hand, _plan_fields, _rotation_rate

    w, h = camera.size
    opts = sim.render
    rng = np.random.default_rng(int(opts["seed"]))
    body = BodyRenderer(camera, scene)
    hand = Hand(profile, camera, float(opts["tilt_deg"]))
    writer = cv2.VideoWriter(str(video_path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h),
                             [cv2.VIDEOWRITER_PROP_QUALITY, 95])
    if not writer.isOpened():
        raise UserError("cannot write an MJPG video here", path=video_path)
    dt = 1.0 / fps
    rows: list[GTFrame] = []
    patch_rows: list[dict] = []
    prev: tuple[np.ndarray, RigidPose] | None = None
    try:
        for i in range(n_out):
            t_s = i * dt
            t_ns = int(round(i * 1e9 / fps))
            s = traj.sample(t_s)
            u, v = float(s.uv_mm[0]), float(s.uv_mm[1])
            zone, bnd = atlas.zone_at(u, v)
            in_plan, plan_d = _plan_fields(sim, atlas, zone.name if zone else None, u, v)
            skin = scene.skin_pose(t_s)
            skin_next = scene.skin_pose(t_s + 1e-3)
            body_velocity = (skin_next.t_mm - skin.t_mm) / 1e-3
            p_skin, n_skin = scene.skin_point(u, v)
            point = skin.apply(p_skin)
            normal = skin.R @ n_skin
            tip = point + normal * s.height_mm
            pose = hand.hold(tip, skin.R, skin.t_mm, dt)
            lin, ang, speed = np.zeros(3), np.zeros(3), float("nan")
            if prev is not None:
                lin = (tip - prev[0]) / dt
                ang = _rotation_rate(prev[1].R, pose.R, dt)
                speed = float(np.linalg.norm(lin))
            item = handpiece_item(profile, pose, linear_velocity_mm_s=lin, angular_velocity_rad_s=ang,
                                  rotate_about_tip=True)
            n_blur = blur_samples(profile, float(tip[2]), camera.fx, float(opts["exposure_s"]), lin, ang)
            background = np.clip(body.body_image(skin) + 0.5, 0, 255).astype(np.uint8)
            image, truth = body.markers.render(background, [body.patch_item(skin, body_velocity), item],
                                               exposure_s=float(opts["exposure_s"]), blur_samples=n_blur,
                                               noise_sigma=float(opts["noise_sigma"]), rng=rng)
            gt = truth[1]
            assert gt.tip_px is not None and gt.tip_mm is not None, "the handpiece has a tip"
            skin_px = body.markers.project(point)[0]
            facing = bool(normal @ point < 0)
            prev = (tip, pose)
            writer.write(image)
            patch_rows.append(_patch_truth_row(i, body.patch_pose(skin), body))
            rows.append(GTFrame(
                frame_index=i, t_video_ns=t_ns, source_frame=0, face_found=True, segment=s.segment,
                segment_type=s.kind, contact=s.contact, height_mm=float(s.height_mm), chart_u_mm=u, chart_v_mm=v,
                true_zone=zone.name if zone else "", true_kind=zone.kind if zone else "", boundary_mm=float(bnd),
                in_plan=in_plan, plan_distance_mm=float(plan_d),
                tip_x_px=float(gt.tip_px[0]), tip_y_px=float(gt.tip_px[1]),
                tip_x_mm=float(gt.tip_mm[0]), tip_y_mm=float(gt.tip_mm[1]), tip_z_mm=float(gt.tip_mm[2]),
                skin_x_px=float(skin_px[0]), skin_y_px=float(skin_px[1]),
                speed_mm_s=speed, chart_speed_mm_s=s.chart_speed_mm_s, facing_camera=facing,
                markers_visible="+".join(str(k) for k in sorted(gt.visible_ids))))
            if progress:
                progress(i + 1, n_out)
    finally:
        writer.release()
    return rows, patch_rows
