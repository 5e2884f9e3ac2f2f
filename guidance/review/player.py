"""The session player: a recording played back with its overlays, a timeline strip and a chart view.

Three parts, kept apart so the logic is testable without a display:
- `PlayerState`: the state machine (current frame, playing, speed, seek, step,
  jump to the next/previous denial or violation), driven by key codes and a clock;
- `FrameComposer`: draws one frame as the practitioner saw it (the live
  overlay's own `draw_overlay` and `OverlayScene`, fed from the record, with
  coverage rebuilt up to that frame), a timeline strip and the face chart;
- `play()`: the loop, with a real OpenCV window or headless into a video,
  optionally driven by a scripted key sequence (tests, docs).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from guidance.errors import UserError
from guidance.live.overlay import BLUE, ORANGE, VERMILION, WHITE, YELLOW, OverlayState, draw_overlay
from guidance.live.touch_prompt import band_prompt, touch_target
from guidance.live.overlay_scene import (OverlayScene, project_decolletage_chart, project_neck_chart,
                                         project_scalp_chart)
from guidance.session import records
from guidance.session.records import FrameRecord
from guidance.vision.capture.camera import CameraModel
from guidance.vision.rigid import RigidPose
from guidance.review.timeline import CoverageReplay, Timeline
from guidance.zones.atlas import load_atlas
from guidance.zones.chart import load_chart

WINDOW = "guidance replay"
SPEEDS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
KEYS_HELP = ("space play/pause  . , step  [ ] -/+10 s  + - speed  n N next/prev denial  "
             "v V next/prev violation  0-9 seek  home end  q quit")

# Key codes from cv2.waitKeyEx for the arrow keys (Qt and GTK builds differ).
_RIGHT = {65363, 0x1000014, 2555904}
_LEFT = {65361, 0x1000012, 2424832}
_HOME = {65360, 0x1000010, 2359296}
_END = {65367, 0x1000011, 2293760}

# names usable in a scripted key sequence (--keys "n,space,right,q")
KEY_NAMES = {"space": 32, "right": 65363, "left": 65361, "home": 65360, "end": 65367, "esc": 27,
             "comma": ord(","), "plus": ord("+"), "minus": ord("-")}


def parse_keys(spec: str) -> list[int | None]:
    """A scripted key sequence: comma-separated names or single characters; `wait` = no key that frame."""
    out: list[int | None] = []
    for tok in (t.strip() for t in spec.split(",")):
        if not tok:
            continue
        if tok == "wait":
            out.append(None)
        elif tok.lower() in KEY_NAMES:
            out.append(KEY_NAMES[tok.lower()])
        elif len(tok) == 1:
            out.append(ord(tok))
        else:
            raise UserError(f"unknown key {tok!r} (use one character or one of: wait, {', '.join(KEY_NAMES)})",
                            field="--keys")
    return out


@dataclass
class PlayerState:
    """Where the player is and what it does next; pure logic, no window."""

    t_s: np.ndarray  # capture time of every frame, seconds from the first
    denial_starts: list[int]  # first frames of armed denial episodes
    violation_frames: list[int]
    frame: int = 0
    playing: bool = False
    speed: float = 1.0
    quit: bool = False
    message: str = ""
    _anchor: tuple[float, float] | None = field(default=None, repr=False)  # (clock, t_s) when play started

    @classmethod
    def for_timeline(cls, tl: Timeline) -> "PlayerState":
        starts = [e.start for e in tl.episodes if e.armed]
        return cls(tl.t_s, starts, sorted({v.frame for v in tl.violations}))

    @property
    def n(self) -> int:
        return len(self.t_s)

    # ---- moves ---------------------------------------------------------------
    def seek(self, frame: int) -> None:
        self.frame = min(max(int(frame), 0), self.n - 1)
        self._anchor = None

    def seek_time(self, t_s: float) -> None:
        self.seek(int(np.searchsorted(self.t_s, t_s, side="right")) - 1)

    def step(self, k: int) -> None:
        self.playing = False
        self.seek(self.frame + k)

    def _jump(self, frames: list[int], forward: bool, what: str) -> None:
        if forward:
            nxt = [f for f in frames if f > self.frame]
            target = nxt[0] if nxt else None
        else:
            prv = [f for f in frames if f < self.frame]
            target = prv[-1] if prv else None
        if target is None:
            self.message = f"no {'later' if forward else 'earlier'} {what}"
            return
        self.playing = False  # stop on the finding so the trainer can look at it
        self.seek(target)
        self.message = f"{what} at frame {target}"

    def next_denial(self) -> None:
        self._jump(self.denial_starts, True, "denial")

    def prev_denial(self) -> None:
        self._jump(self.denial_starts, False, "denial")

    def next_violation(self) -> None:
        self._jump(self.violation_frames, True, "violation")

    def prev_violation(self) -> None:
        self._jump(self.violation_frames, False, "violation")

    def set_speed(self, faster: bool) -> None:
        i = min(range(len(SPEEDS)), key=lambda k: abs(SPEEDS[k] - self.speed))
        self.speed = SPEEDS[min(i + 1, len(SPEEDS) - 1) if faster else max(i - 1, 0)]
        self._anchor = None
        self.message = f"speed x{self.speed:g}"

    def toggle(self) -> None:
        if not self.playing and self.frame >= self.n - 1:
            self.seek(0)  # play again from the start
        self.playing = not self.playing
        self._anchor = None

    # ---- input and clock -----------------------------------------------------
    def key(self, k: int | None) -> None:
        if k is None or k < 0 or k == 0xFF:
            return
        c = chr(k) if k < 0x110000 and k < 256 else ""
        self.message = ""
        if c in ("q",) or k == 27:
            self.quit = True
        elif c == " ":
            self.toggle()
        elif c in (".", "l") or k in _RIGHT:
            self.step(1)
        elif c in (",", "h") or k in _LEFT:
            self.step(-1)
        elif c == "]":
            self.seek_time(self.t_s[self.frame] + 10)
        elif c == "[":
            self.seek_time(self.t_s[self.frame] - 10)
        elif c in ("+", "="):
            self.set_speed(True)
        elif c in ("-", "_"):
            self.set_speed(False)
        elif c == "n":
            self.next_denial()
        elif c == "N":
            self.prev_denial()
        elif c == "v":
            self.next_violation()
        elif c == "V":
            self.prev_violation()
        elif c.isdigit():
            self.seek(round(int(c) / 10 * (self.n - 1)))
        elif k in _HOME:
            self.seek(0)
        elif k in _END:
            self.seek(self.n - 1)

    def advance(self, frames: int) -> None:
        """Headless playing: the next picture is `frames` recorded frames on (a video keeps every frame)."""
        if not self.playing:
            return
        self.frame = min(self.frame + frames, self.n - 1)
        if self.frame >= self.n - 1:
            self.playing = False
            self.message = "end of recording"

    def tick(self, now_s: float) -> None:
        """Advance while playing so that recorded time runs at `speed` × wall time."""
        if not self.playing:
            return
        if self._anchor is None:
            self._anchor = (now_s, float(self.t_s[self.frame]))
            return
        target = self._anchor[1] + (now_s - self._anchor[0]) * self.speed
        i = int(np.searchsorted(self.t_s, target, side="right")) - 1
        self.frame = min(max(i, self.frame), self.n - 1)
        if self.frame >= self.n - 1:
            self.playing = False
            self._anchor = None
            self.message = "end of recording"


# ---------------------------------------------------------------------------------------------- drawing

REASON_COLOURS = {  # BGR; permit blue, "not armed" grey, tracking losses orange, plan refusals vermilion
    "ok": BLUE, "not_armed": (110, 110, 110), "service_stopping": (110, 110, 110),
    "no_face": ORANGE, "other_face": ORANGE, "face_stale": ORANGE, "low_presence": ORANGE, "band_unregistered": ORANGE,
    "band_lost": ORANGE, "band_moved": ORANGE, "patch_lost": ORANGE, "patch_stale": ORANGE, "neck_unreferenced": ORANGE, "tip_lost": (0, 200, 255),
    "tip_low_confidence": (0, 200, 255), "camera_stalled": (140, 60, 160), "calibration_missing": (140, 60, 160),
    "internal_error": (0, 0, 160),
}


def reason_colour(reason: str) -> tuple[int, int, int]:
    return REASON_COLOURS.get(reason, VERMILION)


class _ReplayScene(OverlayScene):
    """The live overlay scene whose pulse list can be wound back when the player seeks backwards."""

    def set_pulses(self, coverage, placed: list[tuple[float, float]]) -> None:
        if coverage is not self.coverage or len(placed) < len(self._pulse_uv):
            self._inset_pulses = -1  # caches are keyed by pulse count; a new map invalidates them
            self._progress_pulses = -1
        self.coverage = coverage
        known = min(len(self._pulse_surface), len(placed))
        self._pulse_surface = self._pulse_surface[:known] + [self.surface_of(u, v) for u, v in placed[known:]]
        self._pulse_uv = list(placed)  # same order as before: the located-on-mesh cache stays a valid prefix


class FrameComposer:
    """One player picture: the frame with the live overlay, the face chart and the timeline strip."""

    STRIP_H = 86
    CHART_H = 360

    def __init__(self, tl: Timeline):
        self.tl = tl
        self.atlas = load_atlas()
        self.chart = load_chart()
        self.replay = CoverageReplay(tl, self.atlas)
        self.scene = _ReplayScene(tl.plan, self.chart, self.replay.coverage, tl.electrode_diameter_mm,
                                  inset_px_per_mm=1.5)
        cam = tl.session.camera()  # checked: a malformed calibration is the user's error, naming file and field
        self._fx = None if cam is None else (float(cam.fx), float(cam.size[0]))
        self._blank: np.ndarray | None = None
        self._strip_base: np.ndarray | None = None
        self._camera: CameraModel | None = None  # the recorded camera at the recorded frame size (scalp, neck)

    def _px_per_mm(self, rec: FrameRecord, width: int) -> float | None:
        tip = rec.tip
        mm = tip.mm if tip is not None else None
        if tip is None or not tip.valid or not mm or not mm[2]:
            return None
        fx = width if self._fx is None else self._fx[0] * width / self._fx[1]
        return fx / max(float(mm[2]), 1.0)

    def overlay_state(self, i: int, width: int) -> OverlayState:
        tl, rec = self.tl, self.tl.session.frames[i]
        gate = rec.gate
        st_ev = tl.state_at(i)
        paused = bool(st_ev["paused"])
        lat = tl.latency_ms[max(0, i - 299):i + 1]
        lat = lat[np.isfinite(lat)]
        tip = rec.tip
        fps = tl.fps
        if i > 0:
            k = max(0, i - 29)
            dt = tl.t_s[i] - tl.t_s[k]
            fps = (i - k) / dt if dt > 0 else fps
        st = OverlayState(
            armed=rec.armed or (paused and bool(st_ev["armed"])), paused=paused,
            permit=gate.permit, reason=gate.reason,
            zone=tl.zone[i], boundary_mm=gate.boundary_mm,
            tip_px=tip.px if tip is not None and tip.valid and tip.px else None,
            fps=fps, latency_ms_p50=float(np.median(lat)) if lat.size else None,
            latency_ms_p99=float(np.percentile(lat, 99)) if lat.size else None,
            link=str(st_ev["link"]), pulses=tl.pulses_until(i), violations=tl.violations_until(i),
        )
        st.layers = {"zones": True, "coverage": True, "inset": False, "mesh": False}
        cov = self.replay.at(i)
        self.scene.set_pulses(cov, self.replay.placed)
        landmarks = self.tl.session.landmarks(i)
        band = records.band_head(rec)
        if band is not None:  # a band session registering: the step asked for, and the landmark's ring, as live
            st.prompt = band_prompt(band)
            st.target_px = touch_target(band, landmarks)
        self.scene.fill(st, landmarks, self._px_per_mm(rec, width), None, self._offmesh(rec))
        return st

    def _offmesh(self, rec: FrameRecord) -> dict:
        """The recorded frame's scalp (the band's head), neck (the torso and the turn) and décolletage (the torso)
        projectors, as live."""
        out: dict = {}
        band, torso = rec.head_band, records.torso_state(rec)
        if (band is None or band.rvec is None or band.tvec_mm is None) and (torso is None or torso.reference is None):
            return out
        if self._camera is None or self._camera.size != tuple(rec.size):
            cam = self.tl.session.camera()
            self._camera = cam.scaled_to(*rec.size) if cam is not None else CameraModel.default(*rec.size)
        surfaces = self.chart.surfaces
        if band is not None and band.state == "ok" and band.rvec is not None and band.tvec_mm is not None:
            head = RigidPose.from_rvec(np.asarray(band.rvec, float), np.asarray(band.tvec_mm, float))
            out["scalp"] = functools.partial(project_scalp_chart, head, surfaces["scalp"], self._camera)
        if torso is not None and torso.reference is not None:
            out["neck"] = functools.partial(project_neck_chart, torso.reference, surfaces["neck"], self._camera)
            out["decolletage"] = functools.partial(project_decolletage_chart, torso.reference, surfaces["decolletage"],
                                                   self._camera)
        return out

    def frame_image(self, i: int) -> np.ndarray:
        img = self.tl.session.image(i)
        if img is None:  # a frame recorded without its JPEG (writer backlog): keep the layout, say so
            if self._blank is None:
                j = next((k for k in range(self.tl.n) if self.tl.session.frames[k].video), None)
                ref = self.tl.session.image(j) if j is not None else None
                shape = ref.shape if ref is not None else (480, 640, 3)
                self._blank = np.full(shape, 30, np.uint8)
            img = self._blank.copy()
            cv2.putText(img, "no image recorded for this frame", (20, img.shape[0] // 2),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.7, WHITE, 2, cv2.LINE_AA)
        return img

    def chart_view(self, i: int, height: int) -> np.ndarray:
        """The face chart with coverage up to frame i and the tip's chart position."""
        z = self.tl.session.frames[i].zone
        uv = z.chart_mm if z is not None and z.chart_mm else None
        inset = self.scene.inset(uv)
        w = int(inset.shape[1] * height / inset.shape[0])
        view = cv2.resize(inset, (w, height), interpolation=cv2.INTER_AREA)
        cv2.putText(view, "face chart: coverage so far", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, WHITE, 1,
                    cv2.LINE_AA)
        return view

    def _strip(self, width: int) -> np.ndarray:
        """Permit/deny band coloured by reason, pulse ticks above, violation marks below (cached)."""
        if self._strip_base is not None and self._strip_base.shape[1] == width:
            return self._strip_base
        tl = self.tl
        h = self.STRIP_H
        img = np.full((h, width, 3), 24, np.uint8)
        n = tl.n
        xs = np.linspace(0, width, n + 1).astype(int)
        for k in range(n):
            colour = BLUE if tl.permit[k] else reason_colour(tl.reason[k])
            cv2.rectangle(img, (xs[k], 30), (max(xs[k + 1] - 1, xs[k]), 54), colour, -1)
        for p in tl.pulses:
            x = int((p.frame + 0.5) * width / n)
            cv2.line(img, (x, 14), (x, 28), (235, 235, 235), 1)
        for v in tl.violations:
            x = int((v.frame + 0.5) * width / n)
            cv2.drawMarker(img, (x, 64), VERMILION, cv2.MARKER_TRIANGLE_UP, 12, 2)
        for e in tl.others:
            if e.kind in ("fault",):
                cv2.drawMarker(img, (int((e.frame + 0.5) * width / n), 64), (0, 0, 255), cv2.MARKER_DIAMOND, 10, 2)
        cv2.putText(img, "pulses", (4, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, WHITE, 1, cv2.LINE_AA)
        self._strip_base = img
        return img

    def compose(self, i: int, state: PlayerState | None = None) -> np.ndarray:
        frame = self.frame_image(i)
        h, w = frame.shape[:2]
        st = self.overlay_state(i, w)
        top = draw_overlay(frame, st)
        chart = self.chart_view(i, h)
        top = np.hstack([top, chart])
        W = top.shape[1]
        strip = self._strip(W).copy()
        x = int((i + 0.5) * W / self.tl.n)
        cv2.line(strip, (x, 2), (x, self.STRIP_H - 14), YELLOW, 2)
        play = "" if state is None else ("playing" if state.playing else "paused") + f" x{state.speed:g}"
        info = (f"frame {i + 1}/{self.tl.n}  t {self.tl.t_s[i]:6.2f}/{self.tl.duration_s:.2f} s  {play}  "
                f"{'PERMIT' if self.tl.permit[i] else 'deny: ' + self.tl.reason[i]}")
        if state is not None and state.message:
            info += f"  | {state.message}"
        cv2.putText(strip, info, (4, self.STRIP_H - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42, WHITE, 1, cv2.LINE_AA)
        return np.vstack([top, strip])


# ---------------------------------------------------------------------------------------------- loop

@dataclass
class PlayOptions:
    window: bool = True
    out: str | None = None  # headless: write the rendered frames to this video
    keys: list[int | None] | None = None  # scripted keys, one per rendered frame, before the window's own
    start: int = 0
    play: bool = True  # start playing (a window) / render every frame (headless)
    speed: float = 1.0
    screenshot: str | None = None  # write the last rendered picture here on exit
    on_frame: Callable[[int, np.ndarray], None] | None = None


def play(tl: Timeline, opts: PlayOptions) -> PlayerState:
    """Run the player until quit (window) or the end of the recording (headless)."""
    from guidance.vision.capture.video_out import AtomicVideoWriter

    composer = FrameComposer(tl)
    state = PlayerState.for_timeline(tl)
    state.seek(opts.start)
    state.speed = opts.speed
    state.playing = opts.play
    keys = list(opts.keys or [])
    writer = None
    last: np.ndarray | None = None
    last_sig: tuple | None = None
    written = -1
    try:
        if opts.window:
            cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)
        while not state.quit:
            sig = (state.frame, state.playing, state.speed, state.message)
            if sig != last_sig:
                last, last_sig = composer.compose(state.frame, state), sig
                if opts.on_frame:
                    opts.on_frame(state.frame, last)
            assert last is not None, "composed on the first pass (last_sig starts as None)"
            if opts.out and written != state.frame:
                if writer is None:
                    writer = AtomicVideoWriter(opts.out, tl.fps, (last.shape[1], last.shape[0]))
                writer.write(last)
                written = state.frame
            k: int | None = None
            if opts.window:
                cv2.imshow(WINDOW, last)
                wk = cv2.waitKeyEx(15)
                k = wk if wk >= 0 else None
            if k is None and keys:
                k = keys.pop(0)
            before = (state.frame, state.playing)
            state.key(k)
            if opts.window:
                state.tick(time.monotonic())
            else:
                state.advance(max(1, int(state.speed)))  # every recorded frame once (x2: every other)
                idle = (state.frame, state.playing) == before and not state.playing
                if idle and not keys:
                    break  # headless: nothing is playing and no key is left
        if writer is not None:
            writer.close()
            writer = None
    finally:
        if writer is not None:
            writer.close(keep=False)
        if opts.window:
            cv2.destroyAllWindows()
    if opts.screenshot and last is not None:
        write_png(opts.screenshot, last)
    return state


def write_png(path: str | Path, img: np.ndarray) -> None:
    """PNG written to a temporary name and renamed: never half a picture."""
    import os
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError("folder does not exist", path=path.parent)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise UserError("could not encode PNG", path=path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def snapshot(tl: Timeline, frame: int, path: str | Path) -> np.ndarray:
    """One composed player picture (docs, tests) without any window."""
    if not (0 <= frame < tl.n):
        raise UserError(f"frame {frame} is outside the recording (0..{tl.n - 1})", field="--snapshot")
    img = FrameComposer(tl).compose(frame)
    write_png(path, img)
    return img
