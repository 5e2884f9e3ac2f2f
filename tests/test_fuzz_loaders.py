"""Fuzz every user-facing loader with mutated files (issue 14): each case loads, or ends in a UserError.

In-process, a few hundred seeded cases per loader (tests/fuzz_inputs.py: truncations, byte flips, garbage,
encodings, empty files, folders in place of files, and every field given NaN, infinities, huge numbers,
wrong types, deep nesting). Anything but a clean load or a `UserError` (a traceback for the user) fails the
test, which lists the cases. A sample of cases per loader also goes through the real CLI in a subprocess:
exit code 2, exactly one line on stderr, no traceback, nothing written.

Cases per loader are printed (`pytest -s`) and asserted to stay above a floor.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from fuzz_inputs import DIRECTORY, all_cases, json_bytes, text_cases, yaml_bytes
from guidance.errors import UserError, UserNotice
from guidance.resources import verified_path

ROOT = Path(__file__).resolve().parents[1]
GUIDANCE = [sys.executable, "-m", "guidance.cli"]
HANDPIECE = verified_path("handpiece_default", kind="profiles")
HEAD_BAND = verified_path("head_band_default", kind="profiles")
PLAN = verified_path("full_face", kind="plans")
PATH = verified_path("demo_full_face", kind="paths")
CAMERA = {"image_size": [640, 360], "camera_matrix": [[640.0, 0.0, 320.0], [0.0, 640.0, 180.0], [0.0, 0.0, 1.0]],
          "dist_coeffs": [0.01, -0.02, 0.0, 0.0, 0.0], "rms_px": 0.4, "calibrated_at": "2026-01-01T00:00:00+00:00"}
CASES: dict[str, int] = {}


def write_case(path: Path, content: Any) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if content is DIRECTORY:
        path.mkdir()
        (path / "inside.yaml").write_text("a: 1\n")
    else:
        path.write_bytes(content)


def check_cases(name: str, cases: list[tuple[str, Any]], target: Path, load: Callable[[], Any],
                after: Callable[[], None] | None = None, refused: list | None = None) -> list[str]:
    """Write each case at `target`, call `load()`: it must return or raise UserError (one line).

    The cases refused with a UserError are appended to `refused` (for the CLI sample)."""
    failures = []
    for label, content in cases:
        write_case(target, content)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                load()
            except UserError as exc:
                if "\n" in str(exc) or len(str(exc)) > 600:
                    failures.append(f"{label}: UserError not one short line: {str(exc)[:200]!r}")
                elif refused is not None:
                    refused.append((label, content))
            except BaseException as exc:  # noqa: BLE001 - anything else is what this test is for
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:160]} ({Path(tb.filename).name}:{tb.lineno})")
        # a warning would be printed by the CLI before its one line (UserNotice is that one line's kind)
        noise = [w for w in caught if not issubclass(w.category, UserNotice)]
        if noise:
            failures.append(f"{label}: warning {noise[0].category.__name__}: {str(noise[0].message)[:120]} "
                            f"({Path(noise[0].filename).name}:{noise[0].lineno})")
        if after is not None:
            after()
    CASES[name] = CASES.get(name, 0) + len(cases)
    print(f"fuzz {name}: {len(cases)} cases, {len(failures)} failures")
    return failures


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(GUIDANCE + list(args), capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line(r: subprocess.CompletedProcess, what: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (what, r.returncode, r.stderr[-2000:])


def sample_cases(cases: list, k: int, seed: int) -> list:
    """k of the cases, always including a folder-for-a-file one if there is one (seeded)."""
    rng = random.Random(seed)
    picked = rng.sample(cases, min(k, len(cases)))
    folder = [c for c in cases if c[1] is DIRECTORY]
    return picked + (folder[:1] if folder and folder[0] not in picked else [])


# ------------------------------------------------------------------------------------------------- YAML loaders

def plan_doc() -> dict:
    doc = yaml.safe_load(PLAN.read_text())
    doc["handpiece_profile"] = str(HANDPIECE)
    return doc


def path_doc() -> dict:
    doc = yaml.safe_load(PATH.read_text())
    doc["plan"] = str(PLAN)
    return doc


def yaml_loaders() -> dict[str, tuple[dict, Callable[[Path], Any], int]]:
    from guidance.sim.path import load_path
    from guidance.vision.capture.camera import load_camera
    from guidance.vision.handpiece.profiles import load_handpiece_profile, load_head_band
    from guidance.zones.atlas import load_atlas
    from guidance.zones.plan import load_plan

    atlas = load_atlas()
    return {
        # name: (valid document, loader, seed)
        "plan": (plan_doc(), lambda p: load_plan(p, atlas), 1401),
        "path": (path_doc(), lambda p: load_path(p, atlas), 1402),
        "handpiece profile": (yaml.safe_load(HANDPIECE.read_text()), load_handpiece_profile, 1403),
        "head-band profile": (yaml.safe_load(HEAD_BAND.read_text()), load_head_band, 1404),
        "camera calibration": (CAMERA, load_camera, 1405),
    }


def cli_args(name: str, file: Path, out: Path, video: Path) -> list[str]:
    """The command a user would run with this file; `out` is what it would write (must not appear)."""
    run = ["run", "--source", str(video), "--plan", str(PLAN), "--headless", "--no-realtime", "--max-frames", "2",
           "--record", str(out)]
    return {
        "plan": ["run", "--source", str(video), "--plan", str(file), "--headless", "--record", str(out)],
        "path": ["demo", "-o", str(out), "--path", str(file)],
        "handpiece profile": run + ["--handpiece", str(file)],
        "head-band profile": run + ["--handpiece", str(file)],  # no command reads a head band alone yet
        "camera calibration": run + ["--camera-calibration", str(file)],
    }[name]


@pytest.mark.parametrize("name", ["plan", "path", "handpiece profile", "head-band profile", "camera calibration"])
def test_yaml_loader_fuzz(name, tmp_path, sample):
    doc, load, seed = yaml_loaders()[name]
    target = tmp_path / "file.yaml"
    target.write_bytes(yaml_bytes(doc))
    load(target)  # the unmutated document loads
    cases = all_cases(yaml_bytes(doc), doc, yaml_bytes, seed, per_field=3, max_fields=55)
    refused: list = []
    failures = check_cases(name, cases, target, lambda: load(target), refused=refused)
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures[:40])
    assert len(cases) >= 200
    # a sample through the real command line: exit 2, one line, nothing written
    video = sample("single_face.mp4")
    for k, (label, content) in enumerate(sample_cases(refused, 4, seed)):
        f = tmp_path / f"cli{k}.yaml"
        write_case(f, content)
        out = tmp_path / f"out{k}"
        r = cli(*cli_args(name, f, out, video))
        assert_one_line(r, f"{name}: {label}")
        assert not out.exists(), f"{name}: {label}: {out} written"


def test_camera_calibration_fuzz_more_values_per_field(tmp_path):
    """The calibration is a small document: every field gets more of the bad values."""
    from guidance.vision.capture.camera import load_camera
    from fuzz_inputs import field_cases

    target = tmp_path / "cam.yaml"
    cases = [(n, yaml_bytes(d)) for n, d in field_cases(CAMERA, random.Random(1406), per_field=8)]
    failures = check_cases("camera calibration", cases, target, lambda: load_camera(target))
    assert not failures, "\n".join(failures[:40])


# ------------------------------------------------------------------------------------------------- CURVE keys

def key_variants(text: str, rng: random.Random) -> list[tuple[str, bytes]]:
    """Structural mutations of a ZeroMQ certificate: the key strings, the lines, the sections."""
    out = []
    lines = text.splitlines()
    for i in range(len(lines)):
        out.append((f"line {i} removed", "\n".join(lines[:i] + lines[i + 1:]).encode()))
        out.append((f"line {i} doubled", "\n".join(lines[:i + 1] + lines[i:]).encode()))
    for field in ("public-key", "secret-key"):
        if f'{field} = "' not in text:
            continue
        key = text.split(f'{field} = "')[1][:40]
        for label, new in [("39 chars", key[:39]), ("41 chars", key + "0"), ("empty", ""), ("non-Z85", "~" * 40),
                           ("spaces", " " * 40), ("NaN", "NaN"), ("one changed", key[:5] + ("a" if key[5] != "a" else "b") + key[6:]),
                           ("unicode", "é" * 40), ("very long", key * 500)]:
            out.append((f"{field} {label}", text.replace(key, new).encode("utf-8")))
        out.append((f"{field} unquoted", text.replace(f'"{key}"', key).encode()))
    return out


def _keys(tmp_path: Path) -> Path:
    from guidance.device_bridge.keys import generate

    d = tmp_path / "keys"
    generate(d, ["controller", "second"])
    return d


def test_curve_key_fuzz(tmp_path, sample):
    from guidance.device_bridge.keys import load_pair, load_public, load_service_keys
    from guidance.sim.demo import free_port_pair

    d = _keys(tmp_path)
    originals = {p: p.read_bytes() for p in [d / "service.key_secret", d / "service.key", d / "controller.key_secret",
                                             d / "authorized_controllers" / "controller.key"]}

    def restore() -> None:
        for p, b in originals.items():
            write_case(p, b)
            p.chmod(0o600 if p.name.endswith("_secret") else 0o644)

    def load_all() -> None:
        load_service_keys(d)
        load_pair(d / "controller.key_secret")
        load_public(d / "service.key")

    total = []
    video = sample("single_face.mp4")
    for k, (target, content) in enumerate(originals.items()):
        rng = random.Random(1410 + k)
        cases = text_cases(content, rng, cuts=30, flips=16) + key_variants(content.decode(), rng)

        def load(target=target) -> None:
            if target.exists() and target.name.endswith("_secret"):
                target.chmod(0o600)  # so the content is judged, not only the mode
            load_all()

        refused: list = []
        total += check_cases(f"CURVE keys ({target.name})", cases, target, load, after=restore, refused=refused)
        # a sample through the command that reads the file: the service (`run --publish`) or the controller
        for j, (label, bad) in enumerate(sample_cases(refused, 2, 1415 + k)):
            write_case(target, bad)
            if target.exists() and target.name.endswith("_secret"):
                target.chmod(0o600)
            out = tmp_path / f"out{k}-{j}"
            port = free_port_pair()
            if target.name in ("controller.key_secret", "service.key"):  # what a controller reads
                r = cli("controller-sim", "--connect", f"tcp://127.0.0.1:{port}", "--keys", str(d), "--duration-s", "0.1")
            else:
                r = cli("run", "--source", str(video), "--plan", str(PLAN), "--headless", "--record", str(out),
                        "--publish", f"tcp://127.0.0.1:{port}", "--keys", str(d))
            restore()
            assert_one_line(r, f"{target.name}: {label}")
            assert not out.exists()
    # the folder around the files
    allow = d / "authorized_controllers"
    layout = []

    def case(label: str, make: Callable[[], None]) -> None:
        layout.append(label)
        make()
        failures = check_cases("CURVE keys (folder layout)", [(label, originals[d / "service.key"])], d / "service.key",
                               load_all)
        total.extend(failures)
        shutil.rmtree(d)
        _keys(tmp_path)

    case("allow-list folder missing", lambda: shutil.rmtree(allow))
    case("allow-list is a file", lambda: (shutil.rmtree(allow), allow.write_text("x")))
    case("allow-list empty", lambda: [p.unlink() for p in allow.iterdir()])
    case("allow-list entry with a bad name", lambda: shutil.copy(allow / "controller.key", allow / "bad name.key"))
    case("allow-list entry is a folder", lambda: ((allow / "controller.key").unlink(), (allow / "controller.key").mkdir()))
    case("two ids, one key", lambda: shutil.copy(allow / "controller.key", allow / "other.key"))
    case("secret readable by others", lambda: (d / "service.key_secret").chmod(0o644))
    case("secret writable by others", lambda: (d / "service.key_secret").chmod(0o622))
    case("secret is a folder", lambda: ((d / "service.key_secret").unlink(), (d / "service.key_secret").mkdir()))
    case("secret missing", lambda: (d / "service.key_secret").unlink())
    case("dangling symlink", lambda: ((d / "service.key_secret").unlink(),
                                      (d / "service.key_secret").symlink_to(tmp_path / "nowhere")))
    case("secret unreadable (mode 000)", lambda: (d / "controller.key_secret").chmod(0o000))
    assert not total, f"{len(total)} failures:\n" + "\n".join(total[:40])
    assert CASES["CURVE keys (service.key_secret)"] >= 100


# ------------------------------------------------------------------------------------------------- recordings

@pytest.fixture(scope="module")
def recording(tmp_path_factory, sample) -> Path:
    """A short real recording (`guidance run --record`, calibrated camera, armed), with pulses and a violation
    added after tracked frames the way a controller's reports are recorded, so every reader path has data."""
    base = tmp_path_factory.mktemp("fuzz_recording")
    cam = base / "cam.yaml"
    cam.write_text(yaml.safe_dump(CAMERA))
    rec = base / "rec"
    r = cli("run", "--source", str(sample("single_face.mp4")), "--plan", str(PLAN), "--headless", "--no-realtime",
            "--arm", "--max-frames", "8", "--record", str(rec), "--camera-calibration", str(cam))
    assert r.returncode == 0, r.stderr
    frames = [json.loads(x) for x in (rec / "frames.jsonl").read_text().splitlines()]
    events = [json.loads(x) for x in (rec / "events.jsonl").read_text().splitlines()]
    end = [e for e in events if e["kind"] in ("coverage", "session_end")]
    body = [e for e in events if e["kind"] not in ("coverage", "session_end")]
    for k, f in enumerate(frames[:6]):
        kind = "violation" if k == 4 else "pulse"
        body.append({"kind": kind, "t_ns": f["t_published_ns"] + 1000, "after_frame": k, "controller": "fuzz",
                     "controller_boot": "0" * 16, "pulse_seq": k + 1, "outcome": "coverage" if kind == "pulse" else "no_permit",
                     "reason": "ok" if kind == "pulse" else "no_permit", "time_source": "permit",
                     "permit_seq": f["gate"]["seq"], "zone": "cheek_left", "tip_u": 35.0 + k, "tip_v": 40.0,
                     "duration_us": 2000, "intensity_pct": 60.0, "contact": True})
    (rec / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in body + end))
    return rec


