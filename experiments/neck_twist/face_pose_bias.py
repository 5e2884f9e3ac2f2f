"""How far a face session's neck and décolletage are off because of the face pose, on several faces (experiment).

A face session places the neck and the décolletage on the torso's rest frame,
which is the face tracker's head pose at rest (zones/neck_twist.py). On the
rendered client the head *is* the canonical face, so any error there is the
face tracker's pose bias: the landmarks it finds on that face, fitted to the
canonical face. docs/neck.md measured it on one face (single_face.jpg, a
training face): 7 mm on the neck at rest, 13 mm on the décolletage. This
measures it on every face given, textured on the rendered client in turn.

For each face: the client sits facing the camera with a small sway (+-4
degrees of yaw, 1.5 s at 30 fps), the face tracker runs in the product's
configuration on every frame, the rest pose is made as the product makes it
(`TorsoReferenceBuilder`: the first 15 near-frontal poses), and skin points on
the neck's front (3 heights, u every 10 mm within +-40 mm) and on the
décolletage beside the sternum are mapped through it against their truth. The
figure per face is the median and p90 of the chart error over the frames after
the rest.

Faces are named as pinned samples (`guidance media fetch NAME`); a video gives
its frame `--frame` (default 30). Which faces train and which evaluate:
guidance/data/face_sets.yaml.

Usage: python experiments/neck_twist/face_pose_bias.py OUT.json NAME [NAME ...]   (about 20 s a face on 2 cores)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from guidance.sim.neck_turn import about_axis, neck_surface_point
from guidance.sim.scalp import face_texture
from guidance.vision.capture.sources import Frame
from guidance.vision.rigid import RigidPose
from guidance.zones.neck_twist import TorsoReferenceBuilder, locate_decolletage, locate_neck, twist_share

from neck_twist import RenderedClient  # the experiment beside this one (run as a script: its folder is on the path)

FPS = 30.0
FRAMES = 45
SWAY_DEG = 4.0
SIZE = (640, 480)


def measure(name: str, frame: int) -> dict:
    client = RenderedClient(face_texture(name, frame))
    if client.scene is None:
        return {"face": name, "error": "no face found in the photo"}
    chart, scene, renderer = client.chart, client.scene, client.renderer
    neck, dec = chart.surfaces["neck"], chart.surfaces["decolletage"]
    rng, torso, tracker = client.rng, client.torso, client.tracker
    builder = TorsoReferenceBuilder()
    neck_pts = [(u, v) for v in (95.0, 140.0, 185.0) for u in np.arange(-40.0, 41.0, 10.0)]
    dec_pts = [(x, float(neck["y_bottom_mm"]) + dy) for dy in (15.0, 40.0) for x in (-70.0, -45.0, 45.0, 70.0)]
    errs: dict[str, list[float]] = {"neck": [], "decolletage": []}
    found = 0
    for i in range(FRAMES):
        t = i / FPS
        psi = np.radians(SWAY_DEG) * np.sin(2 * np.pi * 0.5 * t)
        head = torso.compose(about_axis(psi, neck))
        img = scene.render(head, neck=torso, neck_twist=lambda y, a=psi: a * twist_share(y, neck), chest=torso)
        img, _ = renderer.render(img, [], noise_sigma=1.5, rng=rng)
        f = tracker.process(Frame(i, int(t * 1e9), img))
        hp = f.head_pose if f.found and f.head_pose is not None and f.head_pose.valid else None
        if hp is None:
            continue
        found += 1
        face = RigidPose(hp.R, np.asarray(hp.tvec_mm, float))
        yaw = float(np.degrees(np.arcsin(-np.clip(face.R[2, 0], -1.0, 1.0))))
        ref = builder.add(face, yaw)
        if ref is None:
            continue
        for u, v in neck_pts:  # the skin point of rest chart (u, v), turned with the twist under the sway
            p_rest, _ = neck_surface_point(u / neck["radius_mm"], v, neck)
            p = torso.apply(about_axis(psi * float(twist_share(v, neck)), neck).apply(p_rest[None]))[0]
            hit = locate_neck(ref, face, p / np.linalg.norm(p), neck)
            if hit is not None:
                errs["neck"].append(float(np.hypot(hit.chart_mm[0] - u, hit.chart_mm[1] - v)))
        for x, y in dec_pts:
            p = torso.apply(np.array([[x, y, dec["plane_z_mm"]]]))[0]
            hit = locate_decolletage(ref, face, p / np.linalg.norm(p), dec)
            if hit is not None:
                errs["decolletage"].append(float(np.hypot(hit.chart_mm[0] - x, hit.chart_mm[1] - y)))
    out: dict = {"face": name, "frames": FRAMES, "face_found": found}
    for k, e in errs.items():
        out[k] = ({"n": len(e), "median": float(np.median(e)), "p90": float(np.percentile(e, 90))} if e
                  else {"n": 0})
    return out


def main(argv: list[str]) -> int:
    frame = 30
    if "--frame" in argv:
        k = argv.index("--frame")
        frame = int(argv[k + 1])
        argv = argv[:k] + argv[k + 2:]
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    results = []
    for name in argv[1:]:
        r = measure(name, frame)
        print(json.dumps(r), flush=True)
        results.append(r)
    Path(argv[0]).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
