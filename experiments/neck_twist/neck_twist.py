"""What a head turn does to the neck's zones: the face session's mapping against a neck that twists (experiment).

Renders (``sim/head_scene.py``) the client's head turning on a still torso,
+-45 degrees about the neck's axis, the neck twisting under it: its skin at the
jaw turns with the head, at the sternal notch not at all, linearly between
(the neck's chart cylinder, ``surfaces["neck"]``; `w(y)` below). A skin point
keeps its chart position (u, v) -- the chart at rest, head facing the
camera -- so the truth of a point is where it is on the client, whatever the
head does. For points over the visible front of the neck, on every frame, the
face tracker (the product's configuration) gives a head pose, and the point's
pixel (exact: the tip is not rendered, so the mapping alone is measured) is
mapped to the chart:

- ``head``: as a face session does today (``ZoneMapper``): the neck cylinder
  carried by the head pose, as if the neck turned whole with the head;
- ``twist (face pose)``: the neck on the torso, which is taken as still: its
  frame is the head pose at rest (the median of the first second's face
  poses), and the skin's turn at height y is w(y) times the head's yaw since
  then, read from the face pose;
- ``twist (true pose)``: the same with the rendering's exact head pose: the
  floor of the twist model (zero here, where the rendering is the model);
- ``head (true pose)``: today's mapping with the exact head pose: the error
  of carrying the neck with the head alone.

The décolletage (the chart's plane below the notch, rendered too) is measured
the same way for points beside the sternum: ``decolletage: head`` carried by
the head pose (a face session before it stood on the torso) against
``decolletage: torso`` on the rest frame (``neck_twist.locate_decolletage``).

The rendered face is textured from ``single_face.jpg``, a training face
(``guidance/data/face_sets.yaml``): the face pose's errors here are about the
mechanism, not an evaluation.

Usage: python experiments/neck_twist/neck_twist.py [OUT.json]   (about 1 minute on 2 cores)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from guidance.pipeline import PipelineConfig
from guidance.samples import fetch
from guidance.sim.head_scene import HeadScene
from guidance.sim.neck_turn import about_axis, neck_surface_point
from guidance.sim.render import SceneRenderer
from guidance.vision.capture.camera import CameraModel
from guidance.vision.capture.sources import Frame
from guidance.vision.face.head_pose import load_canonical_face
from guidance.vision.face.landmarks import ORIGINAL_LANDMARK_MODEL
from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.rigid import RigidPose, mean_rotation
from guidance.zones.atlas import load_atlas
from guidance.zones.chart import load_chart
from guidance.zones.neck_twist import TorsoReference, head_turn_rad, locate_decolletage, locate_neck, twist_share
from guidance.zones.surfaces import intersect_decolletage, intersect_neck, ray_in_head_frame

FPS = 30.0
REST_S = 1.0  # head facing the camera: the rest pose
TURN_S = 8.0  # then +-45 degrees, once each way
TURN_DEG = 45.0
SIZE = (640, 480)


def yaw_deg(t: float) -> float:
    if t < REST_S:
        return 0.0
    return TURN_DEG * float(np.sin(2 * np.pi * (t - REST_S) / TURN_S))


def neck_point(u: float, v: float, neck: dict) -> np.ndarray:
    """The rest frame's point of chart (u, v) on the neck cylinder (the inverse of `intersect_neck`'s chart)."""
    return neck_surface_point(u / neck["radius_mm"], v, neck)[0]


def map_twist(torso: RigidPose, psi: float, head: RigidPose, ray_cam: np.ndarray,
              neck: dict) -> tuple[float, float] | None:
    """The product's twisted neck (zones/neck_twist.py): chart (u, v) of a camera ray."""
    hit = locate_neck(TorsoReference(torso, psi), head, ray_cam, neck)
    return None if hit is None else hit.chart_mm


def map_head(head: RigidPose, ray_cam: np.ndarray, neck: dict) -> tuple[float, float] | None:
    """The neck carried by the head whole (a face session before the twist model)."""
    o, d = ray_in_head_frame(head.R, head.t_mm, ray_cam)
    hit = intersect_neck(o, d, neck)
    return None if hit is None else hit.chart_mm


def map_head_decolletage(head: RigidPose, ray_cam: np.ndarray, dec: dict) -> tuple[float, float] | None:
    """The décolletage plane carried by the head whole (a face session before it stood on the torso)."""
    o, d = ray_in_head_frame(head.R, head.t_mm, ray_cam)
    hit = intersect_decolletage(o, d, dec)
    return None if hit is None else hit.chart_mm


def map_torso_decolletage(torso: RigidPose, head: RigidPose, ray_cam: np.ndarray,
                          dec: dict) -> tuple[float, float] | None:
    hit = locate_decolletage(TorsoReference(torso, 0.0), head, ray_cam, dec)
    return None if hit is None else hit.chart_mm


class RenderedClient:
    """The rendered client of both experiments: the canonical head textured with `photo` on a still torso 480 mm
    away (the torso = the head frame at rest, the chin in the middle of the picture), a noisy grey background, and
    the product's face tracker to watch it. `found` is False when no face is found in the photo."""

    def __init__(self, photo: np.ndarray):
        self.chart, self.atlas = load_chart(), load_atlas()
        self.cam = CameraModel.default(*SIZE)
        seen = FaceTracker(TrackerConfig(smoothing=False, landmark_model=ORIGINAL_LANDMARK_MODEL)).process(
            Frame(0, 0, photo))
        self.found = bool(seen.found and seen.landmarks_raw is not None)
        self.rng = np.random.default_rng(5)
        bg = np.clip(self.rng.normal(150, 8, (SIZE[1], SIZE[0], 3)), 0, 255).astype(np.uint8)
        self.scene = (HeadScene(self.cam, self.chart.surfaces, self.atlas, load_canonical_face(), self.chart.triangles,
                                photo, seen.landmarks_raw, bg, seed=5) if self.found else None)
        self.renderer = SceneRenderer(self.cam)
        self.torso = RigidPose(np.eye(3), np.array([0.0, -85.0, 470.0]))
        self.tracker = FaceTracker(PipelineConfig().tracker, self.cam)


