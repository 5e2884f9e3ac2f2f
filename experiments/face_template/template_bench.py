"""Measure the face template against the handpiece in front of the face, on a simulated session.

    python -m experiments.face_template.template_bench SIM_DIR [SIM_DIR ...]

SIM_DIR is a `guidance simulate` output. The face is tracked over its video as
the live pipeline does (default `TrackerConfig`), and each contact frame's
ground-truth tip pixel is looked up on the chart twice: through the tracker's
landmarks and through the template's (learnt online, placed at the tip, as
`FaceTemplate` would be used in the pipeline). Prints the chart error (mm)
against the ground truth, the forehead v bias and the template's time per frame.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

from guidance.sim.ground_truth import load_ground_truth
from experiments.face_template.face_template import FaceTemplate, TemplateConfig
from guidance.vision.face.tracker import FaceObservation, FaceTracker, TrackerConfig
from guidance.bench.occlusion import chart_error
from guidance.vision.capture.sources import Frame
from guidance.zones.mapper import ZoneMapper


def measure(sim_dir: str | Path, config: TemplateConfig = TemplateConfig()) -> dict:
    sim_dir = Path(sim_dir)
    gt = {g.frame_index: g for g in load_ground_truth(sim_dir)}
    mapper = ZoneMapper()
    tracker = FaceTracker(TrackerConfig())
    template = FaceTemplate(config)
    cap = cv2.VideoCapture(str(sim_dir / "simulated.avi"))
    err = {"tracker": [], "template": []}
    dv_forehead = {"tracker": [], "template": []}
    t_template = []
    i = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        g = gt.get(i)
        obs = tracker.process(Frame(i, g.t_video_ns if g else i, img))
        i += 1
        if not obs.found:
            template.reset()
            continue
        tip = (g.tip_x_px, g.tip_y_px) if g is not None and np.isfinite(g.tip_x_px) else None
        t0 = time.perf_counter_ns()
        lm_t, _, _ = template.landmarks_for(obs.landmarks, tip)
        template.learn(obs.landmarks, tip, tip is not None, obs.t_capture_ns)
        t_template.append((time.perf_counter_ns() - t0) / 1e6)
        if g is None or not g.contact or tip is None:
            continue
        size = (img.shape[1], img.shape[0])
        for name, lm in (("tracker", obs.landmarks), ("template", lm_t)):
            o = FaceObservation(i, 0, 0, True, 1.0, lm, lm, None, None, False, {})
            e, dv = chart_error(mapper, o, g, size)
            err[name].append(e)
            if np.isfinite(e) and g.true_zone.startswith("forehead"):
                dv_forehead[name].append(dv)
    out = {}
    for name, e in err.items():
        e = np.array(e)
        f = e[np.isfinite(e)]
        out[name] = {"frames": int(len(e)), "off_mesh": int(np.sum(~np.isfinite(e))),
                     "median_mm": float(np.median(f)), "p90_mm": float(np.percentile(f, 90)),
                     "forehead_dv_mm": float(np.mean(dv_forehead[name])) if dv_forehead[name] else None}
    out["template_ms"] = {"median": float(np.median(t_template)), "p99": float(np.percentile(t_template, 99))}
    return out


def main(argv: list[str]) -> None:
    for d in argv:
        r = measure(d)
        print(d)
        for name in ("tracker", "template"):
            m = r[name]
            print(f"  {name:8s} median {m['median_mm']:.2f} mm  p90 {m['p90_mm']:.2f} mm  "
                  f"forehead dv {m['forehead_dv_mm']:+.2f} mm  off-mesh {m['off_mesh']}/{m['frames']}")
        print(f"  template {r['template_ms']['median']:.3f} ms median, {r['template_ms']['p99']:.3f} ms p99 per frame")


if __name__ == "__main__":
    main(sys.argv[1:])
