#!/usr/bin/env python3
"""Regenerate the client-face figures of docs/face_tracking.md and print the two-face scene's figures.

Usage: python docs/make_client_face_figures.py [WORK_DIR]

Makes (in WORK_DIR, default out/client_face) a 240-frame simulated session on single_face.mp4 and the same with
biden.jpg's face slid across it (guidance/sim/second_face.py), tracks it with and without the client locked, and
writes docs/images/client_face.png and docs/images/locate_multi_face.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from guidance import samples
from guidance.sim.second_face import composite, load_second_face
from guidance.sim.simulate import simulate
from guidance.vision.capture.sources import Frame
from guidance.vision.face.detector import _iou
from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.zones.mapper import ZoneMapper

OUT = Path(__file__).resolve().parent / "images"
PICKS = (100, 125, 160, 200)
POINTS = [(258, 163), (293, 143), (368, 303), (362, 250), (330, 312), (478, 265), (478, 228), (575, 375),
          (612, 385), (733, 360), (735, 308), (698, 356)]


def _whose(obs, row) -> str:
    if not obs.found:
        return "none"
    lm = obs.landmarks[:, :2]
    box = np.r_[lm.min(axis=0), lm.max(axis=0)]
    iou_c = float(_iou(box, np.array([float(v) for v in row["client_box"].split()])[None])[0])
    iou_o = float(_iou(box, np.array([float(v) for v in row["box"].split()])[None])[0]) if row["box"] else 0.0
    return "other" if iou_o > iou_c else "client"


def track(folder: Path, lock: bool) -> tuple[dict, list]:
    tracker = FaceTracker(TrackerConfig())
    rows = load_second_face(folder)
    cap = cv2.VideoCapture(str(folder / "simulated.avi"))
    tiles, who, ms = [], [], []
    for i, row in enumerate(rows):
        ok, img = cap.read()
        obs = tracker.process(Frame(i, int(i * 1e9 / 30), img))
        ms.append(obs.timings_ms.get("total", 0.0))
        if lock and i == 2:
            tracker.lock_client()
        w = _whose(obs, row)
        who.append((w, float(row["covers_client"]), obs.other_faces))
        if i in PICKS:
            pic = img.copy()
            if obs.found:
                colour = (0, 200, 0) if w == "client" else (0, 0, 255)
                for p in obs.landmarks[::3, :2]:
                    cv2.circle(pic, (int(p[0]), int(p[1])), 1, colour, -1)
            label = {"client": "tracking the client", "other": "TRACKING THE OTHER FACE",
                     "none": f"client not found ({obs.other_faces} other face)" if obs.other_faces else "no face"}[w]
            cv2.rectangle(pic, (0, 0), (pic.shape[1], 30), (40, 40, 40), -1)
            cv2.putText(pic, f"{'locked' if lock else 'no lock'}, frame {i}: {label}", (8, 21),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
            tiles.append(cv2.resize(pic, (400, 300), interpolation=cv2.INTER_AREA))
    cap.release()
    figures = {
        "frames": len(who),
        "tracked_on_other_face": sum(w == "other" for w, _, _ in who),
        "client_uncovered_frames": sum(c == 0.0 for _, c, _ in who),
        "client_found_when_uncovered": sum(w == "client" and c == 0.0 for w, c, _ in who),
        "client_covered_over_half": sum(c > 0.5 for _, c, _ in who),
        "other_face_reported": sum(o > 0 for _, _, o in who),
        "tracker_ms_median": float(np.median(ms)),
    }
    return figures, tiles


def locate_figure() -> np.ndarray:
    img = cv2.imread(str(samples.fetch("multi_face.jpg")))
    h, w = img.shape[:2]
    faces = FaceTracker(TrackerConfig(smoothing=False)).find_faces(img)
    mapper = ZoneMapper()
    palette = [(0, 200, 0), (255, 160, 0), (0, 160, 255), (200, 0, 200), (0, 220, 220)]
    for k, f in enumerate(faces):
        lm = f.landmarks[:, :2]
        x0, y0 = lm.min(axis=0).astype(int)
        x1, y1 = lm.max(axis=0).astype(int)
        cv2.rectangle(img, (x0, y0), (x1, y1), palette[k % 5], 1)
    for x, y in POINTS:
        looks = [(k, mapper.locate(f, x, y, (w, h))) for k, f in enumerate(faces)]
        k, z = next(((k, z) for k, z in looks if z.triangle is not None), (None, None))
        colour = palette[k % 5] if k is not None else (0, 0, 255)
        cv2.circle(img, (x, y), 3, colour, -1, cv2.LINE_AA)
        cv2.putText(img, z.zone if z is not None else "-", (x + 5, y - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 3,
                    cv2.LINE_AA)
        cv2.putText(img, z.zone if z is not None else "-", (x + 5, y - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, colour, 1,
                    cv2.LINE_AA)
    return cv2.resize(img[40:460, 180:820], None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)


def main(argv: list[str]) -> int:
    work = Path(argv[1]) if len(argv) > 1 else Path("out/client_face")
    if not (work / "two" / "second_face.csv").exists():
        simulate(samples.fetch("single_face.mp4"), "demo_full_face", work / "sim", max_frames=240, size=(640, 480),
                 force=True)
        composite(work / "sim", work / "two")
    OUT.mkdir(exist_ok=True)
    free, tiles_free = track(work / "two", lock=False)
    locked, tiles_locked = track(work / "two", lock=True)
    cv2.imwrite(str(OUT / "client_face.png"), np.vstack([np.hstack(tiles_free), np.hstack(tiles_locked)]))
    cv2.imwrite(str(OUT / "locate_multi_face.png"), locate_figure())
    print(json.dumps({"no_lock": free, "locked": locked}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
