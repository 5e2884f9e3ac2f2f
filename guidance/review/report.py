"""`guidance report`: one self-contained HTML file a trainer can open anywhere, mail or archive.

No scripts, no external files, no new dependency: plots are inline SVG, pictures
(the face chart with coverage, violation thumbnails) are embedded base64 images
drawn with OpenCV. Every number comes from the recording (`timeline.py`), and
coverage is rebuilt from the recorded pulses and checked against the coverage
the live app saved at the end, so the report says when they disagree.

Sections per session (element ids carry the session's number, e.g. `summary-1`):
summary, coverage, timeline, denials, violations, latency; with several
sessions a `cohort` table comes first.
"""

from __future__ import annotations

import base64
import html
import math
import os
import sys
import time
import warnings
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from guidance.errors import UserError
from guidance.live.overlay import draw_overlay
from guidance.session.reader import Session, open_session
from guidance.session.records import SessionEnd
from guidance.review.timeline import CoverageReplay, Timeline, build_timeline, recorded_coverage, session_notes
from guidance.zones.atlas import Atlas, load_atlas
from guidance.zones.atlas_render import render_atlas
from guidance.zones.coverage import CoverageMap

SECTIONS = ("summary", "coverage", "timeline", "denials", "violations", "latency")

DENY_TEXT = {  # docs/protocol.md §7.1
    "ok": "permit",
    "not_armed": "the session was not armed",
    "camera_stalled": "the newest frame was too old",
    "no_face": "no face tracked",
    "other_face": "another face, not the client's, in view (the client's lost)",
    "face_stale": "the face track was too old",
    "low_presence": "face presence below threshold",
    "band_unregistered": "head band not registered yet (face pose, then the landmark touches)",
    "band_lost": "head band not tracked",
    "band_moved": "head band slipped on the head",
    "patch_lost": "skin reference patch not seen",
    "patch_stale": "the skin patch pose was too old (markers hidden)",
    "neck_unreferenced": "the torso's rest pose (client facing the camera) not made yet: neck and décolletage unplaced",
    "tip_lost": "handpiece tip not tracked",
    "tip_low_confidence": "tip tracked with low confidence",
    "calibration_missing": "calibration required and missing",
    "patch_far": "tip too far from the skin patch (move the patch)",
    "off_surface": "tip not over the treatable surface",
    "zone_excluded": "tip in an exclusion zone",
    "zone_not_planned": "tip's zone not in the plan",
    "near_boundary": "too close to the plan's edge for the speed (look-ahead)",
    "near_exclusion": "too close to an exclusion (beyond its clinical buffer) for the speed (look-ahead)",
    "passes_exceeded": "local passes at the plan's maximum",
    "zone_complete": "zone at target, plan stops at target",
    "internal_error": "the service hit an error",
    "service_stopping": "the service was shutting down",
}
VIOLATION_TEXT = {  # docs/protocol.md §6
    "no_permit": "fired without a permit",
    "unknown_permit": "permit not published by this service boot",
    "permit_denied": "fired under a deny",
    "before_permit": "fired before the permit's frame",
    "expired_permit": "fired after the permit expired",
    "after_revocation": "fired after the permit was revoked by a deny",
    "missing": "a pulse fired and never reported (a gap in pulse_seq, or counted in the controller's status)",
}

# SVG colours (Okabe-Ito, as in the live overlay)
C_PERMIT, C_DENY, C_TRACK, C_OFF, C_TIP = "#0072B2", "#D55E00", "#E69F00", "#777777", "#F0E442"
C_SKY, C_GREEN = "#56B4E9", "#009E73"


def _reason_css(reason: str) -> str:
    if reason == "ok":
        return C_PERMIT
    if reason in ("not_armed", "service_stopping"):
        return C_OFF
    if reason in ("no_face", "other_face", "face_stale", "low_presence", "band_unregistered", "band_lost", "band_moved",
                  "patch_lost", "patch_stale", "neck_unreferenced", "tip_lost", "tip_low_confidence", "camera_stalled"):
        return C_TRACK
    return C_DENY


class Progress:
    """A one-line text progress bar on stderr; no dependency, silent when disabled."""

    def __init__(self, total: int, enabled: bool = True, stream=None, width: int = 30, name: str = "report"):
        self.total = max(total, 1)
        self.name = name
        self.done = 0
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.width = width
        self._last = 0.0

    def step(self, label: str, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and self.done < self.total):
            return
        self._last = now
        fill = int(self.width * self.done / self.total)
        self.stream.write(f"\r{self.name} [{'#' * fill}{'.' * (self.width - fill)}] "
                          f"{100 * self.done // self.total:3d}% {label[:50]:<50}")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.step("done", 0)
            self.stream.write("\n")
            self.stream.flush()


# ------------------------------------------------------------------------------------------ numbers

