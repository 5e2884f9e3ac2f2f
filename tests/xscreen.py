"""A real X server for window tests: Xvfb on a free display, and reading the screen back with xwd."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest


def read_xwd(path: Path) -> np.ndarray:
    """A screen dump from `xwd -root` as a BGR array (ZPixmap, TrueColor)."""
    buf = path.read_bytes()
    h = struct.unpack(">25I", buf[:100])
    header, w, hgt, byte_order, bpp, bpl, ncolors = h[0], h[4], h[5], h[7], h[11], h[12], h[19]
    data = np.frombuffer(buf, np.uint8, offset=header + ncolors * 12, count=bpl * hgt).reshape(hgt, bpl)
    px = data[:, :w * (bpp // 8)].reshape(hgt, w, bpp // 8)
    return np.ascontiguousarray(px[:, :, :3] if byte_order == 0 else px[:, :, -3:][:, :, ::-1])


@pytest.fixture
def xvfb():
    """DISPLAY string of a fresh Xvfb server (skips only when Xvfb/xwd are not installed)."""
    if not shutil.which("Xvfb") or not shutil.which("xwd"):
        pytest.skip("Xvfb and xwd are needed (Debian: xvfb, x11-apps; .ci/run installs them)")
    for n in range(91, 120):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1600x1200x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t_end = time.monotonic() + 20
        while not Path(f"/tmp/.X11-unix/X{n}").exists() and time.monotonic() < t_end:
            time.sleep(0.05)
        # the socket can exist before the server answers: wait until a screen grab works
        while time.monotonic() < t_end:
            if subprocess.run(["xwd", "-root", "-silent", "-display", f":{n}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        yield f":{n}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


