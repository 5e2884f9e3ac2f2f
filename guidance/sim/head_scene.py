"""A rendered client: head (textured canonical face + hair-textured cranium) and neck, in front of a background.

There is no real video of a head turning to show its back at hand; this
renderer makes one, with the truth exact by construction. The geometry is the
service's own model of the skin:

- the face is the canonical face (``head_pose.load_canonical_face``, 468
  points in mm) triangulated as the face chart, textured from a real photo
  through that photo's own face-mesh landmarks, so the face tracker sees a
  real face's texture on the geometry it assumes;
- the cranium is the scalp ellipsoid of the chart (``surfaces.scalp``),
  hair-textured where the atlas has scalp zones (and over the back of the
  head), skin on the forehead cap and the ears;
- the neck is the chart's neck cylinder (``surfaces.neck``), carried by the
  head (a head turning on a still torso is not modelled here);
- the head band, when given, is the band profile's elliptic cylinder (plain
  fabric; its marker plates are drawn afterwards by ``render.SceneRenderer``).

Rendering: per pixel ray casting for the analytic shapes, a painter's ID
buffer for the face mesh, z-buffer composition, Lambert shading, a light
anti-aliasing blur. The same camera model as everywhere
(``vision/capture/camera.py``), so the markers drawn afterwards (head band,
handpiece) and the truth agree to the micrometre with the body.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.rigid import RigidPose

_LIGHT = np.array([-0.35, -0.55, -0.75])  # towards the light, camera frame (up-left, in front)
_LIGHT = _LIGHT / np.linalg.norm(_LIGHT)
FACE_OVER_CRANIUM_MM = 30.0  # the face mesh is drawn over the cranium it lies this far behind
NECK_LENGTH_MM = 260.0  # the neck cylinder runs this far down (head frame y), out of the picture


def _blur_wrap(a: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """Gaussian blur of a periodic image (wraps around both edges)."""
    sy = sx if sy is None else sy
    py, px = min(a.shape[0], int(3 * sy) + 1), min(a.shape[1], int(3 * sx) + 1)
    big = np.pad(a, ((py, py), (px, px)), mode="wrap")
    return cv2.GaussianBlur(big, (0, 0), sigmaX=sx, sigmaY=sy)[py:py + a.shape[0], px:px + a.shape[1]]


def _noise(shape: tuple[int, int], rng: np.random.Generator, sigmas: tuple[float, ...],
           weights: tuple[float, ...]) -> np.ndarray:
    """Sum of blurred white noises (wrapping borders), each scaled to unit std, weighted."""
    out = np.zeros(shape, np.float32)
    for s, w in zip(sigmas, weights):
        n = rng.normal(0, 1, shape).astype(np.float32)
        n = _blur_wrap(n, s) if s > 0 else n
        out += w * n / max(float(n.std()), 1e-6)
    return out


def _ellipsoid_hit(o: np.ndarray, D: np.ndarray, centre, axes) -> np.ndarray:
    """Nearest positive ray parameter per ray (inf on a miss); D (N, 3) in the ellipsoid's frame, o (3,)."""
    c, a = np.asarray(centre, float), np.asarray(axes, float)
    oo, dd = (o - c) / a, D / a
    A = np.einsum("ij,ij->i", dd, dd)
    B = 2 * dd @ oo
    C = float(oo @ oo - 1)
    disc = B * B - 4 * A * C
    s = np.full(len(D), np.inf)
    ok = disc >= 0
    sq = np.sqrt(np.where(ok, disc, 0))
    s1 = (-B - sq) / (2 * A)
    s2 = (-B + sq) / (2 * A)
    s_ok = np.where(s1 > 0, s1, np.where(s2 > 0, s2, np.inf))
    s[ok] = s_ok[ok]
    return s


def _vcyl_hit(o: np.ndarray, D: np.ndarray, x0: float, z0: float, ax: float, az: float) -> tuple[np.ndarray, np.ndarray]:
    """Both ray parameters (near, far) on an elliptic cylinder about a vertical axis (inf on a miss)."""
    ox, oz = (o[0] - x0) / ax, (o[2] - z0) / az
    dx, dz = D[:, 0] / ax, D[:, 2] / az
    A = dx * dx + dz * dz
    B = 2 * (ox * dx + oz * dz)
    C = ox * ox + oz * oz - 1
    disc = B * B - 4 * A * C
    ok = (disc >= 0) & (A > 1e-15)
    sq = np.sqrt(np.where(ok, disc, 0))
    A = np.where(ok, A, 1)
    s1 = np.where(ok, (-B - sq) / (2 * A), np.inf)
    s2 = np.where(ok, (-B + sq) / (2 * A), np.inf)
    return s1, s2