@dataclass
class SessionFacts:
    """The numbers of one session, as shown in its sections and the cohort table."""

    index: int
    dir: Path
    session_id: str
    started: str
    plan_id: str
    duration_s: float
    frames: int
    permitted_frames: int
    armed_frames: int
    pulses: int
    unplaced_pulses: int
    violations: int
    late_reports: int
    denied_frames: dict[str, int]
    denial_episodes: dict[str, int]
    violations_by_reason: dict[str, int]
    coverage: dict[str, dict]  # per planned zone: fraction_at_target, cells_over_max, pulses, mean_passes ...
    coverage_matches_live: bool | None  # None: the live coverage was not saved (cut-off recording)
    latency_ms: dict[str, float]
    truncated: bool  # cut off or damaged: something could not be read
    warnings: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)  # beyond a torn end (Session.damage)

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    @property
    def cut_off(self) -> bool:
        return any(w not in self.damage for w in self.warnings)

    @property
    def state(self) -> str:
        """How the recording reads: damaged, cut off, or complete."""
        return "damaged" if self.damaged else ("cut off" if self.cut_off else "complete")

    @property
    def mean_coverage(self) -> float:
        vals = [z["fraction_at_target"] for z in self.coverage.values()]
        return float(np.mean(vals)) if vals else 0.0


def _pct(a: np.ndarray, q: float) -> float:
    a = a[np.isfinite(a)]
    return float(np.percentile(a, q)) if a.size else math.nan


def session_facts(k: int, tl: Timeline, cov: CoverageMap, live: CoverageMap | None) -> SessionFacts:
    lat = tl.latency_ms
    zones = {}
    for name in tl.plan.zones:
        z = cov.zone(name)
        zones[name] = {"target": z.target_passes, "max": z.max_passes, "fraction_at_target": z.fraction_at_target,
                       "cells_over_max": z.cells_over_max, "pulses": z.pulses, "mean_passes": z.mean_passes,
                       "cells": z.cells}
    matches = None
    if live is not None:
        matches = bool(np.array_equal(live.passes, cov.passes)) and live.pulses == cov.pulses
    info = tl.session.info
    return SessionFacts(
        index=k, dir=tl.session.dir, session_id=str(info.get("session_id", tl.session.dir.name)),
        started=str(info.get("started_wall", "")), plan_id=tl.plan.plan_id, duration_s=tl.duration_s,
        frames=tl.n, permitted_frames=int(tl.permit.sum()), armed_frames=int(tl.armed.sum()),
        pulses=len(tl.pulses), unplaced_pulses=cov.unplaced_pulses, violations=len(tl.violations),
        late_reports=tl.late_reports,
        denied_frames=tl.denied_frames_by_reason(), denial_episodes=tl.episodes_by_reason(),
        violations_by_reason=tl.violations_by_reason(), coverage=zones, coverage_matches_live=matches,
        latency_ms={"p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99),
                    "max": float(np.nanmax(lat)) if np.isfinite(lat).any() else math.nan},
        truncated=tl.session.truncated, warnings=list(tl.warnings), damage=list(tl.session.damage),
    )


def session_numbers(session: Session, k: int, atlas: Atlas) -> tuple[SessionFacts, Timeline, CoverageMap]:
    """One session's numbers (timeline, coverage rebuilt from its pulses, facts): what every report of it
    shows, `guidance report`'s and fleet review's alike (guidance/fleet/)."""
    tl = build_timeline(session, atlas)
    cov = CoverageReplay(tl, atlas).final()
    return session_facts(k, tl, cov, recorded_coverage(tl, atlas)), tl, cov


def facts_json(f: SessionFacts) -> dict:
    """A session's facts as JSON, without what names one report's copy of them (its place in the report, the
    folder it was read from): not-a-number (a latency never measured) is null."""
    d = dataclasses.asdict(f)
    for k in ("index", "dir"):
        d.pop(k)
    d["mean_coverage"] = f.mean_coverage
    return _finite(d)


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------ pictures

