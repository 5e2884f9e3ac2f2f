#!/usr/bin/env python3
"""Training pairs for the occlusion-distilled face landmark model (see models/distill_face_landmark.py).

Each pair is the landmark model's 192×192 input crop of one face frame twice:
clean, and with the handpiece rendered onto the skin in front of it (our own
marker renderer, the same one `guidance simulate` uses), cut with the same
region of interest. The teacher's answer (the original model on the clean
crop) is stored with it. The student later learns to give the teacher's answer
on the occluded crop, which is what the live tracker needs: where the face is,
not where the handpiece pushes the model.

Sources are the pinned sample media (guidance.samples). **single_face.mp4 and
single_face.jpg are never used here**: they are the held-out face of the demo
and of the acceptance check. Validation pairs come from single_face.mp4 with
`--held-out`, so a figure from them is on a face the student never saw.

Runs in the project environment (no torch needed):
    python models/occlusion_pairs.py OUT.npz [--per-frame 3] [--seed 1]
    python models/occlusion_pairs.py VAL.npz --held-out
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from guidance import samples
from guidance.sim.simulate import DEFAULT_PROFILE, Hand
from guidance.sim.skin import ChartToSkin
from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.landmarks import INPUT_SIZE, ORIGINAL_LANDMARK_MODEL, FaceLandmarker, Roi, roi_from_landmarks
from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.face.head_pose import load_canonical_face
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.sim.render import SceneRenderer, blur_samples, fit_frame, handpiece_item, pose_with_tip_at
from guidance.vision.capture.sources import Frame
from guidance.zones.atlas import load_atlas
from guidance.zones.chart import load_chart

SIZE = (640, 480)
# WolfgangLanger_Pexels.mp4 (a turning head with a real hand over the face) was a training video until the
# evaluation set needed it: it is an evaluation face now (guidance/data/face_sets.yaml), never trained on.
TRAIN_VIDEOS: list[str] = []
TRAIN_IMAGES = ["0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "astronaut.png",
                "multi_face.jpg", "Image_with_alpha.png", *samples.TRAINING_FACE_IMAGES]
HELD_OUT_VIDEO = "single_face.mp4"


def video_frames(name: str, step: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(samples.fetch(name)))
    out, i = [], 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(fit_frame(f, SIZE))
        i += 1
    cap.release()
    return out


def image_views(name: str, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """A still photo placed into a 640×480 frame at several scales and offsets (a camera at varied distance)."""
    img = cv2.imread(str(samples.fetch(name)), cv2.IMREAD_COLOR)
    out = []
    for _ in range(n):
        s = rng.uniform(0.6, 1.3) * max(SIZE[0] / img.shape[1], SIZE[1] / img.shape[0])
        r = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        canvas = np.full((SIZE[1], SIZE[0], 3), rng.integers(30, 200, 3), np.uint8)
        x0 = int(rng.integers(-max(r.shape[1] - SIZE[0], 0) - 1, max(SIZE[0] - r.shape[1], 0) + 1))
        y0 = int(rng.integers(-max(r.shape[0] - SIZE[1], 0) - 1, max(SIZE[1] - r.shape[0], 0) + 1))
        xs, ys = max(x0, 0), max(y0, 0)
        sx, sy = xs - x0, ys - y0
        w = min(SIZE[0] - xs, r.shape[1] - sx)
        h = min(SIZE[1] - ys, r.shape[0] - sy)
        canvas[ys:ys + h, xs:xs + w] = r[sy:sy + h, sx:sx + w]
        out.append(canvas)
    return out


def jitter(roi: Roi, rng: np.random.Generator) -> Roi:
    """The ROI the live tracker might use: its own previous frame's, a little off."""
    s = roi.size
    return Roi(roi.cx + rng.normal(0, 0.03) * s, roi.cy + rng.normal(0, 0.03) * s,
               s * float(np.exp(rng.normal(0, 0.06))), roi.rotation + rng.normal(0, np.radians(4)))


