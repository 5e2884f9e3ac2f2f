#!/usr/bin/env python3
"""Regenerate the figures of docs/body.md from a body demo folder, and print its figures.

Usage:
    guidance demo -o out/body --path demo_body_abdomen --plan body_abdomen
    python docs/make_body_figures.py out/body

Writes docs/images/body_atlas.png (the body areas), body_session.png (frames of the recording with the
zones projected through the recorded patch pose, the tip and the gate's answer) and body_chart.png (the service's
chart point against the truth on every contact frame); for a body area other than the abdomen,
body_AREA_session.png and body_AREA_chart.png:

    guidance demo -o out/decolletage --path demo_body_decolletage --plan body_decolletage
    python docs/make_body_figures.py out/decolletage
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from guidance.session.reader import open_session
from guidance.sim.demo import verify
from guidance.sim.ground_truth import load_ground_truth
from guidance.sim.session_figures import frame_figures
from guidance.vision.capture.camera import CameraModel
from guidance.vision.body.patch import PatchObservation
from guidance.zones.atlas_render import render_atlas
from guidance.zones.body_atlas import body_area_names, load_body_area, plan_atlas
from guidance.zones.body_mapper import PatchMapper

OUT = Path(__file__).resolve().parent / "images"


def atlas_figure() -> np.ndarray:
    pics = [render_atlas(load_body_area(a).atlas, px_per_mm=1.6) for a in body_area_names()]
    h = max(p.shape[0] for p in pics)
    pics = [np.pad(p, ((0, h - p.shape[0]), (0, 8), (0, 0)), constant_values=255) for p in pics]
    return np.hstack(pics)


def _patch(r) -> PatchObservation | None:
    p = r.patch
    if p is None or not p.found:
        return None
    return PatchObservation(r.index, p.t_capture_ns, True, p.reason, p.rvec, p.tvec_mm, p.rms_px, p.markers, None)


def session_figure(session, gt, picks: list[int]) -> np.ndarray:
    plan = session.plan()
    area = load_body_area(plan.body_area)
    mapper = PatchMapper(area)
    by_index = {g.frame_index: g for g in gt}
    tiles = []
    for k in picks:
        i = next(j for j, r in enumerate(session.frames) if r.index >= k)
        r = session.frames[i]
        img = session.image(i)
        if img is None:
            continue
        cam = CameraModel.default(*r.size)
        patch = _patch(r)
        if patch is not None:
            for z in area.atlas.zones.values():
                kind = "planned" if z.name in plan.zones else ("exclusion" if z.kind == "exclusion" else "other")
                colour = {"planned": (233, 180, 86), "exclusion": (0, 159, 230), "other": (170, 170, 170)}[kind]
                for ring in z.boundary_mm:
                    px = mapper.project(patch, ring, cam)
                    cv2.polylines(img, [np.round(px).astype(np.int32).reshape(-1, 1, 2)], True, colour, 2, cv2.LINE_AA)
            # the trusted ellipse
            t = np.linspace(0, 2 * np.pi, 90)
            ell = np.c_[area.range_mm[0] * np.cos(t), area.range_mm[1] * np.sin(t)]
            px = mapper.project(patch, ell, cam)
            cv2.polylines(img, [np.round(px).astype(np.int32).reshape(-1, 1, 2)], True, (255, 255, 255), 1, cv2.LINE_AA)
        g = by_index.get(r.index)
        if g is not None and math.isfinite(g.tip_x_px):
            cv2.drawMarker(img, (int(g.tip_x_px), int(g.tip_y_px)), (0, 255, 0), cv2.MARKER_CROSS, 14, 2)
        if r.tip is not None and r.tip.px is not None:
            cv2.circle(img, (int(r.tip.px[0]), int(r.tip.px[1])), 6, (66, 228, 240), 2, cv2.LINE_AA)
        word = "PERMIT" if r.gate.permit else f"DENY {r.gate.reason}"
        col = (178, 114, 0) if r.gate.permit else (0, 94, 213)
        cv2.rectangle(img, (0, 0), (img.shape[1], 34), col, -1)
        zone = r.zone.zone if r.zone is not None else "-"
        cv2.putText(img, f"frame {r.index}: {word}  ({zone})", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.65,
                    (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(cv2.resize(img, (480, 360), interpolation=cv2.INTER_AREA))
    rows = [np.hstack(tiles[j:j + 2]) for j in range(0, len(tiles), 2)]
    return np.vstack(rows)


def chart_figure(session, gt) -> np.ndarray:
    plan = session.plan()
    atlas = plan_atlas(plan)
    px_per_mm = 3.0
    base = render_atlas(atlas, px_per_mm=px_per_mm)
    g0 = atlas.grid
    rows, cols = np.nonzero(atlas.labels)
    margin = int(10.0 / g0.cell_mm)
    r0, c0 = max(rows.min() - margin, 0), max(cols.min() - margin, 0)

    def to_px(u, v):
        x = ((u - g0.u0_mm) / g0.cell_mm - c0 + 0.5) * px_per_mm * g0.cell_mm
        y = ((v - g0.v0_mm) / g0.cell_mm - r0 + 0.5) * px_per_mm * g0.cell_mm
        return int(round(x)), int(round(y))

    by_index = {g.frame_index: g for g in gt}
    for r in session.frames:
        g = by_index.get(r.index)
        if g is None or not g.contact or r.zone is None or r.zone.chart_mm is None:
            continue
        a, b = to_px(g.chart_u_mm, g.chart_v_mm), to_px(*r.zone.chart_mm)
        cv2.line(base, a, b, (80, 80, 80), 1, cv2.LINE_AA)
        cv2.circle(base, b, 2, (178, 114, 0) if r.gate.permit else (0, 94, 213), -1, cv2.LINE_AA)
    cv2.putText(base, "contact frames: service chart point (blue permit, red deny), grey line to the truth",
                (10, base.shape[0] - 40), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return base


def main(argv: list[str]) -> int:
    folder = Path(argv[1]) if len(argv) > 1 else Path("out/body")
    OUT.mkdir(exist_ok=True)
    cv2.imwrite(str(OUT / "body_atlas.png"), atlas_figure())
    session = open_session(folder / "session", quiet=True)
    gt = load_ground_truth(folder / "simulation")
    plan = session.plan()
    fig = frame_figures(session, gt, plan, plan_atlas(plan))
    acc = verify(folder / "simulation", folder / "session", folder / "controller.jsonl", plan.source)
    n = len(session.frames)
    picks = [int(p) for p in argv[2:]] or [60, 330, 560, 840] if n > 900 else [n // 10, n * 4 // 10, n * 6 // 10, n * 9 // 10]
    name = "body" if plan.body_area == "abdomen" else f"body_{plan.body_area}"  # the abdomen's names as they were
    cv2.imwrite(str(OUT / f"{name}_session.png"), session_figure(session, gt, picks))
    cv2.imwrite(str(OUT / f"{name}_chart.png"), chart_figure(session, gt))
    sig = [(r.gate.mapping_sigma_mm, r.zone.curvature_mm, r.zone.patch_distance_mm) for r in session.frames
           if r.zone is not None and r.gate.mapping_sigma_mm is not None and r.zone.curvature_mm is not None]
    s = np.asarray(sig, float)
    print(json.dumps({"frames": fig.to_json(), "pulses": {
        "fired": acc.pulses_fired, "in_exclusion": len(acc.pulses_in_exclusion),
        "outside_plan": len(acc.pulses_outside_plan), "lifted": acc.pulses_lifted,
        "coverage_max_diff_pp": acc.coverage_max_diff_pp, "coverage_service": acc.coverage_service,
        "coverage_truth": acc.coverage_truth, "pulse_error_mm": acc.pulse_error_mm},
        "mapping_sigma_mm": {"median": float(np.median(s[:, 0])), "p90": float(np.percentile(s[:, 0], 90)),
                             "curvature_median": float(np.median(s[:, 1])),
                             "patch_distance_median": float(np.median(s[:, 2]))} if len(s) else {}},
        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
