"""Acceptance of the face chart, atlas and point → zone mapping on real faces."""

import json

import cv2
import numpy as np
import pytest

from guidance.cli import main
from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.tracker import FaceTracker, TrackerConfig
from guidance.vision.face.head_pose import HeadPoseEstimator, load_canonical_face
from guidance.vision.face.track_video import track_video
from guidance.vision.capture.sources import Frame
from guidance.zones.mapper import FaceFrame, ZoneMapper

R_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
L_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]


def anatomical_points(lm: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    """Image points a clinician would name, from landmarks, with the zone they belong to.

    Pupil = centre of the eye contour; lower lip middle = between the inner
    (14) and outer (17) lower-lip midpoints; nose tip = 1; forehead centre =
    151 (mid-forehead on the midline); chin point = 175 (pogonion, above the
    menton 152); cheek centre = between the zygomatic (50/280) and the
    mid-cheek (205/425) landmarks.
    """
    xy = lm[:, :2]
    return {
        "pupil right": (xy[R_EYE].mean(0), "periorbital_right"),
        "pupil left": (xy[L_EYE].mean(0), "periorbital_left"),
        "lower lip middle": (0.5 * (xy[14] + xy[17]), "lips"),
        "nose tip": (xy[1], "nose"),
        "forehead centre": (xy[151], "forehead_central"),
        "chin point": (xy[175], "chin"),
        "cheek right": (0.5 * (xy[50] + xy[205]), "cheek_right"),
        "cheek left": (0.5 * (xy[280] + xy[425]), "cheek_left"),
    }


@pytest.fixture(scope="module")
def mapper():
    return ZoneMapper()


@pytest.mark.parametrize("name", ["single_face.jpg", "astronaut.png", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg",
                                  "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg"])
def test_anatomical_points_land_in_their_zones(sample, mapper, name):
    image = cv2.imread(str(sample(name)))
    obs = FaceTracker(TrackerConfig(smoothing=False)).process(Frame(0, 0, image))
    assert obs.found
    frame = mapper.prepare(obs, (image.shape[1], image.shape[0]))
    wrong = {}
    for what, (p, zone) in anatomical_points(obs.landmarks).items():
        r = frame.locate(float(p[0]), float(p[1]))
        assert r.surface == "face"
        if r.zone != zone:
            wrong[what] = (r.zone, zone)
        else:
            assert r.boundary_mm > 0  # inside, positive
    assert not wrong, wrong


def test_same_skin_point_keeps_its_chart_position_under_head_motion(sample, mapper):
    video = sample("WolfgangLanger_Pexels.mp4")
    run = track_video(video)
    cam = CameraModel.default(*cv2.VideoCapture(str(video)).read()[1].shape[1::-1])
    est = HeadPoseEstimator(load_canonical_face())
    yaw, pitch = [], []
    # points that are not mesh vertices: centroids of landmark triples spanning several triangles
    points = {"forehead": [151, 108, 337], "cheek right": [50, 205, 123], "cheek left": [280, 425, 352],
              "nose": [4, 5, 195]}
    uv = {k: [] for k in points}
    for lm in run.landmarks[run.found]:
        pose = est.estimate(lm, cam, 0)
        y, p_, _ = pose.euler_deg()
        yaw.append(y)
        pitch.append(p_)
        f = FaceFrame(mapper, lm)
        for k, ids in points.items():
            q = lm[ids, :2].mean(0)
            r = f.locate(float(q[0]), float(q[1]))
            uv[k].append(r.chart_mm)
    # the head really moves in this clip
    assert np.ptp(yaw) > 10 or np.ptp(pitch) > 10, (np.ptp(yaw), np.ptp(pitch))
    for k, pts in uv.items():
        pts = np.asarray(pts, float)
        dev = np.linalg.norm(pts - np.median(pts, axis=0), axis=1)
        assert dev.max() <= 2.0, (k, dev.max())


def test_far_cheek_never_wins_over_the_near_one(mapper):
    """A head turned 70°: the far cheek's triangles lie behind the near side; the near surface must win."""
    v = load_canonical_face()
    cam = CameraModel.default(640, 480)
    rvec = np.array([0.0, np.radians(70), 0.0])
    tvec = np.array([0.0, 0.0, 450.0])
    px, _ = cv2.projectPoints(v, rvec, tvec, cam.K, cam.dist)
    R = cv2.Rodrigues(rvec)[0]
    depth = (v @ R.T + tvec)[:, 2]
    lm = np.c_[px.reshape(-1, 2), (depth - depth.mean()) * cam.fx / 450.0]
    f = FaceFrame(mapper, lm)
    chart = mapper.chart
    hits = 0
    for x in np.linspace(lm[:, 0].min(), lm[:, 0].max(), 40):
        for y in np.linspace(lm[:, 1].min(), lm[:, 1].max(), 40):
            h = f.hit(x, y)
            if h is None:
                continue
            hits += 1
            tri, bary = h
            p3 = bary @ (v[chart.triangles[tri]] @ R.T + tvec)
            # nearest surface along the ray: no other triangle under the pixel is nearer
            dx, dy = x - f.a[:, 0], y - f.a[:, 1]
            l1, l2 = f.i00 * dx + f.i01 * dy, f.i10 * dx + f.i11 * dy
            under = (l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1)
            for k in np.flatnonzero(under):
                t = chart.triangles[f.index[k]]
                q = np.array([1 - l1[k] - l2[k], l1[k], l2[k]]) @ (v[t] @ R.T + tvec)
                assert p3[2] <= q[2] + 1.0
    assert hits > 200
    # a point on the far (client's left, turned away) side of the nose is reported on the near side
    assert f.locate(float(lm[1, 0]), float(lm[1, 1])).zone == "nose"


def test_no_face_and_off_surface_are_explicit(sample, mapper):
    img = cv2.imread(str(sample("free-mountain-vector-01.jpg")))
    obs = FaceTracker().process(Frame(0, 0, img))
    r = mapper.locate(obs, 10, 10, (img.shape[1], img.shape[0]))
    assert not r.face_found and r.zone is None and r.kind is None and r.chart_mm is None
    img = cv2.imread(str(sample("single_face.jpg")))
    obs = FaceTracker().process(Frame(0, 0, img))
    r = mapper.locate(obs, 2, 2, (img.shape[1], img.shape[0]))  # image corner: background
    assert r.face_found and r.zone == "off-surface" and r.kind == "off-surface"
    assert r.to_json()["kind"] is None


def test_neck_below_the_chin_and_scalp_above_the_forehead(sample, mapper):
    img = cv2.imread(str(sample("single_face.jpg")))
    obs = FaceTracker().process(Frame(0, 0, img))
    frame = mapper.prepare(obs, (img.shape[1], img.shape[0]))
    lm = obs.landmarks[:, :2]
    down = lm[152] - lm[9]
    neck = frame.locate(*map(float, lm[152] + 0.35 * down))
    scalp = frame.locate(*map(float, lm[10] - 0.25 * down))
    assert (neck.surface, neck.zone) == ("neck", "neck_anterior")
    assert neck.chart_mm[1] > mapper.chart.vertex_uv_mm[152, 1]  # below the menton on the chart
    assert scalp.surface == "scalp" and scalp.zone.startswith("scalp_")
    assert scalp.chart_mm[1] < mapper.chart.vertex_uv_mm[10, 1]


def test_locate_command_json(sample, capsys):
    path = sample("single_face.jpg")
    img = cv2.imread(str(path))
    obs = FaceTracker(TrackerConfig(smoothing=False)).process(Frame(0, 0, img))
    x, y = obs.landmarks[1, :2]
    assert main(["locate", str(path), f"{x:.2f}", f"{y:.2f}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["face_found"] is True and out["zone"] == "nose" and out["kind"] == "treat"
    assert len(out["chart_mm"]) == 2 and out["boundary_mm"] > 0
    assert main(["locate", str(sample("free-mountain-vector-01.jpg")), "5", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["face_found"] is False and out["zone"] is None and out["kind"] is None
    assert main(["locate", str(path), "99999", "5"]) == 2
    assert "outside the" in capsys.readouterr().err


def test_the_chart_runs_on_across_the_tracked_mesh_edge(sample, mapper):
    """The tracked mesh's edge is where the landmark model is least sure: a tip a few pixels past it (2-3 mm inside
    the true hairline or jaw) is mapped by the edge triangle extended, continuous with the mesh, not cast onto the
    head pose's scalp or neck with a jump of 5-13 mm (or, above a forehead, off-surface). Beyond
    EDGE_EXTENSION_MM the surfaces take over as before."""
    from guidance.zones.mapper import EDGE_EXTENSION_MM

    img = cv2.imread(str(sample("single_face.jpg")))
    obs = FaceTracker(TrackerConfig(smoothing=False)).process(Frame(0, 0, img))
    frame = mapper.prepare(obs, (img.shape[1], img.shape[0]))
    lm = obs.landmarks[:, :2]
    down = (lm[152] - lm[9]) / np.linalg.norm(lm[152] - lm[9])
    for start, direction, surface, zone in ((10, -down, "face", "forehead_central"),
                                            (152, down, "neck", "neck_anterior")):
        on_mesh = [s for s in np.arange(-3, 10, 0.25) if frame.hit(*map(float, lm[start] + s * direction))]
        edge = max(on_mesh)
        last = frame.locate(*map(float, lm[start] + edge * direction))
        assert last.surface == "face"
        prev = last.chart_mm
        for s in np.arange(edge + 0.25, edge + 3.0, 0.25):  # a few pixels past the edge (~1 mm each here)
            r = frame.locate(*map(float, lm[start] + s * direction))
            assert (r.surface, r.zone) == (surface, zone), s
            assert r.triangle is not None  # the edge triangle's map, extended
            step = float(np.hypot(r.chart_mm[0] - prev[0], r.chart_mm[1] - prev[1]))
            assert step < 0.6, (start, s, step)  # continuous: a quarter pixel is ~0.25 mm of skin here
            prev = r.chart_mm
        beyond = float(np.hypot(prev[0] - last.chart_mm[0], prev[1] - last.chart_mm[1]))
        assert 1.0 < beyond <= EDGE_EXTENSION_MM
        e = frame.edge_hit(*map(float, lm[start] + (edge + 40) * direction))  # far past it: not the mesh's
        assert e is None
