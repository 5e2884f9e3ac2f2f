"""Image point → skin point → zone, with the signed distance to the zone's edge in millimetres.

Per frame, the 468 tracked landmarks place the mesh triangles in the image.
A lookup finds the triangles under the point that face the camera, keeps the
nearest one (z interpolated at the point, so the far cheek never wins over the
near one), takes barycentric weights, and reads the chart position, zone and
distance-to-boundary from the atlas rasters. Off the mesh, the camera ray is
cast onto the neck, décolletage and scalp surfaces carried by the head pose
(see surfaces.py). Anything else is an explicit ``off-surface`` result, and no
face is ``face_found=False`` with every other field None: the gate denies on
both.

Distances are reported in skin millimetres: the chart distance times the
smaller singular value of the local chart→skin map when that is below 1 (the
chart never makes the margin look larger than it is on the skin, to first
order).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.zones.atlas import OFF_SURFACE, Atlas, load_atlas
from guidance.zones.chart import FaceChart, load_chart
from guidance.zones.decolletage import DecolletageLimit, shoulder_limit
from guidance.zones.surfaces import (cast_ray, intersect_neck, intersect_scalp,
                                     ray_in_head_frame)
from guidance.zones.neck_twist import TorsoReference, locate_decolletage, locate_neck
from guidance.vision.rigid import RigidPose

_EPS = 1e-9
_BARY_TOL = 1e-6
# How far beyond the tracked mesh's edge (chart mm) a point is still mapped by the mesh's edge triangle, extended.
# The mesh's edge is where the landmark model is least sure: with the handpiece over the forehead it sat ~3 mm low
# on an evaluation face (sim/two_face_session.py), so a tip 2-3 mm inside the true hairline fell off the tracked
# mesh and was cast onto the scalp ellipsoid of the head pose, 5-13 mm from the truth. Extended by the edge
# triangle's own affine map it is continuous with the mesh (see `FaceFrame.edge_hit`).
EDGE_EXTENSION_MM = 5.0


@dataclass(frozen=True)
class ZoneLookup:
    """Where an image point is on the client, for the gate and the overlay."""

    face_found: bool
    zone: str | None  # atlas zone name, "off-surface", or None when there is no face
    kind: str | None  # "treat" | "exclusion" | "off-surface" | None (no face)
    surface: str | None  # "face" | "neck" | "decolletage" | "scalp" | None
    chart_mm: tuple[float, float] | None  # (u, v) on the chart
    boundary_mm: float | None  # signed skin distance to the nearest boundary with a different zone, + inside
    triangle: int | None  # mesh triangle (face surface only)
    barycentric: tuple[float, float, float] | None
    image_px: tuple[float, float]
    # neck/décolletage with a shoulder line only: signed distance (mm) to that line, + above it. The gate
    # must take it into the planned-region distance, which comes from the atlas and ignores shoulders.
    limit_mm: float | None = None

    def to_json(self) -> dict:
        """The `guidance locate --json` object: kind is null for off-surface (the zone says it)."""
        d = asdict(self)
        if self.kind == OFF_SURFACE:
            d["kind"] = None
        if d["limit_mm"] is None:
            del d["limit_mm"]
        for k in ("chart_mm", "barycentric", "image_px"):
            if d[k] is not None:
                d[k] = [round(float(x), 4) for x in d[k]]
        if d["boundary_mm"] is not None:
            d["boundary_mm"] = round(float(d["boundary_mm"]), 3) if np.isfinite(d["boundary_mm"]) else None
        return d


@dataclass(frozen=True)
class _PlanePose:
    """The frame the décolletage plane stands in, as `shoulder_limit` reads a pose."""

    R: np.ndarray
    tvec_mm: np.ndarray
    valid: bool = True


class FaceFrame:
    """One frame's mesh in the image, prepared once so each lookup is a few vector operations."""

    def __init__(self, mapper: "ZoneMapper", landmarks_px: np.ndarray, pose=None, camera: CameraModel | None = None,
                 limit: DecolletageLimit | None = None, limit_reason: str = "no shoulders",
                 torso: TorsoReference | None = None):
        """`torso`: the neck stands on the torso and twists under the head (zones/neck_twist.py); None: the neck is
        carried by the head pose whole (as before the twist model; a plan without neck zones)."""
        self.mapper = mapper
        self.torso = torso
        chart = mapper.chart
        lm = np.asarray(landmarks_px, dtype=np.float64)
        p = lm[chart.triangles, :2]  # (T,3,2)
        e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        # Facing the camera = same winding as the canonical frontal face (negative in x-right, y-down).
        front = det < -_EPS
        self.index = np.flatnonzero(front)
        a, e1, e2, det = p[front, 0], e1[front], e2[front], det[front]
        # barycentric (l1, l2) = inv([e1 e2]) @ (q - a)
        self.a = a
        self.p = p[front]  # (F,3,2) the camera-facing triangles' corners, for `edge_hit`
        self.i00, self.i01 = e2[:, 1] / det, -e2[:, 0] / det
        self.i10, self.i11 = -e1[:, 1] / det, e1[:, 0] / det
        z = lm[chart.triangles[front], 2]
        self.z0, self.dz1, self.dz2 = z[:, 0], z[:, 1] - z[:, 0], z[:, 2] - z[:, 0]
        self.pose = pose
        self.camera = camera
        # The shoulder line, when known, cuts the décolletage's outline (and the neck) from below.
        self.limit = limit
        self.limit_reason = limit_reason
        self.surfaces = mapper.chart.surfaces

    def hit(self, x: float, y: float) -> tuple[int, np.ndarray] | None:
        """(triangle, barycentric) of the nearest camera-facing triangle under (x, y), or None."""
        dx, dy = x - self.a[:, 0], y - self.a[:, 1]
        l1 = self.i00 * dx + self.i01 * dy
        l2 = self.i10 * dx + self.i11 * dy
        inside = (l1 >= -_BARY_TOL) & (l2 >= -_BARY_TOL) & (l1 + l2 <= 1 + _BARY_TOL)
        k = np.flatnonzero(inside)
        if k.size == 0:
            return None
        if k.size > 1:
            zk = self.z0[k] + l1[k] * self.dz1[k] + l2[k] * self.dz2[k]
            k = k[np.argmin(zk)]
        else:
            k = k[0]
        b1, b2 = float(np.clip(l1[k], 0, 1)), float(np.clip(l2[k], 0, 1))
        s = b1 + b2
        if s > 1:
            b1, b2 = b1 / s, b2 / s
        return int(self.index[k]), np.array([1.0 - b1 - b2, b1, b2])

    def edge_hit(self, x: float, y: float, max_mm: float = EDGE_EXTENSION_MM) -> tuple[int, np.ndarray] | None:
        """A point off the mesh but near its edge: (triangle, extended barycentric), as `hit` gives on the mesh.

        The nearest edge of the camera-facing triangles (the union's outline: the mesh's border, or the
        silhouette of a turned face) is found in the image; the point's barycentric weights in that edge's
        triangle, not clipped, extend the triangle's affine map beyond the edge, so the chart stays
        continuous across it. None when the extension is more than `max_mm` on the chart (a triangle seen
        edge-on stretches a pixel into many millimetres, so it never reaches far).
        """
        if self.p.shape[0] == 0:
            return None
        q = np.array([x, y])
        best_d, best_k, best_e, best_t = np.inf, -1, 0, 0.0
        for e in range(3):
            pi, pj = self.p[:, e], self.p[:, (e + 1) % 3]
            seg = pj - pi
            t = np.clip(np.einsum("ij,ij->i", q - pi, seg) / np.maximum(np.einsum("ij,ij->i", seg, seg), _EPS), 0, 1)
            d = np.hypot(*(q - (pi + t[:, None] * seg)).T)
            k = int(np.argmin(d))
            if d[k] < best_d:
                best_d, best_k, best_e, best_t = float(d[k]), k, e, float(t[k])
        dx, dy = x - self.a[best_k, 0], y - self.a[best_k, 1]
        l1 = self.i00[best_k] * dx + self.i01[best_k] * dy
        l2 = self.i10[best_k] * dx + self.i11[best_k] * dy
        bary = np.array([1.0 - l1 - l2, l1, l2])
        on_edge = np.zeros(3)
        on_edge[best_e], on_edge[(best_e + 1) % 3] = 1.0 - best_t, best_t
        tri = int(self.index[best_k])
        beyond = float(np.linalg.norm(self.mapper.chart.uv_of(tri, bary) - self.mapper.chart.uv_of(tri, on_edge)))
        return (tri, bary) if beyond <= max_mm else None

    def locate(self, x: float, y: float) -> ZoneLookup:
        m = self.mapper
        h = self.hit(x, y)
        surface = "face"
        if h is None:
            # Just beyond the tracked mesh's edge: the edge triangle extended. Its zone says the surface: a face
            # zone (the forehead's run on up the scalp), or the neck's or the scalp's below and above the mesh,
            # which the gate then judges as that surface (its pose sigma, its torso reference).
            e = self.edge_hit(x, y)
            if e is not None:
                zone, _ = m.atlas.zone_at(*(float(c) for c in m.chart.uv_of(*e)))
                if zone is not None and zone.kind != OFF_SURFACE and zone.carried_on:
                    h = e
                    surface = "face" if "face" in zone.carried_on else zone.carried_on[0]
        if h is not None:
            tri, bary = h
            uv = m.chart.uv_of(tri, bary)
            zone, d_chart = m.atlas.zone_at(float(uv[0]), float(uv[1]))
            scale = min(1.0, float(m.chart.triangle_sigma[tri, 0]))
            b3 = (float(bary[0]), float(bary[1]), float(bary[2]))
            if zone is None:  # a mesh point always has a zone; if the atlas was cut short, fail closed
                return ZoneLookup(True, OFF_SURFACE, OFF_SURFACE, "face", (float(uv[0]), float(uv[1])),
                                  d_chart * scale, tri, b3, (x, y))
            return ZoneLookup(True, zone.name, zone.kind, surface, (float(uv[0]), float(uv[1])), d_chart * scale,
                              tri, b3, (x, y))
        off = self._locate_off_mesh(x, y)
        if off is not None:
            return off
        return ZoneLookup(True, OFF_SURFACE, OFF_SURFACE, None, None, None, None, None, (x, y))

    def _locate_off_mesh(self, x: float, y: float) -> ZoneLookup | None:
        pose, cam = self.pose, self.camera
        if pose is None or cam is None or not getattr(pose, "valid", False):
            return None
        pt = cv2.undistortPoints(np.array([[[x, y]]], np.float64), cam.K, cam.dist).reshape(2)
        ray = np.array([pt[0], pt[1], 1.0])
        m = self.mapper
        hits = cast_ray(pose.R, np.asarray(pose.tvec_mm, float), ray, self.surfaces)
        head = RigidPose(pose.R, np.asarray(pose.tvec_mm, float))
        if self.torso is not None:  # the neck (twisted) and the décolletage on the torso replace the head-carried
            on_torso = [locate_neck(self.torso, head, ray, self.surfaces["neck"]),
                        locate_decolletage(self.torso, head, ray, self.surfaces["decolletage"])]
            hits = sorted([h for h in hits if h.surface not in ("neck", "decolletage")]
                          + [h for h in on_torso if h is not None], key=lambda h: h.distance_mm)
        for hit in hits:
            limit = None
            if self.limit is not None and hit.surface in ("neck", "decolletage"):
                if hit.surface == "decolletage":
                    inside, d, limit = self.limit.locate(*hit.chart_mm)
                    zone, d_atlas = m.atlas.zone_at(*hit.chart_mm)
                    if (not inside or zone is None or hit.surface not in zone.carried_on
                            or m.on_face_mesh(*hit.chart_mm)):
                        continue  # below the shoulder line, outside the shoulders or the décolletage's outline
                    return ZoneLookup(True, zone.name, zone.kind, hit.surface, hit.chart_mm, min(d, d_atlas), None,
                                      None, (x, y), limit)
                p = hit.point_head_mm  # on the décolletage plane's frame: the head's, or with the torso the torso's
                if self.torso is not None:
                    p = self.torso.rest.inverse().apply(head.apply(p[None, :]))[0]
                limit = self.limit.signed_mm(float(p[0]), float(p[1]))
                if limit < 0:
                    continue  # neck skin below the shoulder line: past the lower edge of the treatable area
            zone, d = m.atlas.zone_at(*hit.chart_mm)
            if zone is None or hit.surface not in zone.carried_on or m.on_face_mesh(*hit.chart_mm):
                continue
            if limit is not None:
                d = min(d, limit)
            return ZoneLookup(True, zone.name, zone.kind, hit.surface, hit.chart_mm, d, None, None, (x, y), limit)
        return None