def photometric(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same brightness, contrast and colour change on both crops."""
    gain = rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, 3)
    bias = rng.uniform(-20, 20)
    f = lambda x: np.clip(x.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)  # noqa: E731
    return f(a), f(b)


class PairMaker:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.camera = CameraModel.default(*SIZE)
        self.renderer = SceneRenderer(self.camera)
        self.profile = load_handpiece_profile(DEFAULT_PROFILE)
        self.atlas = load_atlas()
        self.skin = ChartToSkin(load_chart(), load_canonical_face())
        mask = self.skin.mesh_mask(self.atlas.grid)
        g = self.atlas.grid
        vv, uu = np.nonzero(mask)
        self.uv = np.stack([g.u0_mm + (uu + 0.5) * g.cell_mm, g.v0_mm + (vv + 0.5) * g.cell_mm], 1)
        # most placements where treatment happens (the face's treatment zones), the rest anywhere on the mesh
        treat = [z.label for z in self.atlas.zones.values() if z.kind == "treat" and z.surface == "face"]
        self.treat_uv = self.uv[np.isin(self.atlas.labels[vv, uu], treat)]
        self.landmarker = FaceLandmarker(model=ORIGINAL_LANDMARK_MODEL)

    def tracked(self, frame: np.ndarray):
        tracker = FaceTracker(TrackerConfig(smoothing=False), self.camera, landmarker=self.landmarker)
        obs = tracker.process(Frame(0, 0, frame))
        if obs.found:  # a second pass from the landmarks' own ROI, as in tracking mode
            obs2 = tracker.process(Frame(1, 33_000_000, frame))
            obs = obs2 if obs2.found else obs
        return obs if obs.found and obs.head_pose is not None and obs.head_pose.valid else None

    def occlude(self, frame: np.ndarray, obs) -> np.ndarray | None:
        rng = self.rng
        R, t = obs.head_pose.R, np.asarray(obs.head_pose.tvec_mm, float)
        for _ in range(20):
            pool = self.treat_uv if rng.random() < 0.75 else self.uv
            u, v = pool[rng.integers(len(pool))]
            point = self.skin.locate(float(u), float(v))
            if point is None:
                continue
            placed = self.skin.place(point, obs.landmarks_raw, R, t, self.camera)
            if not placed.facing_camera:
                continue
            height = 0.0 if rng.random() < 0.6 else rng.uniform(0, 25)
            tip = placed.cam_mm + placed.normal_cam * height
            hand = Hand(self.profile, self.camera, float(rng.uniform(15, 55)))
            pose = hand.hold(tip, R, t, 1.0)
            # a practitioner's wrist is not a robot's: tilt the shaft and roll the clip a little more
            axis = pose.R[:, 2] + rng.normal(0, 0.15, 3)
            pose = pose_with_tip_at(self.profile, tip, axis / np.linalg.norm(axis), float(hand.roll + rng.normal(0, 0.4)))
            lin = rng.normal(0, 60, 3) if rng.random() < 0.5 else np.zeros(3)
            item = handpiece_item(self.profile, pose, linear_velocity_mm_s=lin, angular_velocity_rad_s=np.zeros(3),
                                  rotate_about_tip=True)
            n_blur = blur_samples(self.profile, float(tip[2]), self.camera.fx, 0.012, lin, np.zeros(3))
            image, _ = self.renderer.render(frame, [item], exposure_s=0.012, blur_samples=n_blur,
                                            noise_sigma=float(rng.uniform(0, 2.5)), rng=rng)
            return image
        return None

    def pairs(self, frame: np.ndarray, per_frame: int) -> list[tuple[np.ndarray, np.ndarray]]:
        obs = self.tracked(frame)
        if obs is None:
            return []
        base = roi_from_landmarks(obs.landmarks_raw)
        out = []
        for _ in range(per_frame):
            occluded = self.occlude(frame, obs)
            if occluded is None:
                continue
            roi = jitter(base, self.rng)
            M = roi.crop_transform()
            crops = [cv2.warpAffine(x, M, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE) for x in (frame, occluded)]
            if self.rng.random() < 0.5:  # mirror both: a face seen from the other side
                crops = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
            out.append(photometric(*crops, self.rng))
        return out

    def teacher(self, clean: np.ndarray) -> tuple[np.ndarray, float]:
        return teacher_answer(self.landmarker, clean)


def teacher_answer(landmarker: FaceLandmarker, crop: np.ndarray) -> tuple[np.ndarray, float]:
    """The original model's raw output on one 192×192 BGR crop: landmark coordinates and presence logit."""
    tensor = (cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)[None]
    coords, logit = landmarker.session.run(None, {landmarker.input_name: tensor})
    return coords.reshape(-1).astype(np.float32), float(logit.reshape(-1)[0])


def collect(held_out: bool, per_frame: int, seed: int, only: list[str] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    maker = PairMaker(rng)
    frames: list[tuple[str, np.ndarray]] = []
    if held_out:
        frames += [(HELD_OUT_VIDEO, f) for f in video_frames(HELD_OUT_VIDEO, 1)]
    else:
        for name in TRAIN_VIDEOS:
            if not only or name in only:
                frames += [(name, f) for f in video_frames(name, 1)]
        for name in TRAIN_IMAGES:
            if not only or name in only:
                frames += [(name, f) for f in image_views(name, rng, 40)]
    clean, occluded, coords, logits, source = [], [], [], [], []
    for k, (name, frame) in enumerate(frames):
        for c, o in maker.pairs(frame, per_frame):
            tc, tl = maker.teacher(c)
            clean.append(c)
            occluded.append(o)
            coords.append(tc)
            logits.append(tl)
            source.append(name)
        if k % 50 == 0:
            print(f"{k}/{len(frames)} frames, {len(clean)} pairs", flush=True)
    return {"clean": np.stack(clean), "occluded": np.stack(occluded), "teacher_coords": np.stack(coords),
            "teacher_logit": np.array(logits, np.float32), "source": np.array(source)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--held-out", action="store_true", help="validation pairs from the held-out face only")
    ap.add_argument("--per-frame", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="+", metavar="SAMPLE", help="only these training sources")
    a = ap.parse_args(argv)
    data = collect(a.held_out, a.per_frame, a.seed, a.only)
    np.savez(a.out, **data)
    print(f"{len(data['clean'])} pairs -> {a.out}")


if __name__ == "__main__":
    main()
