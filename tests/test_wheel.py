"""The built wheel works on its own: installed into a fresh virtual environment, run from an empty folder.

Everything the runtime reads travels inside the package (guidance/data, checked against its manifest), so
a clinic's machine needs no checkout. This builds the wheel from this tree, installs it (its dependencies
come from the package index, as for a user), and from an empty folder runs the demo, a pixel lookup on a
sample image and a plan check on a bundled example plan.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from guidance import samples

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(dist.glob("guidance-*.whl"))
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    empty = base / "empty"
    empty.mkdir()
    # the sample media cache is shared (fetching is tested in test_samples.py); nothing else leaks in
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "GUIDANCE_DATA"))}
    env["GUIDANCE_CACHE"] = str(samples.cache_dir())
    return env_dir / "bin" / "guidance", empty, env, wheel


def test_the_wheel_carries_every_bundled_file(installed):
    import zipfile
    _, _, _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    manifest = json.loads(zipfile.ZipFile(wheel).read("guidance/data/MANIFEST.json"))
    for kind in ("models", "data", "zones", "profiles", "plans", "paths"):
        for entry in manifest[kind].values():
            assert f"guidance/data/{entry['file']}" in names, entry["file"]
    assert not any(n.startswith(("tests/", "models/", "experiments/")) for n in names)
    # the report's templates, and the console's templates, static files and migrations
    pkg = ROOT / "guidance"
    for folder in ("review/templates", "console/templates", "console/static", "console/migrations"):
        for f in (pkg / folder).rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                assert f"guidance/{f.relative_to(pkg).as_posix()}" in names, f


def test_plan_check_on_a_bundled_plan_from_an_empty_folder(installed):
    exe, empty, env, _ = installed
    r = subprocess.run([str(exe), "plan", "check", "full_face"], cwd=empty, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "full_face" in r.stdout or "example-full-face" in r.stdout
    assert not any(empty.iterdir())


def test_locate_on_a_sample_image_from_an_empty_folder(installed, sample):
    exe, empty, env, _ = installed
    image = sample("single_face.jpg")
    r = subprocess.run([str(exe), "locate", str(image), "300", "210", "--json"], cwd=empty, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["face_found"] is True and out["zone"]


def test_the_demo_runs_safe_from_an_empty_folder(installed, tmp_path):
    exe, empty, env, _ = installed
    out = tmp_path / "demo"
    r = subprocess.run([str(exe), "demo", "-o", str(out), "--max-frames", "120"], cwd=empty, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "safety PASS" in r.stdout
    acc = json.loads((out / "acceptance.json").read_text())
    assert acc["safe"] is True and acc["pulses_fired"] > 0