def _png_b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", img)
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _jpg_b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def coverage_picture(cov: CoverageMap, atlas: Atlas, px_per_mm: float = 2.0) -> np.ndarray:
    """The atlas picture with each coverage cell coloured: short of target, at target, over the maximum.

    Uses render_atlas's own crop (zones' extent plus 10 mm) so labels and the scale bar stay right.
    """
    base = render_atlas(atlas, px_per_mm=px_per_mm)
    g = atlas.grid
    rows, cols = np.nonzero(atlas.labels)
    r0 = max(rows.min() - int(10.0 / g.cell_mm), 0)
    c0 = max(cols.min() - int(10.0 / g.cell_mm), 0)
    scale = px_per_mm * g.cell_mm
    h, w = base.shape[:2]
    u = g.u0_mm + ((np.arange(w) + 0.5) / scale - 0.5 + c0) * g.cell_mm
    v = g.v0_mm + ((np.arange(h) + 0.5) / scale - 0.5 + r0) * g.cell_mm
    j = np.clip(np.round((u - cov.u0_mm) / cov.cell_mm).astype(int), 0, cov.width - 1)
    i = np.clip(np.round((v - cov.v0_mm) / cov.cell_mm).astype(int), 0, cov.height - 1)
    passes = cov.passes[np.ix_(i, j)]
    labels = cov.labels[np.ix_(i, j)]
    target = np.zeros(256)
    maximum = np.full(256, np.inf)
    planned = np.zeros(256, bool)
    for name, (t, m) in cov.targets.items():
        lab = atlas.zones[name].label
        target[lab], maximum[lab], planned[lab] = t, m, True
    tgt, mx, pl = target[labels], maximum[labels], planned[labels]
    out = base.copy()
    layers = [
        (pl & (passes == 0), (200, 200, 255), 0.55),  # planned, untouched: pale red = short
        (pl & (passes > 0) & (passes < tgt), (233, 180, 86), 0.75),  # some passes, below target: sky blue
        ((passes >= tgt) & (passes <= mx) & (passes > 0), (178, 114, 0), 0.8),  # at target: blue
        (passes > mx, (0, 94, 213), 0.85),  # over the maximum: vermilion
        (~pl & (passes > 0), (0, 159, 230), 0.8),  # passes outside the plan: orange
    ]
    for mask, colour, alpha in layers:
        if mask.any():
            out[mask] = (out[mask] * (1 - alpha) + np.asarray(colour) * alpha).astype(np.uint8)
    # crop to the planned zones (plus 15 mm) so a face plan shows a face, not the whole atlas
    if planned.any():
        sel = planned[labels]
        ys, xs = np.nonzero(sel)
        pad = int(15 * px_per_mm)
        out = out[max(ys.min() - pad, 0):ys.max() + pad, max(xs.min() - pad, 0):xs.max() + pad]
    return out


