"""`guidance simulate`: scripted path → rendered face video whose ground truth our own trackers agree with."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from guidance.resources import verified_path
from guidance import samples
from guidance.cli import main
from guidance.sim.ground_truth import COLUMNS, load_ground_truth
from guidance.sim.path import build_trajectory, load_path, sweep_strokes
from guidance.sim.simulate import ping_pong
from guidance.sim.skin import ChartToSkin
from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.tracker import FaceTracker
from guidance.vision.handpiece.tracker import HandpieceTracker
from guidance.vision.face.head_pose import load_canonical_face
from guidance.vision.handpiece.profiles import load_handpiece_profile
from guidance.vision.capture.sources import VideoFileSource
from guidance.zones.atlas import load_atlas
from guidance.zones.chart import load_chart
from guidance.zones.mapper import ZoneMapper

ROOT = Path(__file__).resolve().parents[2]
PLAN = verified_path("full_face", kind="plans")
PROFILE = verified_path("handpiece_default", kind="profiles")

SHORT_PATH = {
    "path_version": 1,
    "name": "test-short",
    "plan": str(PLAN),
    "speed_mm_s": 30,
    "lead_in_s": 0.3,
    "lead_out_s": 0.2,
    "start": [45.0, 30.0],
    "segments": [
        {"type": "line", "to": [45.0, 42.0]},
        {"type": "line", "toward": "periorbital_left", "depth_mm": 4},  # the crossing
        {"type": "lift", "duration_s": 0.3},
        {"type": "sweep", "zone": "nose", "spacing_mm": 8, "inset_mm": 3, "max_lines": 2},
    ],
}


@pytest.fixture(scope="module")
def atlas():
    return load_atlas()


@pytest.fixture(scope="module")
def skin():
    return ChartToSkin(load_chart(), load_canonical_face())


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    path_file = _write(tmp / "short.yaml", SHORT_PATH)
    out = tmp / "SIM"
    rc = main(["simulate", "--face-video", str(samples.fetch("single_face.mp4")), "--path", str(path_file),
               "-o", str(out)])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def tracked(sim):
    """Our own trackers run on the simulated video, as the live pipeline would (smoothed face)."""
    profile = load_handpiece_profile(PROFILE)
    tips, lookups = [], []
    mapper = ZoneMapper()
    face = FaceTracker()
    hand = None
    gt = load_ground_truth(sim)
    with VideoFileSource(sim / "simulated.avi") as src:
        for fr in src:
            if hand is None:
                hand = HandpieceTracker(profile, CameraModel.default(*fr.size))
            tips.append(hand.process(fr.image, fr.t_capture_ns, fr.index))
            obs = face.process(fr)
            g = gt[fr.index]
            lookups.append(mapper.locate(obs, g.skin_x_px, g.skin_y_px, fr.size) if g.face_found else None)
    return gt, tips, lookups


def test_output_folder_is_complete(sim):
    gt = load_ground_truth(sim)
    info = json.loads((sim / "info.json").read_text())
    cap = cv2.VideoCapture(str(sim / "simulated.avi"))
    n_video = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert n_video == len(gt) == info["frames"]
    assert info["face_video"]["sha256"] == samples.MEMBERS["single_face.mp4"].sha256
    assert yaml.safe_load((sim / "path.yaml").read_text()) == SHORT_PATH
    assert (sim / "ground_truth.csv").read_text().splitlines()[0].split(",") == COLUMNS
    # Times follow the video's frame rate; the path is longer than the 72-frame video, so it loops back.
    fps = info["fps"]
    assert [g.t_video_ns for g in gt[:3]] == [round(i * 1e9 / fps) for i in range(3)]
    assert [g.source_frame for g in gt] == [ping_pong(i, 72) for i in range(len(gt))]
    assert max(g.source_frame for g in gt) == 71
    assert sum(g.face_found for g in gt) >= 0.95 * len(gt)
    assert not any(p.name.endswith(".part") for p in sim.parent.iterdir())


def test_tip_tracked_back_matches_ground_truth(tracked):
    gt, tips, _ = tracked
    drawn = [(g, o) for g, o in zip(gt, tips) if np.isfinite(g.tip_x_px)]
    valid = [(g, o) for g, o in drawn if o.valid]
    assert len(valid) >= 0.8 * len(drawn)
    err = np.array([np.hypot(o.tip_px[0] - g.tip_x_px, o.tip_px[1] - g.tip_y_px) for g, o in valid])
    assert np.median(err) <= 1.5, np.percentile(err, [50, 90, 100])
    # In contact, the tip is exactly the skin point the landmarks give: the mapper sees what we claim.
    contact = [g for g, _ in drawn if g.contact]
    assert contact
    assert max(np.hypot(g.tip_x_px - g.skin_x_px, g.tip_y_px - g.skin_y_px) for g in contact) < 1e-3
    lifted = [g for g, _ in drawn if g.height_mm > 10]
    assert lifted and min(np.hypot(g.tip_x_px - g.skin_x_px, g.tip_y_px - g.skin_y_px) for g in lifted) > 3


def test_true_chart_position_lands_in_true_zone_on_tracked_face(tracked):
    gt, _, lookups = tracked
    checked = [(g, lk) for g, lk in zip(gt, lookups)
               if g.contact and g.face_found and lk is not None and abs(g.boundary_mm) > 3]
    assert len(checked) >= 30
    agree = np.mean([lk.zone == g.true_zone for g, lk in checked])
    assert agree >= 0.9, agree


def test_crossing_segment_reaches_the_exclusion(sim, atlas):
    gt = load_ground_truth(sim)
    crossing = [g for g in gt if g.segment == 1]
    zones = [g.true_zone for g in crossing]
    assert zones[0] == "cheek_left" and zones[-1] == "periorbital_left"
    assert crossing[-1].true_kind == "exclusion" and crossing[-1].in_plan is False
    assert crossing[-1].plan_distance_mm < 0 < crossing[0].plan_distance_mm
    assert all(g.contact for g in crossing)
    # The truth columns are the atlas lookup of the chart position, nothing else.
    for g in gt:
        z, d = atlas.zone_at(g.chart_u_mm, g.chart_v_mm)
        assert g.true_zone == (z.name if z else "") and abs(g.boundary_mm - d) < 1e-3


def test_cli_refuses_to_overwrite(sim, capsys):
    rc = main(["simulate", "--face-video", "single_face.mp4", "--path", str(sim / "path.yaml"), "-o", str(sim)])
    assert rc == 2
    assert "--force" in capsys.readouterr().err


def _mutate(data: dict, **changes) -> dict:
    d = json.loads(json.dumps(data))
    for key, value in changes.items():
        if key.startswith("seg"):
            i = int(key[3:])
            if value is None:
                continue
            d["segments"][i] = value
        elif value is None:
            d.pop(key)
        else:
            d[key] = value
    return d


BAD = [
    (_mutate(SHORT_PATH, path_version=2), "path_version"),
    (_mutate(SHORT_PATH, speed_mm_s="fast"), "speed_mm_s"),
    (_mutate(SHORT_PATH, colour="red"), "colour"),
    (_mutate(SHORT_PATH, seg3={"type": "sweep", "zone": "cheeks"}), "segments.3.zone"),
    (_mutate(SHORT_PATH, seg2={"type": "lift"}), "segments.2.duration_s"),
    (_mutate(SHORT_PATH, seg2={"type": "hover", "duration_s": 1}), "segments.2.type"),
    (_mutate(SHORT_PATH, seg0={"type": "line", "to": [45, 42], "toward": "lips"}), "segments.0"),
    (_mutate(SHORT_PATH, seg0={"type": "line", "to": [45, 160]}), "segments.0"),  # below the face mesh
    (_mutate(SHORT_PATH, seg3={"type": "sweep", "zone": "lips"}), "segments.3.zone"),  # not in the plan
    (_mutate(SHORT_PATH, seg3={"type": "sweep", "zone": "nose", "inset_mm": 29}), "segments.3.inset_mm"),
    (_mutate(SHORT_PATH, start=None), "start"),
    (_mutate(SHORT_PATH, plan="nowhere.yaml"), "plan"),
]


@pytest.mark.parametrize("data,field", BAD, ids=[f for _, f in BAD])
def test_bad_path_file_exit_2_names_field(tmp_path, capsys, data, field):
    path_file = _write(tmp_path / "bad.yaml", data)
    out = tmp_path / "out"
    rc = main(["simulate", "--face-video", "single_face.mp4", "--path", str(path_file), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert f"bad.yaml: {field}:" in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_sweep_strokes_stay_inset_in_their_zone(atlas, skin):
    mesh = skin.mesh_mask(atlas.grid)
    for zone, inset, direction in [("cheek_left", 4.0, "vertical"), ("forehead_central", 3.0, "horizontal"),
                                   ("chin", 2.0, "horizontal")]:
        strokes = sweep_strokes(atlas, zone, mesh, spacing_mm=6, inset_mm=inset, direction=direction)
        assert len(strokes) >= 3
        for a, b in strokes:
            for p in a + (b - a) * np.linspace(0, 1, 20)[:, None]:
                z, d = atlas.zone_at(*p)
                assert z is not None and z.name == zone and d >= inset - 0.5
            axis = 0 if direction == "vertical" else 1
            assert a[axis] == b[axis]  # raster lines
        # Consecutive lines are `spacing_mm` apart.
        lines = sorted({round(float(a[0 if direction == "vertical" else 1]), 3) for a, _ in strokes})
        assert np.allclose(np.diff(lines), 6.0)


def test_trajectory_timing_contact_and_lift(atlas, skin, tmp_path):
    sim = load_path(_write(tmp_path / "p.yaml", SHORT_PATH), atlas)
    traj = build_trajectory(sim, atlas, skin.on_mesh, skin.mesh_mask(atlas.grid))
    first = traj.pieces[1]  # after the lead-in
    assert first.contact and first.kind == "line"
    assert first.t1_s - first.t0_s == pytest.approx(12.0 / 30.0)
    ts = np.arange(0.0, traj.duration_s, 0.005)
    samples_ = [traj.sample(t) for t in ts]
    heights = np.array([s.height_mm for s in samples_])
    contact = np.array([s.contact for s in samples_])
    assert np.all(heights[contact] == 0) and np.all(heights[~contact] > 0 - 1e-9)
    assert heights.max() == pytest.approx(15.0)
    assert np.abs(np.diff(heights)).max() < 1.0  # take-off and landing are smooth, no jumps
    uv = np.array([s.uv_mm for s in samples_])
    assert np.linalg.norm(np.diff(uv, axis=0), axis=1).max() <= 0.005 * 90 + 1e-6  # never faster than repositioning
    lift = [s for s in samples_ if s.segment == 2]
    assert lift and not any(s.contact for s in lift) and np.ptp([s.uv_mm for s in lift], axis=0).max() == 0


def test_demo_path_fits_and_crosses_into_exclusions(atlas, skin):
    sim = load_path(verified_path("demo_full_face", kind="paths"), atlas)
    traj = build_trajectory(sim, atlas, skin.on_mesh, skin.mesh_mask(atlas.grid))
    assert 20.0 <= traj.duration_s <= 40.0
    ts = np.arange(0.0, traj.duration_s, 1 / 24)
    seen = {}
    for t in ts:
        s = traj.sample(t)
        z, _ = atlas.zone_at(*s.uv_mm)
        if s.contact and z is not None:
            seen[z.name] = z.kind
    assert {"periorbital_left", "periorbital_right", "lips"} <= {n for n, k in seen.items() if k == "exclusion"}
    assert sum(1 for n in seen if sim.plan.is_planned(n)) >= 4


def test_ping_pong():
    assert [ping_pong(i, 4) for i in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [ping_pong(i, 1) for i in range(3)] == [0, 0, 0]


def test_size_frames_the_face_video_at_another_resolution(tmp_path):
    path_file = _write(tmp_path / "short.yaml", SHORT_PATH)
    out = tmp_path / "SIM480"
    assert main(["simulate", "--face-video", str(samples.fetch("single_face.mp4")), "--path", str(path_file),
                 "-o", str(out), "--size", "640x480", "--max-frames", "12"]) == 0
    cap = cv2.VideoCapture(str(out / "simulated.avi"))
    ok, img = cap.read()
    assert ok and img.shape == (480, 640, 3)
    info = json.loads((out / "info.json").read_text())
    assert info["frame_size"] == [640, 480]
    gt = load_ground_truth(out)
    assert len(gt) == 12 and all(0 <= g.tip_x_px < 640 and 0 <= g.tip_y_px < 480 for g in gt if g.face_found and np.isfinite(g.tip_x_px))
    assert main(["simulate", "--face-video", "single_face.mp4", "--path", str(path_file), "-o", str(tmp_path / "bad"),
                 "--size", "640by480"]) == 2
