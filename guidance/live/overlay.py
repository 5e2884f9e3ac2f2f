"""The practitioner's live overlay: what to draw, drawn the same in a window and in a video.

Legible at a glance from 1.5 m: a big PERMIT/DENY banner with the reason, thick
zone outlines, large progress bars. Colours come from the Okabe–Ito palette,
which stays distinct for the common colour-vision deficiencies, and permit /
deny never rely on colour alone: the banner says the word, and DENY is
striped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

# Okabe–Ito palette, BGR
BLUE = (178, 114, 0)  # permit
VERMILION = (0, 94, 213)  # deny
ORANGE = (0, 159, 230)  # exclusion outlines
SKY = (233, 180, 86)  # planned outlines
YELLOW = (66, 228, 240)  # tip
GREY = (170, 170, 170)  # other zones
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class ZoneOutline:
    name: str
    kind: str  # "planned" | "exclusion" | "other"
    polylines_px: list[np.ndarray]  # each (N, 2) float image pixels
    closed: bool = True  # False: pieces of a ring (the scalp's, where part of it faces away from the camera)


@dataclass
class ZoneProgress:
    name: str
    fraction: float  # share of cells at or above target passes
    over: int = 0  # cells above maximum


@dataclass
class OverlayState:
    """Everything one overlay frame shows; filled by the pipeline, drawn here."""

    armed: bool = False
    paused: bool = False
    permit: bool = False
    reason: str = "not_armed"
    zone: str | None = None
    boundary_mm: float | None = None
    outlines: list[ZoneOutline] = field(default_factory=list)
    coverage_px: np.ndarray | None = None  # (N, 3): x, y, passes of deposited footprints visible now
    footprint_radius_px: float = 0.0
    tip_px: tuple[float, float] | None = None
    progress: list[ZoneProgress] = field(default_factory=list)
    chart_inset: np.ndarray | None = None  # BGR picture of the chart with coverage
    fps: float = 0.0
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    link: str = "no controller"  # "connected" | "silent" | ...
    pulses: int = 0
    violations: int = 0
    layers: dict[str, bool] = field(default_factory=lambda: {"zones": True, "coverage": True, "inset": True, "mesh": False})
    frame_index: int = -1  # for the console: which frame, and how long the session has run
    elapsed_s: float = 0.0
    key_refusals: int = 0  # controller keys refused (not on the allow-list) so far
    prompt: str = ""  # what the practitioner is asked to do now (a scalp session's touch registration), shown big
    target_px: tuple[float, float] | None = None  # where the prompt asks the tip to go (the landmark to touch)


def _text(img, s, org, scale, colour=WHITE, thick=2):
    cv2.putText(img, s, org, FONT, scale, BLACK, thick + (3 if scale >= 0.6 else 2), cv2.LINE_AA)
    cv2.putText(img, s, org, FONT, scale, colour, thick, cv2.LINE_AA)


def _banner(img: np.ndarray, st: OverlayState) -> None:
    h, w = img.shape[:2]
    bh = max(44, h // 9)
    if not st.armed:
        colour, word, detail = (90, 90, 90), "DISARMED", "press A to arm"
    elif st.permit:
        colour, word, detail = BLUE, "PERMIT", st.zone or ""
    else:
        colour, word, detail = VERMILION, "DENY", st.reason.replace("_", " ")
    band = img[0:bh]
    tint = np.empty_like(band)
    tint[:] = colour
    cv2.addWeighted(tint, 0.75, band, 0.25, 0, dst=band)
    if st.armed and not st.permit:  # stripes: deny is recognisable without colour
        for x in range(-bh, w, 28):
            cv2.line(band, (x, bh), (x + bh, 0), BLACK, 4, cv2.LINE_AA)
    scale = bh / 40
    _text(img, word, (12, int(bh * 0.78)), scale, WHITE, max(2, int(scale * 2)))
    (tw, _), _ = cv2.getTextSize(word, FONT, scale, max(2, int(scale * 2)))
    _text(img, detail, (24 + tw, int(bh * 0.72)), scale * 0.55, WHITE, 2)
    if st.paused:
        _text(img, "PAUSED", (w - 130, int(bh * 0.7)), 0.8, YELLOW, 2)


def _prompt(img: np.ndarray, st: OverlayState) -> None:
    """The step asked for, under the banner, in words large enough to read from the chair (wrapped to fit)."""
    if not st.prompt:
        return
    h, w = img.shape[:2]
    scale = max(0.55, min(1.0, w / 900))
    words, lines, line = st.prompt.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if line and cv2.getTextSize(trial, FONT, scale, 2)[0][0] > w * 0.62:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    y = max(44, h // 9) + int(34 * scale)
    for text in lines[:4]:
        _text(img, text, (12, y), scale, YELLOW, 2)
        y += int(32 * scale)


def _bars(img: np.ndarray, st: OverlayState) -> None:
    """One bar per planned zone, the label inside the bar; as many as fit."""
    h, w = img.shape[:2]
    if not st.progress:
        return
    bw, bh, gap = min(200, w // 3), 15, 3
    x0 = w - bw - 8
    y = max(44, h // 9) + 8
    fits = max(0, (h - 34 - y) // (bh + gap))
    shown = st.progress[:fits]
    if shown:
        panel = img[y - 3:y + len(shown) * (bh + gap), x0 - 3:x0 + bw + 3]
        cv2.addWeighted(panel, 0.35, np.zeros_like(panel), 0.65, 0, dst=panel)
    for p in shown:
        fill = int(bw * max(0.0, min(1.0, p.fraction)))
        cv2.rectangle(img, (x0, y), (x0 + fill, y + bh), BLUE, -1)
        cv2.rectangle(img, (x0, y), (x0 + bw, y + bh), (200, 200, 200), 1)
        label = f"{p.name.replace('_', ' ')}  {100 * p.fraction:.0f}%" + ("  OVER" if p.over else "")
        cv2.putText(img, label, (x0 + 4, y + bh - 4), FONT, 0.4, ORANGE if p.over else WHITE, 1, cv2.LINE_AA)
        y += bh + gap


def _status(img: np.ndarray, st: OverlayState) -> None:
    h, w = img.shape[:2]
    lat = "" if st.latency_ms_p99 is None else f"  latency {st.latency_ms_p50:.1f}/{st.latency_ms_p99:.1f} ms (p50/p99)"
    line = f"{st.fps:4.1f} fps{lat}  controller: {st.link}  pulses {st.pulses}  violations {st.violations}"
    cv2.rectangle(img, (0, h - 26), (w, h), BLACK, -1)
    _text(img, line, (8, h - 8), 0.45, WHITE if not st.violations else ORANGE, 1)


def draw_overlay(frame_bgr: np.ndarray, st: OverlayState) -> np.ndarray:
    """Return a new image: the frame with every enabled layer drawn."""
    img = frame_bgr.copy()
    if st.layers.get("coverage") and st.coverage_px is not None and len(st.coverage_px):
        heat = img.copy()
        r = max(2, int(round(st.footprint_radius_px)))
        for x, y, passes in st.coverage_px:
            shade = min(1.0, passes / 3.0)
            colour = tuple(int(a * (1 - shade) + b * shade) for a, b in zip(SKY, BLUE))
            cv2.circle(heat, (int(x), int(y)), r, colour, -1, cv2.LINE_AA)
        cv2.addWeighted(heat, 0.45, img, 0.55, 0, dst=img)
    if st.layers.get("zones"):
        colours = {"planned": SKY, "exclusion": ORANGE, "other": GREY}
        widths = {"planned": 2, "exclusion": 3, "other": 1}
        for z in st.outlines:
            pts = [np.round(p * 16).astype(np.int32) for p in z.polylines_px if len(p) > 1]
            cv2.polylines(img, pts, z.closed, colours.get(z.kind, GREY), widths.get(z.kind, 1), cv2.LINE_AA, shift=4)
    if st.target_px is not None and all(np.isfinite(st.target_px)):  # the landmark to touch: a ring with a gap
        x, y = int(round(st.target_px[0])), int(round(st.target_px[1]))
        for colour, width in ((BLACK, 5), (YELLOW, 2)):
            cv2.circle(img, (x, y), 12, colour, width, cv2.LINE_AA)
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                cv2.line(img, (x + 16 * dx, y + 16 * dy), (x + 24 * dx, y + 24 * dy), colour, width, cv2.LINE_AA)
    if st.tip_px is not None:
        x, y = int(round(st.tip_px[0])), int(round(st.tip_px[1]))
        r = max(3, int(round(st.footprint_radius_px)))
        cv2.circle(img, (x, y), r + 2, BLACK, 3, cv2.LINE_AA)
        cv2.circle(img, (x, y), r, YELLOW, 2, cv2.LINE_AA)
        cv2.drawMarker(img, (x, y), YELLOW, cv2.MARKER_CROSS, 10, 1, cv2.LINE_AA)
    if st.layers.get("inset") and st.chart_inset is not None:
        h, w = img.shape[:2]
        ih = h // 3
        iw = int(st.chart_inset.shape[1] * ih / st.chart_inset.shape[0])
        inset = cv2.resize(st.chart_inset, (iw, ih), interpolation=cv2.INTER_AREA)
        y0 = h - 30 - ih
        img[y0:y0 + ih, 8:8 + iw] = inset
        cv2.rectangle(img, (8, y0), (8 + iw, y0 + ih), WHITE, 1)
    _banner(img, st)
    _prompt(img, st)
    _bars(img, st)
    _status(img, st)
    return img