def violation_thumbnail(tl: Timeline, frame: int, width: int = 280) -> np.ndarray | None:
    """The recorded frame the violation landed after, with the overlay as the practitioner saw it."""
    img = tl.session.image(frame)
    if img is None:
        return None
    from guidance.review.player import FrameComposer
    composer = getattr(tl, "_composer", None)
    if composer is None:
        composer = FrameComposer(tl)
        tl._composer = composer  # type: ignore[attr-defined]
    st = composer.overlay_state(frame, img.shape[1])
    st.progress = []  # the thumbnail is about the tip and the banner; bars would be unreadable
    pic = draw_overlay(img, st)
    h = int(pic.shape[0] * width / pic.shape[1])
    return cv2.resize(pic, (width, h), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------------------------ SVG

def _f(x: float) -> str:
    return f"{x:.1f}"


def _polyline(xs: np.ndarray, ys: np.ndarray, colour: str, width: float = 1.5, dash: str = "") -> str:
    """Polylines broken at NaN (untracked stretches are gaps, not lines)."""
    out, seg = [], []
    for x, y in zip(xs, ys):
        if math.isfinite(y):
            seg.append(f"{_f(x)},{_f(y)}")
        elif seg:
            out.append(seg)
            seg = []
    if seg:
        out.append(seg)
    d = f' stroke-dasharray="{dash}"' if dash else ""
    return "".join(f'<polyline points="{" ".join(s)}" fill="none" stroke="{colour}" stroke-width="{width}"{d}/>'
                   if len(s) > 1 else
                   f'<circle cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}" r="1.5" fill="{colour}"/>'
                   for s in out)


def _decimate(n: int, max_points: int = 1500) -> np.ndarray:
    return np.arange(n) if n <= max_points else np.unique(np.linspace(0, n - 1, max_points).astype(int))


def timeline_svg(tl: Timeline, width: int = 1100) -> str:
    """Permit band by reason, speed, boundary distance vs required, pulses and violations on one time axis."""
    L, R = 70, 20
    W = width - L - R
    T = max(tl.duration_s, 1e-3)

    def X(t: float | np.ndarray):
        return L + np.asarray(t) / T * W

    parts: list[str] = []
    y = 10
    # permit band: runs of the same state drawn as one rectangle each
    band_h = 22
    parts.append(f'<text x="4" y="{y + 15}" class="lab">permit</text>')
    i = 0
    ends = np.r_[tl.t_s[1:], tl.t_s[-1] + 1.0 / max(tl.fps, 1)]
    while i < tl.n:
        j = i
        while j + 1 < tl.n and tl.permit[j + 1] == tl.permit[i] and tl.reason[j + 1] == tl.reason[i]:
            j += 1
        r = "ok" if tl.permit[i] else tl.reason[i]
        x0, x1 = X(tl.t_s[i]), X(min(ends[j], T))
        parts.append(f'<rect x="{_f(x0)}" y="{y}" width="{_f(max(x1 - x0, 0.5))}" height="{band_h}" '
                     f'fill="{_reason_css(r)}"><title>{html.escape(r)}: frames {i}-{j}</title></rect>')
        i = j + 1
    y += band_h + 8
    # pulses and violations
    parts.append(f'<text x="4" y="{y + 12}" class="lab">pulses</text>')
    for p in tl.pulses:
        x = _f(X(tl.t_s[p.frame]))
        parts.append(f'<line x1="{x}" y1="{y}" x2="{x}" y2="{y + 16}" stroke="{C_GREEN}" stroke-width="1.2">'
                     f'<title>pulse {html.escape(str(getattr(p.event, "pulse_seq", "")))} in '
                     f'{html.escape(str(getattr(p.event, "zone", "")))}</title></line>')
    y += 20
    parts.append(f'<text x="4" y="{y + 12}" class="lab">violations</text>')
    for v in tl.violations:
        x = X(tl.t_s[v.frame])
        parts.append(f'<path d="M{_f(x)},{y} l6,14 l-12,0 z" fill="{C_DENY}" stroke="#000" stroke-width="0.5">'
                     f'<title>violation {html.escape(str(getattr(v.event, "reason", "")))} after frame {v.frame}</title></path>')
    y += 24
    idx = _decimate(tl.n)
    xs = X(tl.t_s[idx])
    # speed
    ph = 110
    sp = tl.speed_mm_s[idx]
    smax = float(np.nanmax(sp)) if np.isfinite(sp).any() else 0.0
    smax = max(10.0, math.ceil(smax / 10) * 10)
    parts.append(_panel(L, y, W, ph, 0.0, smax, "speed mm/s"))
    parts.append(_polyline(xs, y + ph - sp / smax * ph, C_SKY))
    y += ph + 16
    # boundary distance vs required
    b, rq = tl.boundary_mm[idx], tl.required_mm[idx]
    finite = np.r_[b[np.isfinite(b)], rq[np.isfinite(rq)]]
    hi = max(10.0, math.ceil(float(finite.max()) / 5) * 5) if finite.size else 10.0
    lo = min(0.0, math.floor(float(finite.min()) / 5) * 5) if finite.size else 0.0
    parts.append(_panel(L, y, W, ph, lo, hi, "boundary mm"))

    def Y(v):
        return y + ph - (np.clip(v, lo, hi) - lo) / (hi - lo) * ph
    parts.append(_polyline(xs, Y(b), C_PERMIT, 1.6))
    parts.append(_polyline(xs, Y(rq), C_DENY, 1.4, "5,3"))
    parts.append(f'<text x="{L + W - 250}" y="{y + 12}" class="lab"><tspan fill="{C_PERMIT}">— distance to '
                 f'plan edge</tspan>  <tspan fill="{C_DENY}">- - required (look-ahead)</tspan></text>')
    y += ph + 8
    # time axis
    step = _nice_step(T)
    t = 0.0
    while t <= T + 1e-9:
        x = _f(X(t))
        parts.append(f'<line x1="{x}" y1="10" x2="{x}" y2="{y}" stroke="#ddd" stroke-width="0.5"/>'
                     f'<text x="{x}" y="{y + 14}" class="lab" text-anchor="middle">{t:g}</text>')
        t += step
    parts.append(f'<text x="{L + W}" y="{y + 28}" class="lab" text-anchor="end">time since first frame (s)</text>')
    height = y + 34
    # gridlines go under everything: move them first
    grid = [p for p in parts if p.startswith('<line x1') and 'stroke="#ddd"' in p]
    rest = [p for p in parts if p not in grid]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="session timeline">'
            + "".join(grid) + "".join(rest) + "</svg>")


def _nice_step(span: float) -> float:
    raw = span / 10
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _panel(x: float, y: float, w: float, h: float, lo: float, hi: float, label: str) -> str:
    s = [f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="#fafafa" stroke="#bbb" stroke-width="0.5"/>',
         f'<text x="{x + 4}" y="{y + 12}" class="lab">{html.escape(label)}</text>',
         f'<text x="{x - 4}" y="{y + 10}" class="lab" text-anchor="end">{hi:g}</text>',
         f'<text x="{x - 4}" y="{y + h}" class="lab" text-anchor="end">{lo:g}</text>']
    if lo < 0 < hi:
        y0 = y + h - (0 - lo) / (hi - lo) * h
        s.append(f'<line x1="{x}" y1="{_f(y0)}" x2="{x + w}" y2="{_f(y0)}" stroke="#999" stroke-width="0.7"/>')
    return "".join(s)


def bars_svg(counts: dict[str, int], colour_of=_reason_css, width: int = 560) -> str:
    if not counts:
        return '<p class="none">none</p>'
    rows = list(counts.items())
    top = max(v for _, v in rows) or 1
    bh, L = 20, 170
    h = len(rows) * (bh + 4) + 4
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" viewBox="0 0 {width} {h}">']
    for k, (name, v) in enumerate(rows):
        y = 4 + k * (bh + 4)
        w = (width - L - 60) * v / top
        s.append(f'<text x="{L - 6}" y="{y + 15}" class="lab" text-anchor="end">{html.escape(name)}</text>'
                 f'<rect x="{L}" y="{y}" width="{_f(max(w, 1))}" height="{bh}" fill="{colour_of(name)}"/>'
                 f'<text x="{_f(L + w + 4)}" y="{y + 15}" class="lab">{v}</text>')
    s.append("</svg>")
    return "".join(s)


