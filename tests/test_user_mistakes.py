"""Issue 14, "bad input, tried as a new user would": each mistake, through the real command line.

A user's mistake ends with exit code 2 and ONE line on stderr naming the file and field, nothing written;
every test here runs `guidance` in a subprocess and counts the lines. (The loader fuzz is in
tests/test_fuzz_loaders.py.)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from guidance.resources import verified_path

ROOT = Path(__file__).resolve().parents[1]
GUIDANCE = [sys.executable, "-m", "guidance.cli"]
PLAN = verified_path("full_face", kind="plans")
HANDPIECE = verified_path("handpiece_default", kind="profiles")
PATH = verified_path("demo_full_face", kind="paths")


def cli(*args, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(GUIDANCE + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def video(sample) -> Path:
    return sample("single_face.mp4")


@pytest.fixture(scope="module")
def recording(tmp_path_factory, video) -> Path:
    d = tmp_path_factory.mktemp("mistakes") / "rec"
    r = cli("run", "--source", video, "--plan", PLAN, "--headless", "--no-realtime", "--arm", "--max-frames", "8",
            "--record", d)
    assert r.returncode == 0, r.stderr
    return d


def nan_plan(tmp_path: Path) -> Path:
    doc = yaml.safe_load(PLAN.read_text())
    doc["handpiece_profile"] = str(HANDPIECE)
    text = yaml.safe_dump(doc, sort_keys=False).replace("margin_mm: 2.0", "margin_mm: .nan")
    assert ".nan" in text
    p = tmp_path / "nan_plan.yaml"
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------------------------- NaN plan, margin

def test_a_nan_margin_is_refused_by_plan_check_run_and_reprocess_with_nothing_written(tmp_path, video, recording):
    plan = nan_plan(tmp_path)
    one_line_error(cli("plan", "check", plan), "nan_plan.yaml", "margin_mm")
    r = cli("run", "--source", video, "--plan", plan, "--headless", "--record", tmp_path / "rec",
            "--out", tmp_path / "o.mkv", "--arm")
    one_line_error(r, "nan_plan.yaml", "margin_mm")
    assert not (tmp_path / "rec").exists() and not (tmp_path / "o.mkv").exists()
    one_line_error(cli("reprocess", recording, "--plan", plan, "-o", tmp_path / "x"), "margin_mm")
    for margin in ("inf", "nan", "-inf", "-1", "1e9"):
        one_line_error(cli("reprocess", recording, f"--margin={margin}", "-o", tmp_path / "x"), "--margin")
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x.")]


def test_reprocess_output_mistakes_are_refused_before_anything_is_written(tmp_path, recording):
    one_line_error(cli("reprocess", recording, "-o", tmp_path / "missing" / "x"), "missing", "does not exist")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    one_line_error(cli("reprocess", recording, "-o", tmp_path / "full"), "not empty")
    (tmp_path / "afile").write_text("x")
    one_line_error(cli("reprocess", recording, "-o", tmp_path / "afile"), "not a folder")
    r = cli("reprocess", recording, "-o", tmp_path / "ok")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert (tmp_path / "ok" / "comparison.json").is_file()


# ---------------------------------------------------------------------------------------------- profiles, cameras

def test_a_nan_tip_offset_is_refused_at_start(tmp_path, video):
    doc = yaml.safe_load(HANDPIECE.read_text())
    doc["tip_offset_mm"] = [0.0, float("nan"), 80.0]
    hp = tmp_path / "hp.yaml"
    hp.write_text(yaml.safe_dump(doc))
    r = cli("run", "--source", video, "--plan", PLAN, "--handpiece", hp, "--headless", "--record", tmp_path / "r")
    one_line_error(r, "hp.yaml", "tip_offset_mm")
    assert not (tmp_path / "r").exists()


GOOD_K = [[640.0, 0.0, 320.0], [0.0, 640.0, 180.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("label, change, field", [
    ("focal 0", {"camera_matrix": [[0.0, 0.0, 320.0], [0.0, 0.0, 180.0], [0.0, 0.0, 1.0]]}, "camera_matrix.0.0"),
    ("focal NaN", {"camera_matrix": [[float("nan"), 0.0, 320.0], [0.0, 640.0, 180.0], [0.0, 0.0, 1.0]]}, "camera_matrix.0.0"),
    ("focal negative", {"camera_matrix": [[-640.0, 0.0, 320.0], [0.0, -640.0, 180.0], [0.0, 0.0, 1.0]]}, "camera_matrix.0.0"),
    ("3 distortion coefficients", {"dist_coeffs": [0.0, 0.0, 0.0]}, "dist_coeffs"),
    ("rms abc", {"rms_px": "abc"}, "rms_px"),
    ("principal point outside", {"camera_matrix": [[640.0, 0.0, 900.0], [0.0, 640.0, 180.0], [0.0, 0.0, 1.0]]},
     "camera_matrix.0.2"),
    ("another aspect ratio", {"image_size": [640, 480], "camera_matrix": [[640.0, 0.0, 320.0], [0.0, 640.0, 240.0],
                                                                          [0.0, 0.0, 1.0]]}, "image_size"),
])
def test_a_bad_camera_calibration_is_refused_at_start_not_denied_frame_by_frame(tmp_path, video, label, change, field):
    doc = {"image_size": [640, 360], "camera_matrix": GOOD_K, "dist_coeffs": [0.0] * 5, "rms_px": 0.3, **change}
    cam = tmp_path / "cam.yaml"
    cam.write_text(yaml.safe_dump(doc))
    r = cli("run", "--source", video, "--plan", PLAN, "--camera-calibration", cam, "--headless", "--no-realtime",
            "--max-frames", "2", "--record", tmp_path / "r")
    one_line_error(r, "cam.yaml", field)
    assert not (tmp_path / "r").exists()


def test_a_good_calibration_runs(tmp_path, video):
    cam = tmp_path / "cam.yaml"
    cam.write_text(yaml.safe_dump({"image_size": [1280, 720], "camera_matrix": [[1280.0, 0, 640.0], [0, 1280.0, 360.0],
                                                                                [0, 0, 1.0]], "dist_coeffs": [0.0] * 5}))
    r = cli("run", "--source", video, "--plan", PLAN, "--camera-calibration", cam, "--headless", "--no-realtime",
            "--max-frames", "2")
    assert r.returncode == 0 and "internal_error" not in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------- landmarks, demo

def test_landmarks_on_an_image_and_an_image_folder(tmp_path, sample):
    img = sample("obama.jpg")
    r = cli("landmarks", img, "-o", tmp_path / "one.npy")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "one.npy").shape == (1, 468, 3)
    (tmp_path / "imgs").mkdir()
    shutil.copy(img, tmp_path / "imgs" / "a.jpg")
    shutil.copy(sample("biden.jpg"), tmp_path / "imgs" / "b.jpg")
    r = cli("landmarks", tmp_path / "imgs", "-o", tmp_path / "two.npy")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "two.npy").shape == (2, 468, 3)
    one_line_error(cli("landmarks", tmp_path / "imgs", "-o", tmp_path / "nope" / "x.npy"), "nope", "--output")


def test_demo_with_a_bad_path_says_what_is_wrong_and_writes_nothing(tmp_path):
    doc = yaml.safe_load(PATH.read_text())
    doc["plan"] = str(PLAN)
    doc["segments"][6]["zone"] = "chinn"
    p = tmp_path / "bad_path.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    line = one_line_error(cli("demo", "-o", tmp_path / "demo", "--path", p), "bad_path.yaml", "segments.6.zone", "chinn")
    assert "CalledProcessError" not in line
    assert not (tmp_path / "demo").exists()


def test_demo_surfaces_the_failing_step_s_own_line(tmp_path):
    """A path that loads but cannot be simulated fails in the `simulate` child: its last line is the error."""
    doc = yaml.safe_load(PATH.read_text())
    doc["plan"] = str(PLAN)
    doc["segments"][0]["inset_mm"] = 29  # the forehead has no room for a sweep that far inside its edge
    p = tmp_path / "no_room.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = cli("demo", "-o", tmp_path / "demo", "--path", p)
    line = one_line_error(r, "guidance simulate failed", "no_room.yaml", "segments.0.inset_mm")
    assert "error: guidance simulate failed" in line and line.count("error:") == 1
    assert not (tmp_path / "demo").exists()


# ---------------------------------------------------------------------------------------------- --no-realtime clock

def test_a_file_processed_as_fast_as_possible_is_stamped_when_read(tmp_path, video):
    """Each frame's capture time is when it was read: never after its decision, never before the previous
    frame was published (the old clock, the file's timestamps from the open, broke one or the other and
    printed a negative latency)."""
    r = cli("run", "--source", video, "--plan", PLAN, "--headless", "--no-realtime", "--arm", "--record", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    lat = next(x for x in r.stdout.splitlines() if x.startswith("latency"))
    assert float(lat.split("median ")[1].split(" ms")[0]) >= 0, lat
    frames = [json.loads(x) for x in (tmp_path / "r" / "frames.jsonl").read_text().splitlines()]
    assert len(frames) == 72
    for prev, f in zip(frames, frames[1:]):
        assert prev["t_published_ns"] <= f["t_capture_ns"] <= f["t_decided_ns"]


# ---------------------------------------------------------------------------------------------- damaged recordings

def _damaged_copy(recording: Path, tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    shutil.copytree(recording, d)
    return d


def _review(d: Path, tmp_path: Path) -> dict[str, subprocess.CompletedProcess]:
    return {"report": cli("report", d, "-o", tmp_path / f"{d.name}.html", "--quiet"),
            "replay": cli("replay", d, "--headless", "--out", tmp_path / f"{d.name}.mp4"),
            "reprocess": cli("reprocess", d, "-o", tmp_path / f"{d.name}-again")}


@pytest.mark.parametrize("damage", ["video missing", "garbled line"])
def test_damage_is_said_in_one_line_by_report_replay_and_reprocess(tmp_path, recording, damage):
    d = _damaged_copy(recording, tmp_path, damage.replace(" ", "_"))
    if damage == "video missing":
        (d / "video.mjpeg").unlink()
    else:
        lines = (d / "frames.jsonl").read_text().splitlines()
        lines[2] = lines[2][:30] + "#" + lines[2][31:]
        (d / "frames.jsonl").write_text("\n".join(lines) + "\n")
    r = _review(d, tmp_path)
    for cmd in ("report", "replay"):
        assert r[cmd].returncode == 0, r[cmd].stderr
        lines = r[cmd].stderr.strip().splitlines()
        assert len(lines) == 1 and ": damaged: " in lines[0], (cmd, r[cmd].stderr)
    assert "Damaged recording" in (tmp_path / f"{d.name}.html").read_text()
    assert "(damaged recording)" in r["report"].stdout
    assert (tmp_path / f"{d.name}.mp4").is_file()  # replay plays what it can
    assert r["reprocess"].returncode == 0 and r["reprocess"].stderr == "", r["reprocess"].stderr
    first = r["reprocess"].stdout.splitlines()[0]
    assert first.startswith("damaged: ") and "decisions differ" not in first
    assert " 0 decisions differ" in r["reprocess"].stdout


def test_a_recording_with_no_readable_frames_is_refused_by_every_review_command(tmp_path, recording):
    d = _damaged_copy(recording, tmp_path, "nothing")
    garbage = random.Random(14).randbytes(3000).replace(b"\n", b" ")
    (d / "frames.jsonl").write_bytes(garbage + b"\n" + b"{garbage}\n" * 3)
    for res in _review(d, tmp_path).values():
        one_line_error(res, "no readable frames")
    assert not any(p.name.startswith("nothing") and p != d for p in tmp_path.iterdir()), list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- output paths

def test_missing_output_folders_are_refused_naming_the_folder_and_nothing_is_made(tmp_path, video):
    r = cli("run", "--source", video, "--plan", PLAN, "--headless", "--out", tmp_path / "MISSING" / "DIR" / "x.mkv")
    one_line_error(r, str(tmp_path / "MISSING" / "DIR"), "--out", "does not exist")
    r = cli("run", "--source", video, "--plan", PLAN, "--headless", "--record", tmp_path / "MISSING" / "rec")
    one_line_error(r, str(tmp_path / "MISSING"), "--record", "does not exist")
    r = cli("run", "--source", video, "--plan", PLAN, "--headless", "--record", tmp_path / "rec",
            "--out", tmp_path / "overlay.mp4")
    one_line_error(r, "overlay.mp4", ".mkv")
    r = cli("run", "--source", video, "--plan", PLAN, "--headless", "--record", tmp_path / "rec",
            "--out", tmp_path / "MISSING" / "o.mkv")
    one_line_error(r, "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())


@pytest.mark.parametrize("flag, value", [("--max-frames", "0"), ("--face-lost-disarm-s", "nan"),
                                         ("--face-lost-disarm-s", "inf"), ("--face-lost-disarm-s", "-1"),
                                         ("--start-at-ns", "5")])
def test_bad_numbers_on_the_command_line(tmp_path, video, flag, value):
    args = ["run", "--source", video, "--plan", PLAN, "--headless", "--record", tmp_path / "r", flag, value]
    if flag == "--start-at-ns":
        args.append("--no-realtime")
    one_line_error(cli(*args), flag)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------- videos

def _cut_video(tmp_path: Path, video: Path) -> Path:
    """An MJPEG AVI of the sample (its header announces 72 frames), cut at 40 % of its bytes."""
    cap = cv2.VideoCapture(str(video))
    full = tmp_path / "full.avi"
    w = cv2.VideoWriter(str(full), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (640, 360))
    while True:
        ok, img = cap.read()
        if not ok:
            break
        w.write(img)
    w.release()
    cut = tmp_path / "cut.avi"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 4 // 10])
    return cut


def test_unreadable_videos_and_cameras_are_one_line_without_library_noise(tmp_path, video):
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "truncated.mp4").write_bytes(video.read_bytes()[:5000])
    data = bytearray(video.read_bytes())
    for i in range(64, len(data), 97):
        data[i] ^= 0xA5
    (tmp_path / "corrupt.mp4").write_bytes(bytes(data))
    (tmp_path / "folder.mp4").mkdir()
    for name in ("text.mp4", "empty.mp4", "truncated.mp4", "corrupt.mp4", "folder.mp4", "missing.mp4"):
        r = cli("run", "--source", tmp_path / name, "--plan", PLAN, "--headless", "--no-realtime",
                "--record", tmp_path / "r")
        one_line_error(r, name)
        assert not (tmp_path / "r").exists()
    r = cli("run", "--source", "99", "--plan", PLAN, "--headless", "--record", tmp_path / "r")
    one_line_error(r, "99", "camera")
    assert not (tmp_path / "r").exists()
    one_line_error(cli("landmarks", tmp_path / "text.mp4", "-o", tmp_path / "x.npy"), "text.mp4")


def test_a_video_cut_mid_stream_plays_with_one_warning_line(tmp_path, video):
    cut = _cut_video(tmp_path, video)
    r = cli("run", "--source", cut, "--plan", PLAN, "--headless", "--no-realtime")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("guidance run: warning: ") and "of the 72 frames" in lines[0], lines
    r = cli("run", "--source", video, "--plan", PLAN, "--headless", "--no-realtime")  # a whole file: no warning
    assert r.returncode == 0 and r.stderr == "", r.stderr


# ---------------------------------------------------------------------------------------------- kill -9

def test_kill_9_during_run_leaves_a_playable_overlay_and_a_readable_recording(tmp_path, video):
    """A real `guidance run` killed with SIGKILL mid-session: the overlay (Matroska) plays up to about its last
    second, the recording reads up to its last flushed frame (and its video.mjpeg decodes)."""
    from guidance.session.reader import open_session

    src = tmp_path / "long.avi"  # the sample six times over: a session long enough to kill in the middle
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    w = cv2.VideoWriter(str(src), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (640, 360))
    for k in range(6):
        for img in (frames if k % 2 == 0 else frames[::-1]):
            w.write(img)
    w.release()
    rec, out = tmp_path / "rec", tmp_path / "overlay.mkv"
    proc = subprocess.Popen(GUIDANCE + ["run", "--source", str(src), "--plan", str(PLAN), "--headless", "--no-realtime",
                                        "--arm", "--record", str(rec), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            n = (rec / "frames.jsonl").read_bytes().count(b"\n") if (rec / "frames.jsonl").exists() else 0
            if n >= 150 and out.exists() and out.stat().st_size > 600_000:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened(), "the overlay video does not open after kill -9"
    played = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape[:2] == (360, 640)
        played += 1
    assert played >= 30, played
    assert not list(tmp_path.glob("*.part*"))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = open_session(rec)
    # killed in the middle: the run had not finished (no session_end, frames left in the source)
    assert not any(e.kind == "session_end" for e in s.events) and len(s.frames) < 6 * len(frames) - 30
    assert len(s.frames) >= 100 and not s.damaged
    assert s.image(0) is not None and s.image(len(s.frames) - 1) is not None