class ZoneMapper:
    """Maps image points of a face observation to zones. Stateless apart from read-only chart and atlas."""

    def __init__(self, chart: FaceChart | None = None, atlas: Atlas | None = None):
        self.chart = chart or load_chart()
        self.atlas = atlas or load_atlas()
        g = self.atlas.grid
        mesh = np.zeros((g.height, g.width), np.uint8)
        for t in self.chart.triangles:
            px = np.round((self.chart.vertex_uv_mm[t] - [g.u0_mm, g.v0_mm]) / g.cell_mm).astype(np.int32)
            cv2.fillConvexPoly(mesh, px.reshape(-1, 1, 2), 1)
        self._mesh_cells = mesh.astype(bool)

    def on_face_mesh(self, u_mm: float, v_mm: float) -> bool:
        """Is this chart point covered by the face mesh (where off-mesh surfaces must not claim it)?"""
        cell = self.atlas.grid.to_cell(u_mm, v_mm)
        return cell is not None and bool(self._mesh_cells[cell])

    def prepare(self, observation, image_size: tuple[int, int] | None = None,
                camera: CameraModel | None = None, shoulders=None,
                torso: TorsoReference | None = None) -> FaceFrame | None:
        """The frame's mesh ready for lookups, or None when the observation has no face.

        ``shoulders``: optional ``guidance.vision.body.shoulders.ShoulderObservation`` (e.g.
        ``ShoulderTracker.latest()``). When valid, visible and within
        ``decolletage.MAX_AGE_MS`` of this frame, the décolletage ends at the
        shoulder line; otherwise at the proportional extension
        (``FaceFrame.limit_reason`` says which and why).
        """
        if observation is None or not observation.found or observation.landmarks is None:
            return None
        if camera is None and image_size is not None:
            camera = CameraModel.default(*image_size)
        elif camera is not None and image_size is not None:
            camera = camera.scaled_to(*image_size)
        limit, why = None, "no shoulders"
        if shoulders is not None:
            # the shoulder line lies on the décolletage plane: the torso's when the torso is known, else the head's
            plane_pose = observation.head_pose if torso is None else _PlanePose(torso.rest.R, torso.rest.t_mm)
            limit, why = shoulder_limit(shoulders, plane_pose, camera, self.chart.surfaces, self.atlas,
                                        t_reference_ns=getattr(observation, "t_capture_ns", None),
                                        face_landmarks=observation.landmarks)
        return FaceFrame(self, observation.landmarks, observation.head_pose, camera, limit, why, torso)

    def locate(self, observation, x_px: float, y_px: float, image_size: tuple[int, int] | None = None,
               camera: CameraModel | None = None, shoulders=None, torso: TorsoReference | None = None) -> ZoneLookup:
        """One lookup. For many lookups in the same frame, `prepare` once and call `FaceFrame.locate`."""
        frame = self.prepare(observation, image_size, camera, shoulders, torso)
        if frame is None:
            return ZoneLookup(False, None, None, None, None, None, None, None, (float(x_px), float(y_px)))
        return frame.locate(float(x_px), float(y_px))

    def locate_on_band(self, R: np.ndarray, t_mm: np.ndarray, x_px: float, y_px: float, camera: CameraModel,
                       face: FaceFrame | None = None, *, neck: bool = False,
                       torso: TorsoReference | None = None) -> tuple[ZoneLookup, float]:
        """Scalp sessions (and neck plans carried by the band): an image point on the scalp, or the neck, carried by
        the head pose from the head band.

        The face mesh, when the face is tracked and the point lies on it, still wins (a face zone: not in a
        scalp plan). Otherwise the camera ray meets the scalp ellipsoid of the head frame; chart points the
        face mesh covers are never scalp (off-surface, so the gate denies), as in `FaceFrame.locate`.
        With `neck`, the ray also meets the neck: standing on `torso` and twisted under the head
        (zones/neck_twist.py), or carried by the head while `torso` is None (the gate then denies it,
        neck_unreferenced); and, with the torso known, the chart's décolletage plane on the torso (its lower
        edge the chart's proportional one: no shoulder line in a band session). The nearest hit counts.
        Also returns the cosine of the angle between the ray and the scalp's normal there (1 where the ray
        meets the skin square on, and on the neck; NaN without a hit): an error of the head pose along the line
        of sight moves the skin point by about that error over this cosine.
        """
        x, y = float(x_px), float(y_px)
        if face is not None and face.hit(x, y) is not None:
            return face.locate(x, y), 1.0
        pt = cv2.undistortPoints(np.array([[[x, y]]], np.float64), camera.K, camera.dist).reshape(2)
        ray = np.array([pt[0], pt[1], 1.0])
        o, d = ray_in_head_frame(np.asarray(R, float), np.asarray(t_mm, float), ray)
        found: list[tuple[float, ZoneLookup, float]] = []
        sc = self.chart.surfaces["scalp"]
        hit = intersect_scalp(o, d, sc)
        if hit is not None and not self.on_face_mesh(*hit.chart_mm):
            zone, dist = self.atlas.zone_at(*hit.chart_mm)
            if zone is not None and "scalp" in zone.carried_on:
                n = (hit.point_head_mm - np.asarray(sc["centre_mm"], float)) / np.asarray(sc["semi_axes_mm"], float) ** 2
                cos = abs(float(n @ d)) / float(np.linalg.norm(n))
                found.append((hit.distance_mm, ZoneLookup(True, zone.name, zone.kind, "scalp", hit.chart_mm, dist, None,
                                                          None, (x, y)), cos))
        if neck:
            nk = self.chart.surfaces["neck"]
            nh = (locate_neck(torso, RigidPose(np.asarray(R, float), np.asarray(t_mm, float)), ray, nk)
                  if torso is not None else intersect_neck(o, d, nk))
            if nh is not None and not self.on_face_mesh(*nh.chart_mm):
                zone, dist = self.atlas.zone_at(*nh.chart_mm)
                if zone is not None and "neck" in zone.carried_on:
                    found.append((nh.distance_mm, ZoneLookup(True, zone.name, zone.kind, "neck", nh.chart_mm, dist,
                                                             None, None, (x, y)), 1.0))
        if neck and torso is not None:  # the face chart's décolletage plane, standing on the torso (no twist there)
            dh = locate_decolletage(torso, RigidPose(np.asarray(R, float), np.asarray(t_mm, float)), ray,
                                    self.chart.surfaces["decolletage"])
            if dh is not None and not self.on_face_mesh(*dh.chart_mm):
                zone, dist = self.atlas.zone_at(*dh.chart_mm)
                if zone is not None and "decolletage" in zone.carried_on:
                    found.append((dh.distance_mm, ZoneLookup(True, zone.name, zone.kind, "decolletage", dh.chart_mm,
                                                             dist, None, None, (x, y)), 1.0))
        if found:
            _, lookup, cos = min(found, key=lambda f: f[0])
            return lookup, cos
        return ZoneLookup(True, OFF_SURFACE, OFF_SURFACE, None, None, None, None, None, (x, y)), float("nan")

    def locate_tip(self, observation, tip_cam_mm: np.ndarray, camera: CameraModel,
                   image_size: tuple[int, int] | None = None) -> ZoneLookup:
        """A 3D tip (camera frame, mm): projected through the camera model, then looked up like a pixel."""
        px, _ = cv2.projectPoints(np.asarray(tip_cam_mm, np.float64).reshape(1, 3), np.zeros(3), np.zeros(3),
                                  camera.K, camera.dist)
        x, y = px.reshape(2)
        return self.locate(observation, float(x), float(y), image_size or camera.size, camera)
