"""Turning pipeline results into an `OverlayState`: zones and coverage placed on this frame's face.

Zone outlines and coverage live on the chart; the chart is fixed data, so each
outline point and each deposited pulse is tied to a mesh triangle once
(`ChartLocator`) and re-placed every frame from the landmarks — a few vector
operations, done on the overlay thread, never on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from guidance.live.overlay import OverlayState, ZoneOutline, ZoneProgress
from guidance.vision.capture.camera import CameraModel
from guidance.vision.rigid import RigidPose
from guidance.zones.atlas_render import zone_colours
from guidance.zones.chart import FaceChart
from guidance.zones.coverage import CoverageMap
from guidance.zones.plan import TreatmentPlan
from guidance.zones.skin import ChartLocator, SkinPoints
from guidance.zones.neck_twist import TorsoReference, neck_skin_points
from guidance.zones.surfaces import scalp_points

OUTLINE_STEP_MM = 2.0


def _project_facing(pc: np.ndarray, normals_cam: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Camera-frame skin points (N, 3) with their outward normals -> image px (N, 2), NaN where the skin faces away
    from the camera (or lies behind it)."""
    facing = (np.sum(normals_cam * pc, axis=1) < 0) & (pc[:, 2] > 1.0)
    px = np.full((len(pc), 2), np.nan)
    if facing.any():
        out, _ = cv2.projectPoints(pc[facing].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), camera.K, camera.dist)
        px[facing] = out.reshape(-1, 2)
    return px


def project_neck_chart(torso: TorsoReference, neck: dict, camera: CameraModel, uv: np.ndarray) -> np.ndarray:
    """Neck chart mm (N, 2) -> image px (N, 2): the skin's rest chart point where it is now, twisted by the head's
    turn on the torso (zones/neck_twist.py) and on the axis the touched notch sheared; NaN where the neck faces
    away from the camera there."""
    p, normal = neck_skin_points(torso, neck, uv)
    return _project_facing(torso.rest.apply(p), normal @ torso.rest.R.T, camera)


def project_decolletage_chart(torso: TorsoReference, dec: dict, camera: CameraModel, uv: np.ndarray) -> np.ndarray:
    """Décolletage chart mm (N, 2) -> image px (N, 2): the face chart's plane standing on the torso, moved by the
    touched notch's offset (zones/neck_twist.py locate_decolletage); NaN where it faces away."""
    uv = np.asarray(uv, float).reshape(-1, 2)
    p = np.c_[uv, np.full(len(uv), float(dec["plane_z_mm"]))]
    if torso.notch_offset_mm is not None:
        p = p + np.asarray(torso.notch_offset_mm, float)
    normal = np.tile(torso.rest.R @ np.array([0.0, 0.0, -1.0]), (len(p), 1))
    return _project_facing(torso.rest.apply(p), normal, camera)


def project_scalp_chart(head: RigidPose, scalp: dict, camera: CameraModel, uv: np.ndarray) -> np.ndarray:
    """Scalp chart mm (N, 2) -> image px (N, 2) for the head pose `head` (head -> camera), NaN where the scalp
    faces away from the camera there (or lies behind it)."""
    p, n = scalp_points(uv, scalp)
    return _project_facing(head.apply(p), n @ head.R.T, camera)


def _resample(ring: np.ndarray, step: float) -> np.ndarray:
    pts = np.vstack([ring, ring[:1]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    n = max(int(s[-1] / step), 8)
    t = np.linspace(0, s[-1], n, endpoint=False)
    return np.c_[np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])]