def main(argv: list[str]) -> int:
    client = RenderedClient(cv2.imread(str(fetch("single_face.jpg"))))
    chart, scene, renderer = client.chart, client.scene, client.renderer
    neck, dec = chart.surfaces["neck"], chart.surfaces["decolletage"]
    rng, torso, tracker = client.rng, client.torso, client.tracker
    assert scene is not None, "no face in single_face.jpg"
    # sample points over the neck: 3 heights, chart u every 10 mm
    us, vs = np.arange(-80.0, 81.0, 10.0), np.array([95.0, 140.0, 185.0])
    points = [(u, v) for v in vs for u in us]
    # décolletage points beside the sternum, 15-40 mm below the notch (in the picture)
    dec_points = [(x, float(neck["y_bottom_mm"]) + dy) for dy in (15.0, 40.0) for x in (-70.0, -45.0, 45.0, 70.0)]
    n = int((REST_S + TURN_S) * FPS)
    rows: list[dict] = []
    rest: list[RigidPose] = []
    for i in range(n):
        t = i / FPS
        psi = np.radians(yaw_deg(t))
        head = torso.compose(about_axis(psi, neck))
        img = scene.render(head, neck=torso, neck_twist=lambda y, p=psi: p * twist_share(y, neck), chest=torso)
        img, _ = renderer.render(img, [], noise_sigma=1.5, rng=rng)
        f = tracker.process(Frame(i, int(t * 1e9), img))
        hp = f.head_pose if f.found and f.head_pose is not None and f.head_pose.valid else None
        face = RigidPose(hp.R, np.asarray(hp.tvec_mm, float)) if hp is not None else None
        if face is not None and t < REST_S:
            rest.append(face)
        rows.append({"t": t, "psi": psi, "head": head, "face": face})
    rest_pose = RigidPose(mean_rotation([r.R for r in rest]), np.median([r.t_mm for r in rest], axis=0))
    errs: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["t"] < REST_S:
            continue
        psi, head, face = row["psi"], row["head"], row["face"]
        bin_ = f"{int(abs(np.degrees(psi)) // 15) * 15}-{int(abs(np.degrees(psi)) // 15) * 15 + 15} deg"
        psi_face = head_turn_rad(rest_pose.R, face.R) if face is not None else None
        for u, v in points:
            p_rest = neck_point(u, v, neck)
            al = psi * float(twist_share(np.array([v]), neck)[0])
            p_now = torso.apply(about_axis(al, neck).apply(p_rest[None])[0][None])[0]
            n_now = torso.R @ about_axis(al, neck).R @ np.array([np.sin(u / neck["radius_mm"]), 0.0,
                                                                  -np.cos(u / neck["radius_mm"])])
            if n_now @ p_now >= -0.2 * np.linalg.norm(p_now):  # facing away, or at a grazing angle: not seen
                continue
            ray = p_now / np.linalg.norm(p_now)
            results = {"head (true pose)": map_head(head, ray, neck),
                       "twist (true pose)": map_twist(torso, psi, head, ray, neck)}
            if face is not None:
                results["head (face pose)"] = map_head(face, ray, neck)
                results["twist (face pose)"] = map_twist(rest_pose, float(psi_face), face, ray, neck)
            for k, uv in results.items():
                e = float("inf") if uv is None else float(np.hypot(uv[0] - u, uv[1] - v))
                errs.setdefault(k, {}).setdefault(bin_, []).append(e)
                errs[k].setdefault(f"v={v:g}", []).append(e)
                errs[k].setdefault("all", []).append(e)
        for x, y in dec_points:
            p_now = torso.apply(np.array([[x, y, dec["plane_z_mm"]]]))[0]
            ray = p_now / np.linalg.norm(p_now)
            results = {"decolletage: head (true pose)": map_head_decolletage(head, ray, dec),
                       "decolletage: torso (true pose)": map_torso_decolletage(torso, head, ray, dec)}
            if face is not None:
                results["decolletage: head (face pose)"] = map_head_decolletage(face, ray, dec)
                results["decolletage: torso (face pose)"] = map_torso_decolletage(rest_pose, face, ray, dec)
            for k, uv in results.items():
                e = float("inf") if uv is None else float(np.hypot(uv[0] - x, uv[1] - y))
                errs.setdefault(k, {}).setdefault(bin_, []).append(e)
                errs[k].setdefault("all", []).append(e)

    def stats(x: list[float]) -> dict:
        """Over the points mapped; `missed`: the ray passed the cylinder (a grazing neck point): no chart point."""
        f = np.asarray(x)[np.isfinite(x)]
        return {"n": len(x), "missed": int(len(x) - len(f)), "median": float(np.median(f)),
                "p90": float(np.percentile(f, 90))}

    table = {k: {b: stats(x) for b, x in sorted(d.items())} for k, d in errs.items()}
    faces = sum(r["face"] is not None for r in rows)
    out = {"frames": n, "face_found": faces, "rest_frames": len(rest), "chart_error_mm": table}
    print(json.dumps(out, indent=1))
    if argv:
        Path(argv[0]).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
