"""A second person's face entering and leaving a simulated session, with the truth of which face is the client.

The face of a pinned still (`biden.jpg` by default: a training photo, a different
person from the demo's client) is cut out along its face oval (landmarks,
feathered edge), scaled to the client's face size, and slid across the frames of
a `guidance simulate` folder on a scripted track: in from one side, beside the
client, in front of the client's face (covering it), out the other side. The
handpiece and everything else of the simulation stay as they were.

Written next to the simulation's own files (`simulated.avi` replaced by the
composite, the rest copied): `second_face.csv`, one row per frame: where the
second face is (centre, eye distance, box, whether it is in the picture, how much
of the client's face box it covers) and where the client's face is (its box,
from the face tracker on the clean frame).
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from guidance import samples
from guidance.errors import UserError
from guidance.sim.simulate import VIDEO_FILE
from guidance.vision.capture.sources import Frame
from guidance.vision.face.client import face_oval
from guidance.vision.face.landmarks import ORIGINAL_LANDMARK_MODEL
from guidance.vision.face.tracker import FaceTracker, TrackerConfig

SECOND_FACE_FILE = "second_face.csv"


@dataclass(frozen=True)
class SecondFaceRow:
    frame_index: int
    visible: bool  # some of the second face is in the picture
    centre_x: float
    centre_y: float
    eye_px: float  # its outer eye-corner distance
    box: str  # x0 y0 x1 y1 of its pasted oval (px), empty when not visible
    covers_client: float  # share of the client's face box it covers (0..1)
    client_box: str  # x0 y0 x1 y1 of the client's landmarks on the clean frame, empty without a face


class FaceCutout:
    """A face cut from a still along its face oval, ready to paste at any centre and size."""

    def __init__(self, image: np.ndarray):
        tracker = FaceTracker(TrackerConfig(smoothing=False, landmark_model=ORIGINAL_LANDMARK_MODEL))
        faces = tracker.find_faces(image)
        if not faces:
            raise UserError("no face found in the second-face image")
        lm = faces[0].landmarks
        assert lm is not None
        oval = lm[face_oval(), :2]
        x0, y0 = np.floor(oval.min(axis=0)).astype(int) - 4
        x1, y1 = np.ceil(oval.max(axis=0)).astype(int) + 4
        x0, y0 = max(x0, 0), max(y0, 0)
        self.image = image[y0:y1, x0:x1].astype(np.float32)
        mask = np.zeros(self.image.shape[:2], np.float32)
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(oval - [x0, y0]).astype(np.int32)), 1.0)
        eye = float(np.linalg.norm(lm[33, :2] - lm[263, :2]))
        self.mask = cv2.GaussianBlur(mask, (0, 0), max(eye * 0.04, 1.0))
        self.eye_px = eye
        self.centre = oval.mean(axis=0) - [x0, y0]

    def paste(self, frame: np.ndarray, centre: tuple[float, float], eye_px: float) -> tuple[np.ndarray, np.ndarray]:
        """The frame with the face pasted (its oval centre at `centre`, eye distance `eye_px`) and the alpha mask."""
        s = eye_px / self.eye_px
        M = np.array([[s, 0, centre[0] - s * self.centre[0]], [0, s, centre[1] - s * self.centre[1]]], np.float32)
        h, w = frame.shape[:2]
        img = cv2.warpAffine(self.image, M, (w, h), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(self.mask, M, (w, h), flags=cv2.INTER_LINEAR)[..., None]
        out = frame.astype(np.float32) * (1 - alpha) + img * alpha
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), alpha[..., 0]


@dataclass(frozen=True)
class Track:
    """Where the second face goes: keyframes (time s, x, y as fractions of the frame) linearly interpolated."""

    keys: tuple[tuple[float, float, float], ...] = ((0.0, 1.35, 0.45), (1.0, 1.35, 0.45), (2.0, 0.85, 0.42),
                                                    (3.0, 0.85, 0.42), (4.2, 0.5, 0.42), (5.2, 0.5, 0.42),
                                                    (6.4, 0.12, 0.45), (7.4, -0.35, 0.45))
    scale: float = 1.0  # its eye distance over the client's

    def later(self, delay_s: float) -> "Track":
        """The same track, begun `delay_s` later (the second face is out of the picture until then)."""
        return Track(tuple((t + delay_s, x, y) for t, x, y in self.keys), self.scale)

    def at(self, t_s: float) -> tuple[float, float]:
        ks = self.keys
        if t_s <= ks[0][0]:
            return ks[0][1], ks[0][2]
        for (t0, x0, y0), (t1, x1, y1) in zip(ks, ks[1:]):
            if t_s <= t1:
                f = (t_s - t0) / max(t1 - t0, 1e-9)
                return x0 + f * (x1 - x0), y0 + f * (y1 - y0)
        return ks[-1][1], ks[-1][2]


def composite(sim_dir: str | Path, out_dir: str | Path, *, face: str = "biden.jpg", track: Track = Track(),
              fps: float | None = None) -> Path:
    """A copy of the simulation in `out_dir` with the second face slid across it, and its truth."""
    sim_dir, out_dir = Path(sim_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in sim_dir.iterdir():
        if f.name != VIDEO_FILE and f.is_file():
            shutil.copyfile(f, out_dir / f.name)
    src = Path(face) if Path(face).is_file() else samples.fetch(face)
    still = cv2.imread(str(src))
    if still is None:
        raise UserError("not a readable image", path=src)
    cut = FaceCutout(still)
    cap = cv2.VideoCapture(str(sim_dir / VIDEO_FILE))
    fps = fps or float(cap.get(cv2.CAP_PROP_FPS) or 30.0)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(out_dir / VIDEO_FILE), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter.fourcc(*"MJPG"), fps,
                             (w, h), [cv2.VIDEOWRITER_PROP_QUALITY, 95])
    clean = FaceTracker(TrackerConfig(smoothing=False, landmark_model=ORIGINAL_LANDMARK_MODEL))
    rows: list[SecondFaceRow] = []
    client_eye = None
    i = 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            obs = clean.process(Frame(i, int(i * 1e9 / fps), img))
            cbox = ""
            box_arr = None
            if obs.found and obs.landmarks is not None:
                lo, hi = obs.landmarks[:, :2].min(axis=0), obs.landmarks[:, :2].max(axis=0)
                box_arr = np.r_[lo, hi]
                cbox = " ".join(f"{v:.1f}" for v in box_arr)
                if client_eye is None:
                    client_eye = float(np.linalg.norm(obs.landmarks[33, :2] - obs.landmarks[263, :2]))
            eye = (client_eye or 60.0) * track.scale
            fx, fy = track.at(i / fps)
            centre = (fx * w, fy * h)
            out, alpha = cut.paste(img, centre, eye)
            ys, xs = np.nonzero(alpha > 0.5)
            visible = xs.size > 0
            sbox = f"{xs.min()} {ys.min()} {xs.max()} {ys.max()}" if visible else ""
            cover = 0.0
            if box_arr is not None and visible:
                x0, y0, x1, y1 = np.round(box_arr).astype(int)
                region = alpha[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)]
                cover = float((region > 0.5).mean()) if region.size else 0.0
            writer.write(out)
            rows.append(SecondFaceRow(i, bool(visible), centre[0], centre[1], eye, sbox, cover, cbox))
            i += 1
    finally:
        cap.release()
        writer.release()
    with open(out_dir / SECOND_FACE_FILE, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        wr.writeheader()
        for r in rows:
            wr.writerow(asdict(r))
    return out_dir


def load_second_face(sim_dir: str | Path) -> list[dict]:
    with open(Path(sim_dir) / SECOND_FACE_FILE, newline="") as fh:
        return list(csv.DictReader(fh))