def _bilinear(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Colours (N, 3) of `img` at sub-pixel points (N, 2), clamped at the border."""
    h, w = img.shape[:2]
    x = np.clip(xy[:, 0], 0, w - 1.001)
    y = np.clip(xy[:, 1], 0, h - 1.001)
    x0, y0 = x.astype(np.int64), y.astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    f = img.astype(np.float32)
    return ((f[y0, x0] * (1 - fx) + f[y0, x0 + 1] * fx) * (1 - fy)
            + (f[y0 + 1, x0] * (1 - fx) + f[y0 + 1, x0 + 1] * fx) * fy)


def _first_valid(candidates: list[np.ndarray]) -> np.ndarray:
    out = np.full(len(candidates[0]), np.inf)
    for s in candidates:
        out = np.minimum(out, np.where(s > 0, s, np.inf))
    return out


class HeadScene:
    """Renders the client for a given head pose (and band pose); textures are made once."""

    def __init__(self, camera: CameraModel, surfaces: dict, atlas, canonical_mm: np.ndarray, triangles: np.ndarray,
                 face_photo: np.ndarray, face_photo_landmarks: np.ndarray, background: np.ndarray, *, seed: int = 0):
        self.camera = camera
        self.surfaces = surfaces
        self.atlas = atlas
        self.V = np.asarray(canonical_mm, float)
        self.tri = np.asarray(triangles, np.int64)
        w, h = camera.size
        self.size = (w, h)
        rng = np.random.default_rng(seed)
        # rays through every pixel centre (undistorted), camera frame
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        pts = np.stack([xs.ravel(), ys.ravel()], 1).reshape(-1, 1, 2)
        und = cv2.undistortPoints(pts, camera.K, camera.dist).reshape(-1, 2)
        self.D = np.c_[und, np.ones(len(und))]
        self.background = cv2.resize(background, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        self.photo = face_photo
        self.photo_uv = np.asarray(face_photo_landmarks, np.float32)[:, :2]
        # skin colour: the photo's cheeks (around landmarks 50 and 280)
        patches = [face_photo[int(y) - 4:int(y) + 5, int(x) - 4:int(x) + 5].reshape(-1, 3)
                   for x, y in self.photo_uv[[50, 280, 101, 330]]]
        self.skin_bgr = np.median(np.vstack(patches), axis=0).astype(np.float32)
        self.skin_tex = _noise((256, 256), rng, (0.8, 6.0, 30.0), (0.35, 0.5, 0.6))  # ~1 px per mm
        self.hair_tex = self._hair_texture(rng)
        self.cloth_tex = _noise((256, 256), rng, (0.6, 3.0), (0.5, 0.5))
        self._atlas_surface: np.ndarray | None = None

    # -- textures ----------------------------------------------------------------------------------------
    @staticmethod
    def _hair_texture(rng: np.random.Generator) -> np.ndarray:
        """Strands along the meridians: noise stretched in phi, over (phi rows, theta columns)."""
        n = rng.normal(0, 1, (256, 1024)).astype(np.float32)
        n = _blur_wrap(n, 0.7, 9.0)
        n /= max(float(n.std()), 1e-6)
        low = _noise((256, 1024), rng, (25.0,), (1.0,))
        return 0.7 * n + 0.3 * low

    def _skin(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Skin colour (N, 3) at surface coordinates in mm."""
        iu = np.mod(np.round(u).astype(np.int64), 256)
        iv = np.mod(np.round(v).astype(np.int64), 256)
        n = self.skin_tex[iv, iu]
        return self.skin_bgr[None, :] * (1.0 + 0.06 * n[:, None])

    # -- rendering ---------------------------------------------------------------------------------------
    def render(self, head: RigidPose, band: RigidPose | None = None, band_half_axes_mm=(95.0, 110.0),
               band_half_height_mm: float = 18.0, neck: RigidPose | None = None,
               neck_twist: Callable[[np.ndarray], np.ndarray] | None = None,
               chest: RigidPose | None = None) -> np.ndarray:
        """The image (BGR uint8) of the client at this head pose, markers not included.

        `neck`: the frame the neck cylinder stands in (default the head's: the neck carried by the head); with the
        head turning about the neck's axis on a still torso, the torso's. `neck_twist`: the skin's rotation about
        the neck's axis (radians) at each height y (mm, that frame): a neck twisting under a turned head.
        `chest`: the torso's frame, to draw the chart's décolletage plane below the notch in it (None: not drawn)."""
        w, h = self.size
        n = w * h
        depth = np.full(n, np.inf)
        colour = np.zeros((n, 3), np.float32)
        normal = np.zeros((n, 3))
        kind = np.zeros(n, np.int8)  # 0 background, 1 lit surface, 2 face photo (lit less: it has its own light)
        D = self.D

        def take(s: np.ndarray, mask: np.ndarray, col: np.ndarray, nrm: np.ndarray, k: int,
                 tolerance_mm: float = 0.0) -> None:
            idx = np.flatnonzero(mask)
            z = s[idx] * D[idx, 2]
            better = z < depth[idx] + tolerance_mm
            idx = idx[better]
            depth[idx] = z[better]
            colour[idx] = col[better]
            normal[idx] = nrm[better]
            kind[idx] = k

        # Rays are cast only in the columns the head (and band) can cover: a sphere of 150 mm about the cranium.
        sel = self._columns(head)
        Ds = D[sel]

        def take_roi(idx: np.ndarray, s: np.ndarray, col: np.ndarray, nrm: np.ndarray) -> None:
            """Hits of the analytic shapes: idx indexes the selected rays, s their ray parameters."""
            full = sel[idx]
            z = s[idx] * Ds[idx, 2]
            better = z < depth[full]
            full = full[better]
            depth[full] = z[better]
            colour[full] = col[better]
            normal[full] = nrm[better]
            kind[full] = 1

        self._neck(neck if neck is not None else head, Ds, take_roi, neck_twist)
        if chest is not None:
            self._chest(chest, Ds, take_roi)
        self._cranium(head, Ds, take_roi)
        self._face(head, take)
        if band is not None:
            self._band(band, Ds, take_roi, band_half_axes_mm, band_half_height_mm)
        # shading
        img = self.background.reshape(-1, 3).copy()
        fg = kind > 0
        lam = np.clip(normal[fg] @ _LIGHT, 0, 1)
        amb = np.where(kind[fg] == 2, 0.8, 0.45)
        shade = amb + (1 - amb) * lam
        img[fg] = colour[fg] * shade[:, None]
        out = np.clip(img, 0, 255).reshape(h, w, 3)
        return np.asarray(cv2.GaussianBlur(out, (0, 0), 0.55)).astype(np.uint8)

    @staticmethod
    def _take_sub(take, idx: np.ndarray, s: np.ndarray, col: np.ndarray, nrm: np.ndarray) -> None:
        take(idx, s, col, nrm)  # idx: hit rays in index order, col and nrm one row per hit

    def _columns(self, head: RigidPose, radius_mm: float = 150.0) -> np.ndarray:
        """Flat pixel indices of the image columns a sphere about the cranium's centre can cover."""
        w, h = self.size
        c = head.apply(np.asarray(self.surfaces["scalp"]["centre_mm"], float)[None, :])[0]
        if c[2] <= radius_mm:
            return np.arange(w * h)
        x = self.camera.K[0, 0] * c[0] / c[2] + self.camera.K[0, 2]
        r = self.camera.K[0, 0] * radius_mm / np.sqrt(c[2] ** 2 - radius_mm ** 2) + 8.0
        x0, x1 = int(max(0, np.floor(x - r))), int(min(w, np.ceil(x + r)))
        cols = np.arange(x0, x1)
        return (np.arange(h)[:, None] * w + cols[None, :]).ravel()
    def _cranium(self, head: RigidPose, D: np.ndarray, take) -> None:
        sc = self.surfaces["scalp"]
        o = -head.R.T @ head.t_mm
        d = D @ head.R
        s = _ellipsoid_hit(o, d, sc["centre_mm"], sc["semi_axes_mm"])
        idx = np.flatnonzero(np.isfinite(s))
        if idx.size == 0:
            return
        p = o + s[idx, None] * d[idx]
        c, a = np.asarray(sc["centre_mm"], float), np.asarray(sc["semi_axes_mm"], float)
        nrm = (p - c) / a ** 2
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        q = (p - c) / a
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        theta = np.arctan2(q[:, 0], -q[:, 2])
        phi = np.arcsin(np.clip(-q[:, 1], -1, 1))
        uv = self._scalp_uv(p, sc)
        hair = self._hair_mask(uv, theta, phi)
        col = self._skin(uv[:, 0], uv[:, 1])
        r = np.clip(((phi + np.pi / 2) / np.pi * 255).astype(int), 0, 255)
        cidx = np.clip(((theta + np.pi) / (2 * np.pi) * 1023).astype(int), 0, 1023)
        hn = self.hair_tex[r, cidx]
        col[hair] = np.array([38, 45, 58], np.float32)[None, :] * (1 + 0.35 * hn[hair, None])
        self._take_sub(take, idx, s, col, nrm @ head.R.T)

    @staticmethod
    def _scalp_uv(p: np.ndarray, sc: dict) -> np.ndarray:
        c, a = np.asarray(sc["centre_mm"], float), np.asarray(sc["semi_axes_mm"], float)
        q = (p - c) / a
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        theta = np.arctan2(q[:, 0], -q[:, 2])
        phi = np.arcsin(np.clip(-q[:, 1], -1, 1))
        phi_top = (sc["v_offset_mm"] - sc["v_top_mm"]) / sc["meridian_radius_mm"]
        u = sc["equator_radius_mm"] * theta * np.cos(phi) / max(np.cos(phi_top), 1e-6)
        v = sc["v_offset_mm"] - sc["meridian_radius_mm"] * phi
        return np.c_[u, v]

    def _hair_mask(self, uv: np.ndarray, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Hair on the scalp zones, skin on the face and forehead cap, the ears and below the nape line."""
        g = self.atlas.grid
        j = np.clip(np.round((uv[:, 0] - g.u0_mm) / g.cell_mm).astype(int), 0, g.width - 1)
        i = np.clip(np.round((uv[:, 1] - g.v0_mm) / g.cell_mm).astype(int), 0, g.height - 1)
        lab = self.atlas.labels[i, j]
        if self._atlas_surface is None:
            surf = np.zeros(len(self.atlas.zones) + 1, np.int8)
            for z in self.atlas.zones.values():
                surf[z.label] = {"face": 1, "scalp": 2}.get(z.surface, 3)
            self._atlas_surface = surf
        s = self._atlas_surface[lab]
        hair = (s == 2) | ((lab == 0) & (np.abs(theta) > np.radians(95)) & (phi > np.radians(-38)))
        hair |= (lab == 0) & (phi > np.radians(35))
        ear = (np.abs(np.abs(theta) - np.radians(92)) < np.radians(9)) & (np.abs(phi - np.radians(2)) < np.radians(17))
        return hair & ~ear

    def _band(self, band: RigidPose, D: np.ndarray, take, axes, half_h: float) -> None:
        o = -band.R.T @ band.t_mm
        d = D @ band.R
        s1, s2 = _vcyl_hit(o, d, 0.0, 0.0, axes[0], axes[1])
        cands = []
        for s in (s1, s2):
            y = o[1] + np.where(np.isfinite(s), s, 0.0) * d[:, 1]  # a miss (inf) is dropped by s below anyway
            cands.append(np.where((s > 0) & (np.abs(y) <= half_h), s, np.inf))
        s = _first_valid(cands)
        idx = np.flatnonzero(np.isfinite(s))
        if idx.size == 0:
            return
        p = o + s[idx, None] * d[idx]
        nrm = np.c_[p[:, 0] / axes[0] ** 2, np.zeros(len(p)), p[:, 2] / axes[1] ** 2]
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        col = np.tile(np.array([62, 60, 58], np.float32), (len(p), 1))
        self._take_sub(take, idx, s, col, nrm @ band.R.T)

    # -- meshes ------------------------------------------------------------------------------------------
    def _raster(self, pts_cam: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Painter's ID buffer: (pixel indices, triangle per pixel, barycentric (N,3), depth) of front faces."""
        w, h = self.size
        px, _ = cv2.projectPoints(pts_cam.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), self.camera.K,
                                  self.camera.dist)
        px = px.reshape(-1, 2)
        p = px[tris]
        e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        zt = pts_cam[tris, 2]
        front = np.flatnonzero((det < -1e-9) & (zt.min(1) > 1.0))
        order = front[np.argsort(-zt[front].mean(1))]
        ids = np.zeros((h, w), np.int32)
        for k in order:
            cv2.fillConvexPoly(ids, np.round(p[k] * 16).astype(np.int32), int(k) + 1, lineType=cv2.LINE_8, shift=4)
        flat = ids.ravel()
        pix = np.flatnonzero(flat)
        if pix.size == 0:
            return pix, pix, np.zeros((0, 3)), np.zeros(0)
        t = flat[pix] - 1
        q = np.c_[pix % w, pix // w].astype(np.float64)
        a = p[t, 0]
        E1, E2 = p[t, 1] - a, p[t, 2] - a
        dt = E1[:, 0] * E2[:, 1] - E1[:, 1] * E2[:, 0]
        dq = q - a
        l1 = (dq[:, 0] * E2[:, 1] - dq[:, 1] * E2[:, 0]) / dt
        l2 = (E1[:, 0] * dq[:, 1] - E1[:, 1] * dq[:, 0]) / dt
        bary = np.clip(np.c_[1 - l1 - l2, l1, l2], 0, 1)
        bary /= bary.sum(1, keepdims=True)
        z = np.einsum("ni,ni->n", bary, zt[t])
        return pix, t, bary, z

    def _face(self, head: RigidPose, take) -> None:
        pts = head.apply(self.V)
        pix, t, bary, z = self._raster(pts, self.tri)
        if pix.size == 0:
            return
        uv = np.einsum("ni,nij->nj", bary, self.photo_uv[self.tri[t]])
        col = _bilinear(self.photo, uv)
        pv = pts[self.tri[t]]
        nrm = np.cross(pv[:, 1] - pv[:, 0], pv[:, 2] - pv[:, 0])
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
        nrm = np.where((nrm[:, 2:3] > 0), -nrm, nrm)  # towards the camera
        s = np.zeros(self.size[0] * self.size[1])
        s[pix] = z / self.D[pix, 2]
        mask = np.zeros(len(s), bool)
        mask[pix] = True
        # The scalp ellipsoid bulges a little through the eye sockets and temples: the face wins there.
        take(s, mask, col, nrm, 2, FACE_OVER_CRANIUM_MM)

    def _chest(self, torso: RigidPose, D: np.ndarray, take, half_width_mm: float = 150.0) -> None:
        """The chart's décolletage plane (``surfaces.decolletage``) in the torso's frame: flat skin from the notch
        down, in front of the neck cylinder's lower part."""
        dec = self.surfaces["decolletage"]
        o = -torso.R.T @ torso.t_mm
        d = D @ torso.R
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (float(dec["plane_z_mm"]) - o[2]) / d[:, 2]
        p = o + np.where(np.isfinite(s), s, 0.0)[:, None] * d
        hit = (np.isfinite(s) & (s > 0) & (p[:, 1] >= float(dec["y_top_mm"])) & (p[:, 1] <= float(dec["y_bottom_mm"]))
               & (np.abs(p[:, 0]) <= half_width_mm))
        idx = np.flatnonzero(hit)
        if idx.size == 0:
            return
        nrm = np.tile(np.array([0.0, 0.0, -1.0]), (idx.size, 1))
        col = self._skin(p[idx, 0], p[idx, 1])
        self._take_sub(take, idx, np.where(hit, s, np.inf), col, nrm @ torso.R.T)

    def _neck(self, head: RigidPose, D: np.ndarray, take,
              twist: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """The chart's neck cylinder in the frame `head` (the head's, or the torso's), from under the jaw down past
        the image; its skin turned by `twist(y)` radians about the axis."""
        nk = self.surfaces["neck"]
        o = -head.R.T @ head.t_mm
        d = D @ head.R
        r = float(nk["radius_mm"])
        s1, s2 = _vcyl_hit(o, d, float(nk["axis_x_mm"]), float(nk["axis_z_mm"]), r, r)
        cands = []
        for s in (s1, s2):
            y = o[1] + np.where(np.isfinite(s), s, 0.0) * d[:, 1]  # a miss (inf) is dropped by s below anyway
            cands.append(np.where((s > 0) & (y >= float(nk["y_top_mm"])) & (y <= NECK_LENGTH_MM), s, np.inf))
        s = _first_valid(cands)
        idx = np.flatnonzero(np.isfinite(s))
        if idx.size == 0:
            return
        p = o + s[idx, None] * d[idx]
        nrm = np.c_[p[:, 0] - nk["axis_x_mm"], np.zeros(len(p)), p[:, 2] - nk["axis_z_mm"]] / r
        angle = np.arctan2(p[:, 0] - nk["axis_x_mm"], nk["axis_z_mm"] - p[:, 2])
        if twist is not None:
            angle = angle + twist(p[:, 1])  # a point turned by +a about +y moves from chart angle alpha to alpha - a
        col = self._skin(r * angle, p[:, 1])
        self._take_sub(take, idx, s, col, nrm @ head.R.T)
