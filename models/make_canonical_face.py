#!/usr/bin/env python3
"""Derive the canonical 3D face (468 points, millimetres) that head pose and the face chart use.

Method (run once; the result is committed as models/canonical_face.json):
1. run our face tracker in raw mode (no smoothing, no head pose) on real
   faces from the pinned sample media — several people, stills and video;
2. keep near-frontal observations (nose tip midway between the outer eye
   corners, |asymmetry| < 12 %), using the landmark model's (x, y, z) output,
   which is in one pixel scale on all three axes;
3. align every shape to a common reference by generalised Procrustes analysis
   (rotation, translation, isotropic scale, no reflection), averaging each
   source first so that a long video does not outvote a single portrait;
4. fix the head frame: origin midway between the two eye centres, x along the
   eye line toward the image right of a frontal face, y the image's down in
   the (camera-facing) reference views made orthogonal to x, z away from the
   camera (right-handed: the camera's axes for a face looking at the camera);
5. scale to millimetres so that the distance between the eye centres (the
   midpoints of each eye's two corners) is 63 mm, the adult mean interpupillary
   distance (Dodgson 2004, "Variation and extrema of human interpupillary
   distance": mean 63.4 mm).

Usage: python models/make_canonical_face.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from guidance import samples  # noqa: E402

import bundle  # noqa: E402  (models/bundle.py, beside this script)
from guidance.vision.face.tracker import FaceTracker, TrackerConfig  # noqa: E402
from guidance.vision.capture.sources import open_source  # noqa: E402

SOURCES = ["single_face.mp4", "WolfgangLanger_Pexels.mp4", "noface_face.mov", "single_face.jpg", "astronaut.png",
           "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg"]
EYE_A = (33, 133)  # corners of the eye on the image left
EYE_B = (362, 263)  # corners of the eye on the image right
NOSE_TIP = 1
INTERPUPILLARY_MM = 63.0
MAX_ASYMMETRY = 0.12
MAX_FRAMES_PER_SOURCE = 60


def frontal(lm: np.ndarray) -> bool:
    left = lm[NOSE_TIP, 0] - lm[EYE_A[0], 0]
    right = lm[EYE_B[1], 0] - lm[NOSE_TIP, 0]
    return left > 0 and right > 0 and abs(left - right) / (left + right) < MAX_ASYMMETRY


def procrustes(shape: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Similarity-align `shape` onto `ref` (both centred inside), no reflection."""
    a = shape - shape.mean(0)
    b = ref - ref.mean(0)
    U, S, Vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.diag([1, 1, d])
    R = U @ D @ Vt
    scale = (S * np.diag(D)).sum() / (a ** 2).sum()
    return scale * a @ R + ref.mean(0)


def collect() -> dict[str, list[np.ndarray]]:
    shapes: dict[str, list[np.ndarray]] = {}
    for name in SOURCES:
        tracker = FaceTracker(TrackerConfig(smoothing=False, head_pose=False))
        kept: list[np.ndarray] = []
        with open_source(samples.fetch(name)) as src:
            for frame in src:
                obs = tracker.process(frame)
                if obs.found and frontal(obs.landmarks_raw):
                    kept.append(obs.landmarks_raw.astype(np.float64))
                if len(kept) >= MAX_FRAMES_PER_SOURCE:
                    break
        if kept:
            shapes[name] = kept
        print(f"{name}: {len(kept)} frontal frames", file=sys.stderr)
    return shapes


def head_frame(mean: np.ndarray) -> np.ndarray:
    eye_a = mean[list(EYE_A)].mean(0)
    eye_b = mean[list(EYE_B)].mean(0)
    origin = (eye_a + eye_b) / 2
    x = eye_b - eye_a
    x /= np.linalg.norm(x)
    # "down" = the image's down in the reference views (people facing the
    # camera), made orthogonal to the eye line, so a frontal face has pitch ~0
    down = np.array([0.0, 1.0, 0.0])
    y = down - x * (down @ x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    R = np.stack([x, y, z])
    out = (mean - origin) @ R.T
    scale = INTERPUPILLARY_MM / np.linalg.norm(eye_b - eye_a)
    return out * scale


def main() -> int:
    shapes = collect()
    all_shapes = [s for v in shapes.values() for s in v]
    ref = all_shapes[0]
    for _ in range(5):
        per_source = [np.mean([procrustes(s, ref) for s in v], axis=0) for v in shapes.values()]
        new_ref = np.mean([procrustes(s, ref) for s in per_source], axis=0)
        if np.allclose(new_ref, ref, atol=1e-4):
            break
        ref = new_ref
    canonical = head_frame(ref)
    out = {
        "description": "Canonical 3D face, 468 face-mesh points in millimetres; head frame: origin between the eye centres, "
                       "x to the image right of a frontal face, y down, z away from the camera.",
        "made_by": "models/make_canonical_face.py",
        "sources": {k: len(v) for k, v in shapes.items()},
        "interpupillary_mm": INTERPUPILLARY_MM,
        "vertices_mm": np.round(canonical, 3).tolist(),
    }
    target = bundle.MODELS / "canonical_face.json"
    target.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    # register it in the manifest so the runtime verifies it like the models
    bundle.register("data", "canonical_face", target, source="models/make_canonical_face.py")
    extent = canonical.max(0) - canonical.min(0)
    print(f"wrote canonical_face.json; extent (mm) x={extent[0]:.1f} y={extent[1]:.1f} z={extent[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