def histogram_svg(values: np.ndarray, label: str, width: int = 560, bins: int = 40) -> str:
    v = values[np.isfinite(values)]
    if not v.size:
        return '<p class="none">no data</p>'
    hi = float(np.percentile(v, 99.5)) or 1.0
    counts, edges = np.histogram(np.clip(v, None, hi), bins=bins, range=(min(0.0, float(v.min())), hi))
    L, H = 40, 120
    W = width - L - 10
    top = counts.max() or 1
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H + 30}" viewBox="0 0 {width} {H + 30}">']
    bw = W / bins
    for k, c in enumerate(counts):
        h = H * c / top
        s.append(f'<rect x="{_f(L + k * bw)}" y="{_f(H - h)}" width="{_f(bw - 1)}" height="{_f(h)}" fill="{C_SKY}">'
                 f'<title>{edges[k]:.1f}-{edges[k + 1]:.1f}: {c}</title></rect>')
    s.append(f'<line x1="{L}" y1="{H}" x2="{L + W}" y2="{H}" stroke="#333"/>'
             f'<text x="{L}" y="{H + 14}" class="lab">{edges[0]:.1f}</text>'
             f'<text x="{L + W}" y="{H + 14}" class="lab" text-anchor="end">{edges[-1]:.1f}</text>'
             f'<text x="{L + W / 2}" y="{H + 26}" class="lab" text-anchor="middle">{html.escape(label)}</text>'
             f'<text x="{L - 4}" y="10" class="lab" text-anchor="end">{top}</text></svg>')
    return "".join(s)


# ------------------------------------------------------------------------------------------ HTML

def _templates():
    """The report's Jinja2 templates (guidance/review/templates/), shared with the console's review pages."""
    from guidance.review.templating import environment
    return environment()



def _e(x: object) -> str:
    return html.escape(str(x))


