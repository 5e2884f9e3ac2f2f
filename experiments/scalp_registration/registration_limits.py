"""What limits the scalp session's accuracy: the band's own pose, or its registration to the face? (experiment)

Renders the scalp session of docs/scalp.md without touches (`ScalpScript(touches=False, frontal_s=2.0)`, 361
frames) unless SIM already holds it, runs the face tracker and the head band's marker pose on every frame offline
(no realtime, no gate), and compares, with the rendering's exact head pose, the 3D error of the skin point under
the tip (the script's own point on the scalp) when the head is carried by the band through:

- the true band -> head transform (the band's own tracking error: the floor of any registration);
- the registration `guidance run` makes (the first 15 near-frontal face/band pairs, averaged);
- the same from all near-frontal frames;
- the true rotation with the registration's translation, and the reverse (which of the two errs);
- a multi-view least squares over face poses up to |yaw| Y, the along-ray (depth) component of each face pose
  weighted by w (w = 0: depth ignored).

    python experiments/scalp_registration/registration_limits.py SIM_DIR

Prints the tables quoted in docs/scalp.md ("What limits the registration"). Not part of the product: the
face-pose variants were not taken into `guidance run` (see the doc for why).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from guidance.pipeline import PipelineConfig
from guidance.sim.scalp import ScalpScript, band_on_head, scalp_point, simulate_scalp
from guidance.vision.capture.camera import CameraModel
from guidance.vision.capture.sources import Frame
from guidance.vision.face.head_band import HeadReferenceTracker
from guidance.vision.face.tracker import FaceTracker
from guidance.vision.handpiece.profiles import load_head_band
from guidance.vision.rigid import RigidPose, mean_rotation
from guidance.zones.chart import load_chart


def collect(sim: Path) -> tuple[dict, list[dict]]:
    info = json.loads((sim / "info.json").read_text())
    cam = CameraModel.default(*info["frame_size"])
    face = FaceTracker(PipelineConfig().tracker, cam)
    band = HeadReferenceTracker(load_head_band("head_band_default"), cam)
    cap = cv2.VideoCapture(str(sim / info["video"]))
    rows: list[dict] = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        i = len(rows)
        t = int(i * 1e9 / info["fps"])
        f = face.process(Frame(i, t, img))
        b = band.track(img, t)
        hp = f.head_pose if f.found and f.head_pose is not None and f.head_pose.valid else None
        r = info["head_poses"][i]
        rows.append({"presence": f.presence,
                     "face": RigidPose(hp.R, np.asarray(hp.tvec_mm, float)) if hp is not None else None,
                     "face_yaw": hp.euler_deg()[0] if hp is not None else None,
                     "band": b.pose if b.valid else None,
                     "truth": RigidPose(cv2.Rodrigues(np.asarray(r[:3], float))[0], np.asarray(r[3:], float))})
    return info, rows


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-3].strip(), file=sys.stderr)
        return 2
    sim = Path(argv[0])
    if not (sim / "info.json").exists():
        simulate_scalp(sim, script=ScalpScript(touches=False, frontal_s=2.0))
    info, rows = collect(sim)
    script = ScalpScript(**info["script"])
    scalp = load_chart().surfaces["scalp"]
    t_true = band_on_head().inverse()  # head -> band
    fps = info["fps"]

    def phase(i: int) -> str:
        t = i / fps
        return "frontal" if t < script.frontal_s else ("turn" if t < script.frontal_s + script.turn_s else "back")

    def line(T: RigidPose, label: str) -> None:
        errs: dict[str, list[float]] = {"frontal": [], "turn": [], "back": []}
        for i, r in enumerate(rows):
            if r["band"] is None:
                continue
            p, _, _ = scalp_point(*script.tip_chart(i / fps, scalp), scalp)
            errs[phase(i)].append(float(np.linalg.norm(r["band"].compose(T).apply(p) - r["truth"].apply(p))))
        every = np.concatenate([v for v in errs.values()])
        print(f"| {label} | {np.median(every):.1f} / {np.percentile(every, 90):.1f} | "
              + " | ".join(f"{np.median(v):.1f}" for v in errs.values()) + " |")

    pairs = [(r["face_yaw"], r["band"], r["face"]) for r in rows
             if r["face"] is not None and r["band"] is not None and r["presence"] >= 0.5]

    def mean_t(sel) -> RigidPose:
        ts = [b.inverse().compose(f) for _, b, f in sel]
        return RigidPose(mean_rotation([t.R for t in ts]), np.mean([t.t_mm for t in ts], axis=0))

    def multi_view(sel, w_along: float) -> RigidPose:
        R = mean_t(sel).R
        A, y = [], []
        for _, b, f in sel:  # t_face = R_band t_T + t_band, the along-ray part of each row scaled by sqrt(w)
            ray = f.t_mm / np.linalg.norm(f.t_mm)
            P = np.eye(3) - (1.0 - np.sqrt(w_along)) * np.outer(ray, ray)
            A.append(P @ b.R)
            y.append(P @ (f.t_mm - b.t_mm))
        t, *_ = np.linalg.lstsq(np.vstack(A), np.concatenate(y), rcond=None)
        return RigidPose(R, t)

    print("Face tracker's head pose against the rendering's (per |true yaw| bin; medians):\n")
    print("| true yaw | frames | error along the line of sight | across it | rotation |\n|---|---|---|---|---|")
    edges = [0, 10, 20, 30, 45, 60, 90]
    for lo, hi in zip(edges[:-1], edges[1:]):
        v = []
        for r in rows:
            if r["face"] is None:
                continue
            H = r["truth"]
            yaw = abs(np.degrees(np.arcsin(-np.clip(H.R[2, 0], -1, 1))))
            if lo <= yaw < hi:
                ray = H.t_mm / np.linalg.norm(H.t_mm)
                e = r["face"].t_mm - H.t_mm
                along = float(e @ ray)
                v.append((along, float(np.linalg.norm(e - along * ray)),
                          float(np.degrees(np.linalg.norm(cv2.Rodrigues(r["face"].R @ H.R.T)[0])))))
        if v:
            a = np.asarray(v)
            print(f"| {lo}–{hi}° | {len(a)} | {np.median(a[:, 0]):+.1f} mm | {np.median(a[:, 1]):.1f} mm | "
                  f"{np.median(a[:, 2]):.1f}° |")
    ev = np.degrees(np.array([cv2.Rodrigues(r["truth"].R.T @ r["face"].R)[0].ravel() for r in rows
                              if r["face"] is not None]))
    med = np.median(ev, axis=0)
    print(f"\nface rotation error in the head frame, median (pitch, yaw, roll): {np.round(med, 2)} deg, "
          f"spread (MAD) {np.round(np.median(np.abs(ev - med), axis=0), 2)} deg")
    front = [p for p in pairs if abs(p[0]) <= 12.0]
    reg = mean_t(front[:15])
    dR = cv2.Rodrigues(reg.R @ t_true.R.T)[0].ravel()
    print(f"the run's registration (first 15 near-frontal pairs): rotation off by {np.degrees(np.linalg.norm(dR)):.2f} deg, "
          f"translation by {np.round(reg.t_mm - t_true.t_mm, 1)} mm (band frame)\n")
    print("3D error of the skin point under the tip, head carried by the band (mm):\n")
    print("| band -> head transform | all, median / p90 | frontal | turn | back |\n|---|---|---|---|---|")
    line(t_true, "true (the band's own tracking)")
    line(reg, "the run's: first 15 near-frontal pairs")
    line(mean_t(front), f"all {len(front)} near-frontal pairs")
    line(RigidPose(t_true.R, reg.t_mm), "the run's translation, true rotation")
    line(RigidPose(reg.R, t_true.t_mm), "the run's rotation, true translation")
    for y in (20, 30, 45):
        sel = [p for p in pairs if abs(p[0]) <= y]
        for w in (0.1, 0.0):
            line(multi_view(sel, w), f"multi-view, face yaw within ±{y}°, depth weight {w} ({len(sel)} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
