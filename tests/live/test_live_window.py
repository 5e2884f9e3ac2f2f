"""`guidance run` in a real OpenCV window on an X server (Xvfb): it shows the overlay, the
practitioner's keys arm and quit it, and the recording says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from guidance.resources import verified_path
from guidance.session.reader import open_session
from xscreen import read_xwd

ROOT = Path(__file__).resolve().parents[2]


def _grab(display: str, path: Path) -> np.ndarray | None:
    with open(path, "wb") as fh:
        if subprocess.run(["xwd", "-root", "-silent", "-display", display], stdout=fh).returncode != 0:
            return None
    return read_xwd(path)


def _key(display: str, key: str) -> None:
    env = {**os.environ, "DISPLAY": display}
    win = subprocess.run(["xdotool", "search", "--name", "^guidance$"], env=env, capture_output=True, text=True).stdout.split()
    assert win, "the guidance window is not on the screen"
    # no window manager on Xvfb: give the window the input focus, then type as a keyboard would
    subprocess.run(["xdotool", "windowfocus", "--sync", win[0]], env=env, capture_output=True)
    subprocess.run(["xdotool", "key", key], env=env, check=True, capture_output=True)


def _deny_banner_pixels(screen: np.ndarray) -> int:
    """Pixels of the DENY banner's vermilion (blended 3:1 over the frame): red high, blue low."""
    b, g, r = (screen[..., k].astype(int) for k in range(3))
    return int(((r > 150) & (b < 80) & (g > 50) & (g < 150)).sum())


def test_window_shows_the_overlay_and_keys_arm_and_quit(xvfb, sample, tmp_path):
    if not shutil.which("xdotool"):
        pytest.skip("xdotool is needed to press keys (Debian: xdotool; .ci/run installs it)")
    env = {**os.environ, "DISPLAY": xvfb}
    rec = tmp_path / "session"
    proc = subprocess.Popen([sys.executable, "-m", "guidance.cli", "run", "--source", str(sample("WolfgangLanger_Pexels.mp4")),
                             "--plan", str(verified_path("full_face", kind="plans")), "--record", str(rec)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        screens, lit = [], []  # lit: share of bright screen pixels per grab (None: the grab failed), to diagnose
        t0 = time.monotonic()
        t_end = t0 + 60
        while time.monotonic() < t_end and len(screens) < 3:  # the window appears, disarmed
            time.sleep(0.5)
            if proc.poll() is not None:
                pytest.fail(f"guidance run exited early ({proc.returncode}) after {time.monotonic() - t0:.1f} s; "
                            f"grabs {lit}; stdout: {proc.stdout.read()[-800:]!r}; stderr: {proc.stderr.read()[-2000:]}")
            s = _grab(xvfb, tmp_path / f"s{len(screens)}.xwd")
            lit.append(None if s is None else round(float((s.max(axis=2) > 20).mean()), 3))
            if s is not None and (s.max(axis=2) > 20).mean() > 0.05:
                screens.append(s)
        assert screens, "no window appeared"
        disarmed = _deny_banner_pixels(screens[-1])
        cv2.imwrite(str(tmp_path / "disarmed.png"), screens[-1])
        _key(xvfb, "a")  # arm
        time.sleep(1.5)
        armed_screen = _grab(xvfb, tmp_path / "armed.xwd")
        armed = _deny_banner_pixels(armed_screen)
        cv2.imwrite(str(tmp_path / "armed.png"), armed_screen)
        _key(xvfb, "q")  # quit long before the 15 s video ends
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    # disarmed: grey banner; armed (no handpiece in this video, so DENY): a vermilion banner appears
    assert armed > 2000 and armed > 10 * (disarmed + 1), (disarmed, armed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = open_session(rec)
    kinds = [(e.kind, getattr(e, "cause", None)) for e in s.events]
    assert ("arm", "key") in kinds and ("disarm", "quit") in kinds
    assert 10 < len(s.frames) < 400  # quit early (the video has 472 frames)
    armed_frames = [r for r in s.frames if r.armed]
    assert armed_frames and all(not r.gate.permit for r in s.frames)
