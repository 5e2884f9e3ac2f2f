"""A picture of the chart with every zone coloured and labelled (docs, `guidance atlas`)."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from guidance.zones.atlas import Atlas
from guidance.zones.chart import FaceChart

_SURFACE_HUE = {"face": 0.10, "neck": 0.55, "decolletage": 0.72, "scalp": 0.33, "body": 0.08}


def zone_colours(atlas: Atlas) -> dict[str, tuple[int, int, int]]:
    """BGR colour per zone: exclusions red, treatable zones by surface with alternating shades."""
    out = {}
    for k, z in enumerate(atlas.zones.values()):
        if z.kind == "exclusion":
            out[z.name] = (60, 60, 220)
            continue
        h = (_SURFACE_HUE.get(z.surface, 0.0) + 0.045 * (k % 5)) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.35 + 0.1 * (k % 3), 0.95)
        out[z.name] = (int(b * 255), int(g * 255), int(r * 255))
    return out


def render_atlas(atlas: Atlas, chart: FaceChart | None = None, *, px_per_mm: float = 2.0,
                 margin_mm: float = 10.0) -> np.ndarray:
    """BGR image of the atlas in chart space: u to the right, v down; zone names at their innermost point."""
    g = atlas.grid
    rows, cols = np.nonzero(atlas.labels)
    r0, r1 = max(rows.min() - int(margin_mm / g.cell_mm), 0), min(rows.max() + int(margin_mm / g.cell_mm), g.height)
    c0, c1 = max(cols.min() - int(margin_mm / g.cell_mm), 0), min(cols.max() + int(margin_mm / g.cell_mm), g.width)
    lab = atlas.labels[r0:r1, c0:c1]
    colours = zone_colours(atlas)
    lut = np.full((256, 3), 255, np.uint8)
    for z in atlas.zones.values():
        lut[z.label] = colours[z.name]
    img = lut[lab]
    scale = px_per_mm * g.cell_mm
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    # boundaries
    edges = np.zeros(lab.shape, bool)
    edges[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edges[1:, :] |= lab[1:, :] != lab[:-1, :]
    edges = cv2.resize(edges.astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    img[edges] = (40, 40, 40)

    def to_px(uv: np.ndarray) -> np.ndarray:
        return np.round(((np.asarray(uv) - [g.u0_mm, g.v0_mm]) / g.cell_mm - [c0, r0] + 0.5) * scale).astype(int)

    if chart is not None:
        for t in chart.triangles:
            cv2.polylines(img, [to_px(chart.vertex_uv_mm[t]).reshape(-1, 1, 2)], True, (150, 150, 150), 1, cv2.LINE_AA)
        img[edges] = (40, 40, 40)
    # labels at the point deepest inside each zone
    dist = atlas.distance_mm[r0:r1, c0:c1]
    for z in atlas.zones.values():
        d = np.where(lab == z.label, dist, -np.inf)
        i, j = np.unravel_index(int(np.argmax(d)), d.shape)
        uv = np.array([g.u0_mm + (j + c0) * g.cell_mm, g.v0_mm + (i + r0) * g.cell_mm])
        text = z.name.replace("_", " ")
        font, fs = cv2.FONT_HERSHEY_SIMPLEX, 0.38 * px_per_mm / 2.0
        (tw, th), _ = cv2.getTextSize(text, font, fs, 1)
        x, y = to_px(uv)
        cv2.putText(img, text, (int(x - tw / 2), int(y + th / 2)), font, fs, (0, 0, 0), 1, cv2.LINE_AA)
    # scale bar and title
    bar = int(50 * px_per_mm)
    h = img.shape[0]
    cv2.line(img, (10, h - 15), (10 + bar, h - 15), (0, 0, 0), 2)
    cv2.putText(img, "50 mm", (10, h - 22), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    title = (f"atlas {atlas.atlas_version} - client's right on the left, red = exclusion" if atlas.name == "face" else
             f"{atlas.name} {atlas.atlas_version}: u right, v down (mm), red = exclusion")
    cv2.putText(img, title,
                (10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img