def _num(x: float, fmt: str = ".1f") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _kv_table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _when(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return iso


def band_registration_text(tl: Timeline) -> str:
    """A scalp session's head band registration in one line ("" for other sessions): how and when it registered,
    the fit, the sigma it gave the gate, and how often it registered again (a slip)."""
    frames = tl.session.frames
    bands = [(r, r.head_band) for r in frames if r.head_band is not None]
    if not bands:
        return ""
    t0 = frames[0].t_capture_ns
    first = next(((r, b) for r, b in bands if b.state == "ok"), None)
    if first is None:
        return "never registered (every frame denied band_unregistered, band_lost or band_moved)"
    r, b = first
    again = sum(1 for (_, x), (_, y) in zip(bands, bands[1:]) if x.registered and not y.registered)
    fit = (f"touching {b.samples} landmarks, fit residual {_num(b.spread_mm or math.nan)} mm RMS" if b.method == "touch"
           else f"from {b.samples} face poses")
    return (f"registered at {(r.t_capture_ns - t0) / 1e9:.1f} s {fit}; sigma {_num(b.sigma_mm or math.nan)} mm; "
            + (f"registered again {again} time(s) after a slip" if again else "no slip"))


def neck_text(tl: Timeline) -> str:
    """A plan with neck zones: when the torso's rest pose was made and how far the head turned from it ("" for
    other sessions; docs/neck.md)."""
    frames = tl.session.frames
    torso = [(r, r.torso) for r in frames if r.torso is not None]
    if not torso:
        return ""
    ready = [(r, t) for r, t in torso if t.ready and t.psi_deg is not None]
    if not ready:
        return "the rest pose (client facing the camera) was never made: every neck and décolletage point denied neck_unreferenced"
    t0 = frames[0].t_capture_ns
    psi = [float(t.psi_deg) for _, t in ready]  # type: ignore[arg-type]
    text = (f"rest pose made at {(ready[0][0].t_capture_ns - t0) / 1e9:.1f} s; the head turned from "
            f"{min(psi):+.0f}° to {max(psi):+.0f}° since (the neck twisting on the torso)")
    offsets = [t.notch_offset_mm for _, t in ready if t.notch_offset_mm is not None]
    if offsets:
        o = offsets[-1]
        text += (f"; the sternal notch touched {float(np.linalg.norm(o)):.1f} mm from the model's "
                 f"({o[0]:+.1f}, {o[1]:+.1f}, {o[2]:+.1f} mm), the neck's lower end placed there")
    return text


def summary_html(f: SessionFacts, tl: Timeline) -> str:
    info = tl.session.info
    plan = tl.plan
    hp = (info.get("handpiece") or {}).get("content") or {}
    cam = info.get("camera") or {}
    rows = [
        ("session", _e(f.session_id)),
        ("started", _e(_when(f.started))),
        ("operator / client", _e(" / ".join(str(info.get(k, "not recorded")) for k in ("operator", "client")))),
        ("source", _e(info.get("source", ""))),
        ("software", _e(f"guidance {(info.get('software') or {}).get('guidance', '?')}, atlas "
                        f"{info.get('atlas_version', '?')}, chart {info.get('chart_version', '?')}")),
        ("plan", _e(f"{plan.plan_id} ({plan.area}) {plan.description}".strip())
         + f" — {len(plan.zones)} zone(s); margin {plan.margin_mm:g} mm, permit TTL {plan.ttl_ms} ms, "
           f"stop at target: {'yes' if plan.stop_at_target else 'no'}"
         + (f"; extra exclusions: {_e(', '.join(plan.exclusions))}" if plan.exclusions else "")),
        ("handpiece", _e(f"{hp.get('name', '?')}, electrode {tl.electrode_diameter_mm:g} mm")),
        ("camera", "calibrated" if cam.get("calibrated") else "uncalibrated (default intrinsics)"),
        ("duration", f"{f.duration_s:.1f} s, {f.frames} frames ({_num(f.frames / f.duration_s if f.duration_s else 0)} fps)"),
        ("armed / permitted", f"{f.armed_frames} frames armed, {f.permitted_frames} permitted"),
        ("pulses", f"<b>{f.pulses}</b> delivered ({f.unplaced_pulses} off every zone)"
         + (f"; {f.late_reports} report(s) arrived late, after the pulse had been recorded missing"
            if f.late_reports else "")),
        ("violations", f'<b class="{"bad" if f.violations else "ok"}">{f.violations}</b>'),
    ]
    band = band_registration_text(tl)
    if band:
        rows.insert(-3, ("head band", _e(band)))
    neck = neck_text(tl)
    if neck:
        rows.insert(-3, ("neck", _e(neck)))
    warn = ""
    if f.damaged:
        warn += ('<p class="warn bad"><b>Damaged recording.</b> Parts of it could not be read; the figures '
                 "below cover the readable records only: " + "; ".join(_e(w) for w in f.damage) + "</p>")
    if f.cut_off:
        warn += ('<p class="warn"><b>Cut-off recording.</b> Everything up to the last good record is shown. '
                 + "; ".join(_e(w) for w in f.warnings if w not in f.damage) + "</p>")
    return f'<section id="summary-{f.index}"><h2>Session summary</h2>{warn}{_kv_table(rows)}</section>'


def coverage_html(f: SessionFacts, cov: CoverageMap, atlas: Atlas) -> str:
    rows = []
    for name, z in f.coverage.items():
        cls = "ok" if z["fraction_at_target"] >= 0.98 else ("bad" if z["fraction_at_target"] < 0.5 else "")
        rows.append(f'<tr><td>{_e(name)}</td><td class="n">{z["target"]}</td><td class="n">{z["max"]}</td>'
                    f'<td class="n {cls}">{100 * z["fraction_at_target"]:.1f}%</td>'
                    f'<td class="n">{z["mean_passes"]:.2f}</td><td class="n">{z["pulses"]}</td>'
                    f'<td class="n{" bad" if z["cells_over_max"] else ""}">{z["cells_over_max"]}</td></tr>')
    if f.coverage_matches_live is None:
        check = '<p class="warn">The live coverage was not saved (cut-off recording); rebuilt from the recorded pulses.</p>'
    elif f.coverage_matches_live:
        check = '<p class="ok">Rebuilt from the recorded pulses; identical to the coverage the live app saved.</p>'
    else:
        check = '<p class="warn bad">Rebuilt coverage differs from the coverage the live app saved.</p>'
    pic = _png_b64(coverage_picture(cov, atlas))
    legend = ('<p class="legend"><span style="background:#ffc8c8">planned, untouched</span>'
              '<span style="background:#56B4E9">below target</span><span style="background:#0072B2;color:#fff">'
              'at target</span><span style="background:#D55E00;color:#fff">over maximum</span>'
              '<span style="background:#E69F00">outside the plan</span></p>')
    return (f'<section id="coverage-{f.index}"><h2>Coverage per zone</h2>{check}'
            '<table><tr><th>zone</th><th>target passes</th><th>max</th><th>at target</th><th>mean passes</th>'
            f'<th>pulses</th><th>cells over max</th></tr>{"".join(rows)}</table>{legend}'
            f'<img alt="face chart with coverage" src="{pic}" style="max-width:100%"></section>')


def timeline_html(f: SessionFacts, tl: Timeline) -> str:
    legend = (f'<p class="legend"><span style="background:{C_PERMIT};color:#fff">permit</span>'
              f'<span style="background:{C_OFF};color:#fff">not armed</span>'
              f'<span style="background:{C_TRACK}">tracking (face, tip, camera)</span>'
              f'<span style="background:{C_DENY};color:#fff">plan refusal</span>'
              f'<span style="color:{C_GREEN}">| pulse</span><span style="color:{C_DENY}">▲ violation</span></p>')
    return f'<section id="timeline-{f.index}"><h2>Timeline</h2>{legend}{timeline_svg(tl)}</section>'


def denials_html(f: SessionFacts, tl: Timeline) -> str:
    armed_eps = tl.episodes_by_reason(armed_only=True)
    rows = "".join(
        f'<tr><td><span style="color:{_reason_css(r)}">■</span> {_e(r)}</td><td>{_e(DENY_TEXT.get(r, ""))}</td>'
        f'<td class="n">{n}</td><td class="n">{100 * n / max(f.frames, 1):.1f}%</td>'
        f'<td class="n">{f.denial_episodes.get(r, 0)}</td><td class="n">{armed_eps.get(r, 0)}</td></tr>'
        for r, n in f.denied_frames.items())
    table = ('<table><tr><th>reason</th><th>meaning</th><th>frames denied</th><th>share of frames</th>'
             f'<th>episodes</th><th>episodes while armed</th></tr>{rows}</table>') if rows else '<p class="none">none</p>'
    return (f'<section id="denials-{f.index}"><h2>Denials by reason</h2>'
            f'<p>{sum(f.denied_frames.values())} of {f.frames} frames denied. An episode is a run of consecutive '
            'frames denied for the same reason (the player\'s <kbd>n</kbd> jumps between episodes).</p>'
            f'{table}{bars_svg(f.denied_frames)}</section>')


def violations_html(f: SessionFacts, tl: Timeline, max_thumbnails: int, progress: Progress) -> str:
    if not tl.violations:
        return (f'<section id="violations-{f.index}"><h2>Violations</h2>'
                '<p class="ok">No pulse fired without a valid permit.</p></section>')
    rows = []
    for k, v in enumerate(tl.violations):
        d = v.event
        thumb = ""
        if k < max_thumbnails:
            pic = violation_thumbnail(tl, v.frame)
            thumb = (f'<img alt="frame {v.frame}" src="{_jpg_b64(pic)}">' if pic is not None
                     else '<span class="none">no image</span>')
            progress.step(f"session {f.index}: violation thumbnails")
        r = str(getattr(d, "reason", ""))
        rows.append(f'<tr><td class="n">{k + 1}</td><td class="n">{tl.t_s[v.frame]:.2f}</td>'
                    f'<td class="n">{v.frame}</td><td>{_e(r)}<br><small>{_e(VIOLATION_TEXT.get(r, ""))}</small></td>'
                    f'<td>{_e(getattr(d, "zone", None))}</td><td class="n">{_e(getattr(d, "pulse_seq", None))}</td>'
                    f'<td class="n">{_e(getattr(d, "permit_seq", None))}</td><td>{thumb}</td></tr>')
    more = (f"<p>Thumbnails for the first {max_thumbnails} of {len(tl.violations)}.</p>"
            if len(tl.violations) > max_thumbnails else "")
    return (f'<section id="violations-{f.index}"><h2>Violations</h2>'
            f'<p class="bad">{len(tl.violations)} pulse(s) fired without a valid permit.</p>'
            f'{bars_svg(f.violations_by_reason, lambda _: C_DENY)}{more}'
            '<table><tr><th>#</th><th>t (s)</th><th>after frame</th><th>code</th><th>zone</th><th>pulse seq</th>'
            f'<th>permit seq</th><th>frame</th></tr>{"".join(rows)}</table></section>')


def latency_html(f: SessionFacts, tl: Timeline) -> str:
    ttl = tl.plan.ttl_ms
    late = int(np.sum(tl.latency_ms > ttl))
    rows = [("capture → publish", tl.latency_ms)] + [(f"stage: {k}", v) for k, v in tl.stage_ms.items()]
    body = "".join(f'<tr><td>{_e(name)}</td><td class="n">{_num(_pct(v, 50), ".2f")}</td>'
                   f'<td class="n">{_num(_pct(v, 90), ".2f")}</td><td class="n">{_num(_pct(v, 99), ".2f")}</td>'
                   f'<td class="n">{_num(float(np.nanmax(v)) if np.isfinite(v).any() else math.nan, ".2f")}</td></tr>'
                   for name, v in rows)
    end = next((e for e in tl.session.events if isinstance(e, SessionEnd)), None)
    dropped = ""
    if end is not None:
        s = end.summary or {}
        dropped = (f"<p>Frames dropped by the source: {_e(s.get('dropped_frames', '?'))}; overlay frames dropped: "
                   f"{_e(s.get('overlay_dropped', '?'))}.</p>")
    return (f'<section id="latency-{f.index}"><h2>Latency</h2>'
            f'<p>{late} frame(s) took longer than the permit TTL ({ttl} ms) from capture to publish.</p>{dropped}'
            '<table><tr><th>ms</th><th>median</th><th>p90</th><th>p99</th><th>max</th></tr>'
            f'{body}</table>{histogram_svg(tl.latency_ms, "capture → publish latency (ms)")}</section>')


def cohort_html(facts: list[SessionFacts]) -> str:
    rows = "".join(
        f'<tr><td><a href="#summary-{f.index}">{f.index}. {_e(f.session_id)}</a></td><td>{_e(_when(f.started))}</td>'
        f'<td>{_e(f.plan_id)}</td><td class="n">{f.duration_s:.1f}</td><td class="n">{f.pulses}</td>'
        f'<td class="n{" bad" if f.violations else ""}">{f.violations}</td>'
        f'<td class="n">{100 * f.permitted_frames / max(f.armed_frames, 1):.1f}%</td>'
        f'<td class="n">{100 * f.mean_coverage:.1f}%</td><td>{_e(next(iter(f.denied_frames), "–"))}</td>'
        f'<td class="n">{_num(f.latency_ms["p99"])}</td><td>{f.state}</td></tr>'
        for f in facts)
    tot_p = sum(f.pulses for f in facts)
    tot_v = sum(f.violations for f in facts)
    return ('<section id="cohort"><h2>Cohort</h2><table><tr><th>session</th><th>started</th><th>plan</th>'
            '<th>duration s</th><th>pulses</th><th>violations</th><th>permitted / armed frames</th>'
            '<th>mean zone coverage at target</th><th>top deny reason</th><th>latency p99 ms</th><th>recording</th></tr>'
            f'{rows}<tr><th>{len(facts)} sessions</th><td></td><td></td>'
            f'<td class="n">{sum(f.duration_s for f in facts):.1f}</td><td class="n">{tot_p}</td>'
            f'<td class="n">{tot_v}</td><td></td><td></td><td></td><td></td><td></td></tr></table></section>')


@dataclass
class ReportResult:
    path: Path
    facts: list[SessionFacts]

    def lines(self) -> list[str]:
        out = [f"report: {self.path} ({len(self.facts)} session(s))"]
        for f in self.facts:
            out.append(f"  {f.index}. {f.session_id}: {f.frames} frames, {f.pulses} pulses, {f.violations} violations"
                       + (f" ({f.state} recording)" if f.truncated else ""))
        return out


def report_sessions(session_dirs: list[str | Path], *, max_thumbnails: int = 24, progress: bool = True,
                    atlas: Atlas | None = None) -> dict:
    """The template context of a report on these recordings: title, cohort table and one body per session.

    `report.html` renders it as the standalone file; the console renders the same `report_body.html`
    inside its own page.
    """
    from markupsafe import Markup

    atlas = atlas or load_atlas()
    sessions = []
    timelines = []
    for d in session_dirs:  # every session is read (or refused) before a word is printed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report states the cut itself
            s = open_session(d)
        sessions.append(s)
        timelines.append(build_timeline(s, atlas))
    for d, s in zip(session_dirs, sessions):
        for note in session_notes(s):  # damage and a cut, one line each; the report says more
            print(f"guidance report: warning: {d}: {note}", file=sys.stderr)
    n_thumbs = sum(min(sum(1 for e in s.events if e.kind == "violation"), max_thumbnails) for s in sessions)
    prog = Progress(len(sessions) * 5 + n_thumbs + 1, enabled=progress)
    facts: list[SessionFacts] = []
    bodies: list[dict] = []
    for k, tl in enumerate(timelines, 1):
        prog.step(f"session {k}: timeline")
        prog.step(f"session {k}: coverage")
        cov = CoverageReplay(tl, atlas).final()
        f = session_facts(k, tl, cov, recorded_coverage(tl, atlas))  # as session_numbers, on the timeline built above
        facts.append(f)
        parts = [summary_html(f, tl), coverage_html(f, cov, cov.atlas)]  # a body plan's coverage: its patch chart
        prog.step(f"session {k}: plots")
        parts += [timeline_html(f, tl), denials_html(f, tl)]
        prog.step(f"session {k}: violations")
        parts.append(violations_html(f, tl, max_thumbnails, prog))
        parts.append(latency_html(f, tl))
        prog.step(f"session {k}: done")
        bodies.append({"index": k, "session_id": f.session_id, "sections": Markup("".join(parts))})
    title = ("Session report" if len(facts) == 1 else f"Cohort report: {len(facts)} sessions")
    return {"title": title, "facts": facts, "sessions": bodies, "progress": prog,
            "cohort": Markup(cohort_html(facts)) if len(facts) > 1 else "",
            "made": datetime.now().strftime("%Y-%m-%d %H:%M")}


def write_report(session_dirs: list[str | Path], output: str | Path, *, max_thumbnails: int = 24,
                 progress: bool = True) -> ReportResult:
    """Build the report for one or more recordings and write it atomically."""
    out = Path(output)
    if not out.parent.is_dir():
        raise UserError("folder does not exist", path=out.parent)
    if out.is_dir():
        raise UserError("is a folder; give an HTML file name", path=out)
    ctx = report_sessions(session_dirs, max_thumbnails=max_thumbnails, progress=progress)
    doc = _templates().get_template("report.html").render(**ctx)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, out)
    prog = ctx["progress"]
    prog.step("written")
    prog.finish()
    return ReportResult(out, ctx["facts"])
