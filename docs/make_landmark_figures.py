#!/usr/bin/env python3
"""Regenerate docs/images/landmarks_*.jpg: the tracked mesh on one frame of each sample video.

Usage: python docs/make_landmark_figures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from guidance import samples
from guidance.vision.face.draw import FaceDrawer
from guidance.vision.face.tracker import FaceTracker
from guidance.vision.models import load_topology
from guidance.vision.capture.sources import open_source

# (video, frame to show): mid-video frames, the hand-over-face moment, the
# frames right after appearance / before disappearance, and a face-free clip.
PICKS = [("single_face.mp4", 36), ("WolfgangLanger_Pexels.mp4", 150), ("WolfgangLanger_Pexels.mp4", 330),
         ("face_noface.mov", 71), ("noface_face.mov", 97), ("no_face.mp4", 40)]

OUT = Path(__file__).resolve().parent / "images"


def main() -> int:
    drawer = FaceDrawer(load_topology())
    OUT.mkdir(exist_ok=True)
    for name, index in PICKS:
        tracker = FaceTracker()
        with open_source(samples.fetch(name)) as src:
            for frame in src:
                obs = tracker.process(frame)
                if frame.index == index:
                    img = drawer.draw(frame.image.copy(), obs)
                    if img.shape[1] > 640:
                        img = cv2.resize(img, (640, round(img.shape[0] * 640 / img.shape[1])), interpolation=cv2.INTER_AREA)
                    path = OUT / f"landmarks_{Path(name).stem}_{index:03d}.jpg"
                    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
                    print(path)
                    break
    return 0


if __name__ == "__main__":
    sys.exit(main())
