"""How far the head pose's scalp ellipsoid is from a face's own forehead edge, face by face (experiment).

A face session maps a point above the forehead on the canonical head's scalp
ellipsoid, placed by the face tracker's head pose (zones/surfaces.py). Within
5 mm of the tracked mesh's outline the mapper extends the mesh instead
(`FaceFrame.edge_hit`), continuous with the face. Where the extension ends,
the two maps of the same pixel should agree if the ellipsoid fitted this
head; how far apart they are is the ellipsoid's misplacement at the hairline
for this face (a lower bound of its error further up, where nothing checks
it). On the two-face session's evaluation face the scalp-mapped tips were
5-14 mm from the truth, while the gate's sigma there was the face mapping's,
about 3 mm.

For each face (a photo, or a video's frame `--frame`, default 30): the face
tracker in the product's configuration, the default camera, and from each of
the eleven landmarks on the top of the face oval a walk outward (a quarter
pixel at a time) to the last pixel the extension still maps; there the chart
distance between the extension's point and the ellipsoid's (or "gap" when
the camera ray meets no scalp that the mesh does not already cover). The
figure per face is the median and p90 over the eleven.

Faces are named as pinned samples (`guidance media fetch NAME`); which train
and which evaluate: guidance/data/face_sets.yaml.

Usage: python experiments/scalp_seam/scalp_seam.py OUT.json NAME [NAME ...]
"""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np

from guidance.sim.scalp import face_texture
from guidance.vision.capture.camera import CameraModel
from guidance.vision.capture.sources import Frame
from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.zones.mapper import ZoneMapper
from guidance.zones.surfaces import cast_ray

# the face oval's top, temple to temple (mediapipe's FACEMESH_FACE_OVAL)
TOP_OF_OVAL = (54, 103, 67, 109, 10, 338, 297, 332, 284, 21, 251)


def seam_distances(name: str, frame: int = 30) -> dict:
    image = face_texture(name, frame)
    h, w = image.shape[:2]
    obs = FaceTracker(TrackerConfig(smoothing=False)).process(Frame(0, 0, image))
    if not obs.found or obs.landmarks is None or obs.head_pose is None or not obs.head_pose.valid:
        return {"face": name, "error": "no face or no valid head pose"}
    mapper = ZoneMapper()
    cam = CameraModel.default(w, h)
    ff = mapper.prepare(obs, (w, h), cam)
    assert ff is not None
    lm = obs.landmarks[:, :2]
    centre = lm.mean(0)
    out: list[float] = []
    gaps = 0
    for i in TOP_OF_OVAL:
        d = (lm[i] - centre) / np.linalg.norm(lm[i] - centre)
        last = None
        for s in np.arange(0.0, 80.0, 0.25):
            x, y = map(float, lm[i] + s * d)
            if ff.hit(x, y) is not None:
                continue
            e = ff.edge_hit(x, y)
            if e is None:
                break
            last = (x, y, mapper.chart.uv_of(e[0], e[1]))
        if last is None:
            continue
        x, y, uv_ext = last
        pt = cv2.undistortPoints(np.array([[[x, y]]], np.float64), cam.K, cam.dist).reshape(2)
        hits = [hh for hh in cast_ray(obs.head_pose.R, np.asarray(obs.head_pose.tvec_mm, float),
                                      np.array([pt[0], pt[1], 1.0]), mapper.chart.surfaces) if hh.surface == "scalp"]
        if not hits or mapper.on_face_mesh(*hits[0].chart_mm):
            gaps += 1
            continue
        out.append(float(np.hypot(*(np.asarray(hits[0].chart_mm) - uv_ext))))
    a = np.array(out)
    return {"face": name, "points": len(out), "gaps": gaps,
            "median_mm": float(np.median(a)) if len(a) else None,
            "p90_mm": float(np.percentile(a, 90)) if len(a) else None,
            "max_mm": float(a.max()) if len(a) else None}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    rows = [seam_distances(n) for n in argv[1:]]
    for r in rows:
        print(json.dumps(r))
    with open(argv[0], "w") as f:
        json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
