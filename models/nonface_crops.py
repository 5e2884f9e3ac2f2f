#!/usr/bin/env python3
"""Crops with no face (or only part of one) for the tuned landmark model's presence output.

Why: the landmark model's presence output is what makes the tracker let go of a
face that has left, and so what makes the gate deny when nobody is there. A
model fine-tuned only on face crops (occlusion_pairs.py) drifts towards saying
"face" everywhere. These are the crops the live tracker can be looking at when
there is no face: where the detector nearly fired on a scene, the last face's
region after the face has moved out of it, any region of a room or a scene,
and the handpiece held up with no face behind it. Each crop is stored with the
teacher's (the original model's) presence logit; the student is taught to give
the same answer, so the tracker loses the face where the original loses it.

Sources are pinned sample media: scenes without faces (samples.NON_FACE_IMAGES)
and the training faces' own surroundings. The no-face test videos (no_face.mp4,
face_noface.mov, noface_face.mov) are never used here, nor is the held-out demo
face; `--held-out` makes validation crops from no_face.mp4 and the landscape
free-mountain-vector-01.jpg.

    python models/nonface_crops.py OUT.npz [--per-frame 3] [--seed 11]
    python models/nonface_crops.py VAL.npz --held-out
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from guidance import samples
from occlusion_pairs import (SIZE, TRAIN_IMAGES, TRAIN_VIDEOS, PairMaker, image_views, photometric,
                                          teacher_answer, video_frames)
from guidance.sim.simulate import Hand
from guidance.vision.face.detector import FaceDetector
from guidance.vision.face.landmarks import INPUT_SIZE, Roi, roi_from_detection, roi_from_landmarks
from guidance.sim.render import handpiece_item

HELD_OUT_VIDEO = "no_face.mp4"
HELD_OUT_IMAGE = "free-mountain-vector-01.jpg"
KINDS = ("scene", "candidate", "leaving", "handpiece")
# the live detector takes 0.5; candidates down to this are the places it nearly took
CANDIDATE_SCORE = 0.15


class NonFaceMaker:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.pairs = PairMaker(rng)  # its tracker, renderer, handpiece profile and teacher
        self.detector = FaceDetector(min_score=CANDIDATE_SCORE)

    def random_roi(self, scale_px: float | None = None) -> Roi:
        rng = self.rng
        size = scale_px * float(np.exp(rng.normal(0, 0.2))) if scale_px else float(rng.uniform(110, 460))
        return Roi(float(rng.uniform(0, SIZE[0])), float(rng.uniform(0, SIZE[1])), size,
                   float(rng.normal(0, np.radians(12))))

    def rois(self, frame: np.ndarray, face: Roi | None, n: int) -> list[tuple[str, Roi]]:
        """Regions of one frame; away from the face if there is one, apart from the 'leaving' kind."""
        rng = self.rng
        out: list[tuple[str, Roi]] = []
        for det in self.detector.detect(frame)[:2]:
            roi = roi_from_detection(det)
            if face is None or np.hypot(roi.cx - face.cx, roi.cy - face.cy) > 0.6 * face.size:
                out.append(("candidate", roi))
        if face is not None:
            for _ in range(max(1, n // 2)):
                ang = rng.uniform(0, 2 * np.pi)
                d = rng.uniform(0.45, 1.1) * face.size
                out.append(("leaving", Roi(face.cx + d * np.cos(ang), face.cy + d * np.sin(ang),
                                           face.size * float(np.exp(rng.normal(0, 0.1))),
                                           face.rotation + rng.normal(0, np.radians(6)))))
        tries = 0
        while len(out) < n + 2 and tries < 50:
            tries += 1
            roi = self.random_roi(face.size if face is not None and rng.random() < 0.5 else None)
            if face is not None and np.hypot(roi.cx - face.cx, roi.cy - face.cy) < 0.6 * (face.size + roi.size) / 2:
                continue
            out.append(("scene", roi))
        return out

    def handpiece_alone(self, frame: np.ndarray) -> tuple[np.ndarray, Roi]:
        """The handpiece held up in front of a scene with no face: a crop around its tip."""
        rng, pm = self.rng, self.pairs
        cam = pm.camera
        z = float(rng.uniform(250, 550))
        u, v = rng.uniform(0.2, 0.8) * SIZE[0], rng.uniform(0.2, 0.8) * SIZE[1]
        tip = np.array([(u - cam.K[0, 2]) * z / cam.K[0, 0], (v - cam.K[1, 2]) * z / cam.K[1, 1], z])
        hand = Hand(pm.profile, cam, float(rng.uniform(15, 55)))
        pose = hand.hold(tip, np.eye(3), tip + np.array([rng.normal(0, 40), 0.0, 90.0]), 1.0)
        item = handpiece_item(pm.profile, pose, linear_velocity_mm_s=np.zeros(3), angular_velocity_rad_s=np.zeros(3),
                              rotate_about_tip=True)
        image, _ = pm.renderer.render(frame, [item], exposure_s=0.012, noise_sigma=float(rng.uniform(0, 2.5)), rng=rng)
        face_px = cam.K[0, 0] * 150.0 / z * 1.5  # where a face at the tip's distance would put the ROI
        roi = Roi(u + rng.normal(0, 0.25) * face_px, v + rng.normal(0, 0.25) * face_px,
                  face_px * float(np.exp(rng.normal(0, 0.15))), float(rng.normal(0, np.radians(10))))
        return image, roi

    def crop(self, frame: np.ndarray, roi: Roi) -> np.ndarray:
        c = cv2.warpAffine(frame, roi.crop_transform(), (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        if self.rng.random() < 0.5:
            c = np.ascontiguousarray(c[:, ::-1])
        return photometric(c, c, self.rng)[0]

    def crops(self, frame: np.ndarray, n: int, has_face: bool, handpiece: bool) -> list[tuple[str, np.ndarray]]:
        face = None
        if has_face:
            obs = self.pairs.tracked(frame)
            face = roi_from_landmarks(obs.landmarks_raw) if obs is not None else None
            if face is None:
                return []  # a face we cannot place: no safe "away from the face"
        out = [(kind, self.crop(frame, roi)) for kind, roi in self.rois(frame, face, n)]
        if handpiece and face is None:
            image, roi = self.handpiece_alone(frame)
            out.append(("handpiece", self.crop(image, roi)))
        return out


def collect(held_out: bool, per_frame: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    maker = NonFaceMaker(rng)
    frames: list[tuple[str, np.ndarray, bool]] = []
    if held_out:
        frames += [(HELD_OUT_VIDEO, f, False) for f in video_frames(HELD_OUT_VIDEO, 1)]
        frames += [(HELD_OUT_IMAGE, f, False) for f in image_views(HELD_OUT_IMAGE, rng, 30)]
    else:
        for name in samples.NON_FACE_IMAGES:
            frames += [(name, f, False) for f in image_views(name, rng, 30)]
        for name in TRAIN_VIDEOS:
            frames += [(name, f, True) for f in video_frames(name, 3)]
        for name in TRAIN_IMAGES:
            frames += [(name, f, True) for f in image_views(name, rng, 15)]
    crops, logits, kinds, source = [], [], [], []
    for k, (name, frame, has_face) in enumerate(frames):
        for kind, c in maker.crops(frame, per_frame, has_face, handpiece=rng.random() < 0.4):
            crops.append(c)
            logits.append(teacher_answer(maker.pairs.landmarker, c)[1])
            kinds.append(kind)
            source.append(name)
        if k % 100 == 0:
            print(f"{k}/{len(frames)} frames, {len(crops)} crops", flush=True)
    logit = np.array(logits, np.float32)
    for kind in KINDS:
        sel = np.array(kinds) == kind
        if sel.any():
            print(f"{kind}: {sel.sum()} crops, teacher says face on {(logit[sel] > 0).mean():.1%}")
    return {"crops": np.stack(crops), "teacher_logit": logit, "kind": np.array(kinds), "source": np.array(source)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--held-out", action="store_true", help="validation crops from the held-out no-face media only")
    ap.add_argument("--per-frame", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args(argv)
    data = collect(a.held_out, a.per_frame, a.seed)
    np.savez(a.out, **data)
    print(f"{len(data['crops'])} crops -> {a.out}")


if __name__ == "__main__":
    main()