class OverlayScene:
    def __init__(self, plan: TreatmentPlan, chart: FaceChart, coverage: CoverageMap, electrode_diameter_mm: float,
                 inset_px_per_mm: float = 1.2):
        self.plan = plan
        self.chart = chart
        self.coverage = coverage
        self.atlas = coverage.atlas
        self.diameter_mm = electrode_diameter_mm
        self.locator = ChartLocator(chart)
        self.outlines: list[tuple[str, str, list[SkinPoints]]] = []
        # body plans: the zones on the patch chart, placed through this frame's patch pose (a plane projection)
        self.body_outlines: list[tuple[str, str, list[np.ndarray]]] = []
        # zones off the face mesh placed through a projector per surface (`fill(offmesh=)`): the scalp's through the
        # head band's head pose, the neck's through the torso and the twist under the head, the décolletage's on the
        # torso
        self.offmesh_outlines: dict[str, list[tuple[str, str, list[np.ndarray]]]] = {
            "scalp": [], "neck": [], "decolletage": []}
        for z in self.atlas.zones.values():
            if z.surface not in ("face", "body", "scalp", "neck", "decolletage"):
                continue
            kind = "exclusion" if (z.kind == "exclusion" or z.name in plan.exclusions) else (
                "planned" if z.name in plan.zones else "other")
            resampled = [_resample(np.asarray(r), OUTLINE_STEP_MM) for r in z.boundary_mm]
            if z.surface == "body":
                self.body_outlines.append((z.name, kind, resampled))
            elif z.surface in self.offmesh_outlines:
                self.offmesh_outlines[z.surface].append((z.name, kind, resampled))
            else:
                self.outlines.append((z.name, kind, [self.locator.locate(r) for r in resampled]))
        self._pulse_uv: list[tuple[float, float]] = []
        self._pulse_surface: list[str] = []  # "face", "scalp", "neck", "decolletage": which projector places it
        self._pulse_skin: SkinPoints | None = None
        self._inset_base, self._inset_origin, self._inset_scale = self._make_inset_base(inset_px_per_mm)
        self._inset_cache: np.ndarray | None = None
        self._inset_pulses = -1
        self._progress: list[ZoneProgress] = []
        self._progress_pulses = -1

    # ---- chart inset ------------------------------------------------------------
    def _make_inset_base(self, px_per_mm: float):
        g = self.atlas.grid
        rows, cols = np.nonzero(self.atlas.labels)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        lab = self.atlas.labels[r0:r1, c0:c1]
        lut = np.full((256, 3), 40, np.uint8)
        for name, colour in zone_colours(self.atlas).items():
            lut[self.atlas.zones[name].label] = (np.asarray(colour) * 0.6 + 40).astype(np.uint8)
        scale = px_per_mm * g.cell_mm
        img = cv2.resize(lut[lab], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        edges = np.zeros(lab.shape, bool)
        edges[:, 1:] |= lab[:, 1:] != lab[:, :-1]
        edges[1:, :] |= lab[1:, :] != lab[:-1, :]
        edges = cv2.resize(edges.astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        img[edges] = (230, 230, 230)
        origin = (g.u0_mm + c0 * g.cell_mm, g.v0_mm + r0 * g.cell_mm)
        return img, origin, px_per_mm

    def _chart_px(self, u: float, v: float) -> tuple[int, int]:
        return (int(round((u - self._inset_origin[0]) * self._inset_scale)),
                int(round((v - self._inset_origin[1]) * self._inset_scale)))

    def inset(self, tip_uv: tuple[float, float] | None) -> np.ndarray:
        n = len(self._pulse_uv)
        if self._inset_cache is None or n != self._inset_pulses:
            img = self._inset_base.copy()
            r = max(1, int(round(self.diameter_mm / 2 * self._inset_scale)))
            heat = img.copy()
            for u, v in self._pulse_uv:
                cv2.circle(heat, self._chart_px(u, v), r, (178, 114, 0), -1)
            cv2.addWeighted(heat, 0.5, img, 0.5, 0, dst=img)
            self._inset_cache, self._inset_pulses = img, n
        img = self._inset_cache.copy()
        if tip_uv is not None:
            cv2.drawMarker(img, self._chart_px(*tip_uv), (66, 228, 240), cv2.MARKER_CROSS, 12, 2)
        return img

    def _fill_body(self, st: OverlayState, project: Callable[[np.ndarray], np.ndarray | None]) -> None:
        for name, kind, rings in self.body_outlines:
            polys = [p for p in (project(r) for r in rings) if p is not None and len(p) > 2]
            if polys:
                st.outlines.append(ZoneOutline(name, kind, [np.asarray(p, float) for p in polys]))
        uv = np.asarray(self._pulse_uv[:len(self._pulse_uv)], float).reshape(-1, 2)
        if len(uv):
            px = project(uv)
            if px is not None:
                passes = np.array([self.coverage.passes_at(u, v) for (u, v) in uv])
                st.coverage_px = np.c_[np.asarray(px, float), passes]

    def _fill_offmesh(self, st: OverlayState, surface: str, project: Callable[[np.ndarray], np.ndarray]) -> None:
        """One off-mesh surface's zones and pulses through `project` (chart mm -> px, NaN where the skin faces
        away): a ring seen whole is drawn closed, one seen in part as its visible pieces."""
        for name, kind, rings in self.offmesh_outlines[surface]:
            closed, pieces = True, []
            for r in rings:
                px = np.asarray(project(r), float)
                seen = np.isfinite(px[:, 0])
                if seen.all():
                    pieces.append(px)
                    continue
                closed = False
                if not seen.any():
                    continue
                start = int(np.argmin(seen))  # a hidden point: walk the ring from it, so no piece wraps
                order = np.roll(np.arange(len(px)), -start)
                run: list[np.ndarray] = []
                for i in order:
                    if seen[i]:
                        run.append(px[i])
                    else:
                        if len(run) > 1:
                            pieces.append(np.array(run))
                        run = []
                if len(run) > 1:
                    pieces.append(np.array(run))
            if pieces:
                st.outlines.append(ZoneOutline(name, kind, pieces, closed))
        n = len(self._pulse_uv)
        mine = [k for k in range(n) if self._pulse_surface[k] == surface]
        if mine:
            uv = np.asarray([self._pulse_uv[k] for k in mine], float).reshape(-1, 2)
            px = np.asarray(project(uv), float)
            ok = np.isfinite(px[:, 0])
            if ok.any():
                passes = np.array([self.coverage.passes_at(u, v) for (u, v) in uv[ok]])
                drawn = np.c_[px[ok], passes]
                st.coverage_px = drawn if st.coverage_px is None else np.vstack([st.coverage_px, drawn])

    # ---- per-frame ------------------------------------------------------------
    def surface_of(self, u: float, v: float) -> str:
        """Which projector places a pulse at chart (u, v): "scalp", "neck", "decolletage", else "face" (the
        landmarks)."""
        zone, _ = self.atlas.zone_at(u, v)
        return zone.surface if zone is not None and zone.surface in self.offmesh_outlines else "face"

    def add_pulse(self, u: float, v: float) -> None:
        self._pulse_surface.append(self.surface_of(u, v))
        self._pulse_uv.append((u, v))  # last: the overlay thread reads up to len(_pulse_uv)

    def progress(self) -> list[ZoneProgress]:
        n = len(self._pulse_uv)
        if n != self._progress_pulses:
            self._progress = []
            for name in self.plan.zones:
                zc = self.coverage.zone(name)
                self._progress.append(ZoneProgress(name, zc.fraction_at_target, zc.cells_over_max))
            self._progress_pulses = n
        return self._progress

    def fill(self, st: OverlayState, landmarks_px: np.ndarray | None, px_per_mm: float | None,
             project: Callable[[np.ndarray], np.ndarray | None] | None = None,
             offmesh: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None) -> OverlayState:
        """Zones and coverage on this frame: through the face's landmarks, for a body plan through `project`
        (chart mm (N, 2) -> image px (N, 2) on this frame's patch pose; None when the patch is not found), and the
        scalp's and the neck's zones through `offmesh[surface]` (the band's head pose; the twisted neck on the
        torso; NaN where hidden). The face's landmarks place only the pulses on the face."""
        if project is not None and self.body_outlines:
            self._fill_body(st, project)
        for surface, proj in (offmesh or {}).items():
            if surface in self.offmesh_outlines:
                self._fill_offmesh(st, surface, proj)
        if landmarks_px is not None:
            for name, kind, rings in self.outlines:
                polys = []
                for sp in rings:
                    p = sp.image_px(self.chart, landmarks_px)[:, :2]
                    p = p[np.isfinite(p[:, 0])]
                    if len(p) > 2:
                        polys.append(p)
                if polys:
                    st.outlines.append(ZoneOutline(name, kind, polys))
            n = len(self._pulse_uv)  # snapshot: pulses arrive on another thread
            uv = np.asarray(self._pulse_uv[:n])
            face_pulse = np.array([self._pulse_surface[k] == "face" for k in range(n)], bool)
            if len(uv) and face_pulse.any():
                known = 0 if self._pulse_skin is None else len(self._pulse_skin.triangle)
                if known < len(uv):  # tie only the new pulses to the mesh
                    new = self.locator.locate(uv[known:])
                    if self._pulse_skin is None:
                        self._pulse_skin = new
                    else:
                        self._pulse_skin = SkinPoints(np.concatenate([self._pulse_skin.triangle, new.triangle]),
                                                      np.concatenate([self._pulse_skin.barycentric, new.barycentric]))
                assert self._pulse_skin is not None, "len(uv) > 0, so the pulses were tied to the mesh just above"
                skin = SkinPoints(self._pulse_skin.triangle[:len(uv)], self._pulse_skin.barycentric[:len(uv)])
                px = skin.image_px(self.chart, landmarks_px)
                ok = np.isfinite(px[:, 0]) & face_pulse
                if ok.any():
                    passes = np.array([self.coverage.passes_at(u, v) for (u, v) in uv[ok]])
                    drawn = np.c_[px[ok, :2], passes]
                    st.coverage_px = drawn if st.coverage_px is None else np.vstack([st.coverage_px, drawn])
        if px_per_mm:
            st.footprint_radius_px = self.diameter_mm / 2 * px_per_mm
        st.progress = self.progress()
        return st