def consume_recording(d: Path, out: Path | None, report: Path | None) -> None:
    """What report, replay and reprocess do with a recording; reprocess must leave `out` whole or absent."""
    from guidance.review.report import write_report
    from guidance.review.reprocess import reprocess
    from guidance.review.timeline import CoverageReplay, build_timeline, recorded_coverage, session_notes
    from guidance.session.reader import open_session
    from guidance.zones.atlas import load_atlas

    atlas = ATLAS.setdefault("atlas", load_atlas())
    s = open_session(d, quiet=True)
    session_notes(s)
    tl = build_timeline(s, atlas)
    CoverageReplay(tl, atlas).final()
    recorded_coverage(tl, atlas)
    for i in range(tl.n):
        s.image(i)
        s.landmarks(i)
    if report is not None:
        write_report([d], report, progress=False)
    if out is not None:
        try:
            reprocess(d, out)
        finally:
            if out.exists():
                assert (out / "comparison.json").is_file(), "reprocess left a half-written recording"
                shutil.rmtree(out)
            leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.part")]
            assert not leftovers, f"reprocess left {leftovers}"


ATLAS: dict = {}
RECORDING_FILES = ["info.json", "frames.jsonl", "events.jsonl", "landmarks.f32", "video.mjpeg"]


@pytest.mark.parametrize("file", RECORDING_FILES)
def test_recording_fuzz(file, recording, tmp_path):
    from fuzz_inputs import field_cases

    d = tmp_path / "rec"
    shutil.copytree(recording, d)
    consume_recording(d, tmp_path / "out", tmp_path / "report.html")  # the unmutated recording reads
    original = (d / file).read_bytes()
    seed = 1420 + RECORDING_FILES.index(file)
    rng = random.Random(seed)
    text = file.endswith(("json", "jsonl"))
    cases = text_cases(original, rng, cuts=24 if text else 8, flips=16 if text else 6)
    if file == "info.json":
        doc = json.loads(original)
        cases += [(n, json_bytes(x)) for n, x in field_cases(doc, rng, per_field=2, max_fields=80)]
    elif file in ("frames.jsonl", "events.jsonl"):
        lines = original.decode().splitlines()
        k = 3 if file == "frames.jsonl" else next(i for i, x in enumerate(lines) if '"pulse"' in x)
        for name, x in field_cases(json.loads(lines[k]), rng, per_field=2, max_fields=60):
            cases.append((f"line {k + 1}: {name}", "\n".join(lines[:k] + [json.dumps(x)] + lines[k + 1:]).encode() + b"\n"))
        for i in range(len(lines)):
            cases.append((f"line {i + 1} garbled", "\n".join(lines[:i] + [lines[i][: len(lines[i]) // 2]] + lines[i + 1:]).encode() + b"\n"))
    else:
        cases.append(("missing", None))
    counter = [0]

    def load() -> None:
        counter[0] += 1
        # every case is opened, put on a timeline, its coverage rebuilt, its frames decoded (report, replay);
        # every 4th re-processed, every 15th made into a whole report
        consume_recording(d, tmp_path / "out" if counter[0] % 4 == 0 else None,
                          tmp_path / "report.html" if counter[0] % 15 == 0 else None)

    def restore() -> None:
        write_case(d / file, original)

    cases = [(n, c) for n, c in cases if c is not None] + [(n, b"") for n, c in cases if c is None]
    refused: list = []
    failures = check_cases(f"recording {file}", cases, d / file, load, after=restore, refused=refused)
    # a sample (refused ones and others) through report, replay and reprocess on the command line
    rng = random.Random(seed + 50)
    for label, content in sample_cases(refused, 1, seed)[:1] + rng.sample(cases, 1):
        write_case(d / file, content)
        for cmd, out in (("report", tmp_path / "cli.html"), ("replay", tmp_path / "cli.mp4"),
                         ("reprocess", tmp_path / "cli-out")):
            args = {"report": ["report", str(d), "-o", str(out), "--quiet"],
                    "replay": ["replay", str(d), "--headless", "--out", str(out)],
                    "reprocess": ["reprocess", str(d), "-o", str(out)]}[cmd]
            r = cli(*args)
            lines = r.stderr.strip().splitlines()
            what = f"{cmd} {file} {label}: rc {r.returncode}: {r.stderr[-1500:]}"
            assert "Traceback" not in r.stderr and r.returncode in (0, 2), what
            if r.returncode == 2:
                assert len(lines) == 1 and not out.exists(), what
            else:  # read what it could: at most a "damaged" and a "cut off" line, and the output is whole
                assert len(lines) <= 2 and all(": warning: " in x for x in lines), what
                assert out.exists(), what
                shutil.rmtree(out) if out.is_dir() else out.unlink()
        restore()
    # and the file missing altogether
    (d / file).unlink()
    failures += check_cases(f"recording {file}", [("missing (no file)", b"")], tmp_path / "unused", load)
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures[:40])
