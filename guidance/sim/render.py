"""Render marker bodies (handpiece clip, head band, ChArUco board) into real video frames, with exact ground truth.

Tests, the demo and the simulator need frames where the true tip is known to
the micrometre. We project with the very camera model the tracker is given
(`cv2.projectPoints`, distortion included), so any error the tracker shows is
its own. Realism where it matters for a marker tracker: perspective, sub-pixel
edges (supersampled rendering), motion blur (the rendering is averaged over
poses spread across the exposure), sensor noise, shading and partial occlusion
by a skin-coloured finger.

Pixel convention: OpenCV's (integer coordinates are pixel centres) throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.handpiece.marker_body import MarkerBody
from guidance.vision.handpiece.designs import CharucoDesign, marker_tile
from guidance.vision.handpiece.profiles import HandpieceProfile
from guidance.vision.rigid import RigidPose, rotation_aligning

_MARKER_TEX_PX = 120  # 6 cells x 20 px: exact cell edges for 4x4 markers
_SKIN_BGR = (120, 150, 205)
_SHAFT_BGR = (95, 95, 100)


@dataclass
class SceneItem:
    """One rigid body in the scene at its mid-exposure pose."""

    body: MarkerBody
    pose: RigidPose
    plate_mm: dict[int, float] | None = None  # white plate side per marker (default 28/22 x marker)
    tip_offset_mm: np.ndarray | None = None
    shaft_diameter_mm: float = 0.0  # 0: no shaft drawn
    shaft_rear_z_mm: float = 0.0
    linear_velocity_mm_s: np.ndarray = field(default_factory=lambda: np.zeros(3))
    angular_velocity_rad_s: np.ndarray = field(default_factory=lambda: np.zeros(3))  # camera frame
    rotate_about_tip: bool = False  # pivot motion: rotation about the tip rather than the body origin
    occlude: dict[int, float] = field(default_factory=dict)  # id -> hidden fraction of the marker (1 = all)
    hide_all: bool = False  # a hand covers the whole body


@dataclass
class GroundTruth:
    pose: RigidPose
    tip_mm: np.ndarray | None  # camera frame
    tip_px: np.ndarray | None  # distorted image, pixels
    corners_px: dict[int, np.ndarray]  # id -> (4, 2) of every marker facing the camera
    visible_ids: list[int]  # facing the camera, inside the image and not hidden
    facing_cos: dict[int, float]  # id -> cos(angle between marker normal and view ray)


def handpiece_item(profile: HandpieceProfile, pose: RigidPose, **kw) -> SceneItem:
    plate = {i: profile.body.size_mm[i] * 28.0 / 22.0 for i in profile.body.ids}
    if profile.raw:
        plate.update({m["id"]: m["plate_mm"] for m in profile.raw.get("markers", []) if "plate_mm" in m})
    return SceneItem(profile.body, pose, plate, profile.tip_offset_mm.copy(), profile.shaft_diameter_mm,
                     profile.shaft_rear_z_mm, **kw)


def blur_samples(profile: HandpieceProfile, depth_mm: float, fx: float, exposure_s: float,
                 linear_mm_s: np.ndarray, angular_rad_s: np.ndarray, spacing_px: float = 1.5,
                 max_samples: int = 12) -> int:
    """Poses to spread over the exposure so the markers smear instead of doubling.

    The farthest marker corner from the tip (the handpiece turns about its tip) moves
    |v| + |w| * lever; one sample per `spacing_px` of that path on the image.
    """
    lever = float(np.max(np.linalg.norm(np.concatenate(list(profile.body.corners_mm.values()))
                                        - profile.tip_offset_mm, axis=1)))
    speed = float(np.linalg.norm(linear_mm_s)) + float(np.linalg.norm(angular_rad_s)) * lever
    path_px = speed * fx / max(depth_mm, 1.0) * exposure_s
    return int(np.clip(np.ceil(path_px / spacing_px) + 1, 1, max_samples))


def pose_with_tip_at(profile: HandpieceProfile, tip_cam_mm: np.ndarray, axis_cam: np.ndarray,
                     roll_rad: float = 0.0) -> RigidPose:
    """The handpiece pose whose tip is at `tip_cam_mm` and whose shaft (+z, towards the tip) points along `axis_cam`."""
    axis = np.asarray(axis_cam, dtype=float)
    axis = axis / np.linalg.norm(axis)
    R = rotation_aligning(np.array([0.0, 0.0, 1.0]), axis) @ cv2.Rodrigues(np.array([0.0, 0.0, roll_rad]))[0]
    t = np.asarray(tip_cam_mm, dtype=float) - R @ profile.tip_offset_mm
    return RigidPose(R, t)


class SceneRenderer:
    """Draws marker bodies into frames of one camera. Stateless between frames apart from caches."""

    def __init__(self, camera: CameraModel, supersample: int = 2):
        self.camera = camera
        self.ss = int(supersample)
        ss = self.ss
        S = np.array([[ss, 0, (ss - 1) / 2.0], [0, ss, (ss - 1) / 2.0], [0, 0, 1.0]])
        self._K_ss = S @ camera.K
        self._has_dist = bool(np.any(np.abs(camera.dist) > 0))
        self._dist_maps: tuple[np.ndarray, np.ndarray] | None = None
        self._tiles: dict[tuple[str, int, int], np.ndarray] = {}

    # -- public ---------------------------------------------------------------------------

    def render(self, background: np.ndarray, items: list[SceneItem], *, exposure_s: float = 0.0,
               blur_samples: int = 5, noise_sigma: float = 0.0,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, list[GroundTruth]]:
        w, h = self.camera.size
        if background.shape[:2] != (h, w):
            raise ValueError(f"background is {background.shape[1]}x{background.shape[0]}, camera is {w}x{h}")
        n = max(1, blur_samples) if exposure_s > 0 else 1
        acc_c = np.zeros((h * self.ss, w * self.ss, 3), np.float32)
        acc_a = np.zeros((h * self.ss, w * self.ss), np.float32)
        for k in range(n):
            dt = (k / (n - 1) - 0.5) * exposure_s if n > 1 else 0.0
            col: np.ndarray = np.zeros_like(acc_c)
            alpha: np.ndarray = np.zeros_like(acc_a)
            for item in items:
                self._draw_item(col, alpha, item, self._pose_at(item, dt))
            acc_c += col
            acc_a += alpha
        acc_c /= n
        acc_a /= n
        col = cv2.resize(acc_c, (w, h), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(acc_a, (w, h), interpolation=cv2.INTER_AREA)
        if self._has_dist:
            mx, my = self._distortion_maps()
            col = cv2.remap(col, mx, my, cv2.INTER_LINEAR, borderValue=0)
            alpha = cv2.remap(alpha, mx, my, cv2.INTER_LINEAR, borderValue=0)
        out = background.astype(np.float32) * (1.0 - alpha[..., None]) + col
        if noise_sigma > 0:
            rng = rng or np.random.default_rng(0)
            out += rng.normal(0.0, noise_sigma, out.shape).astype(np.float32)
        image = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        return image, [self._truth(item) for item in items]

    def render_charuco(self, background: np.ndarray, design: CharucoDesign, pose: RigidPose, *,
                       noise_sigma: float = 0.0, rng: np.random.Generator | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """The board (origin at its top-left corner, as OpenCV defines it) at `pose`; returns image and
        the true chessboard-corner pixels in OpenCV's corner-id order."""
        w, h = self.camera.size
        key = ("charuco", design.squares_x, design.squares_y)
        px_per_mm = 8.0
        bw, bh = design.size_mm
        if key not in self._tiles:
            self._tiles[key] = design.board().generateImage((int(bw * px_per_mm), int(bh * px_per_mm)), marginSize=0)
        tex = self._tiles[key]
        src = np.array([[-0.5, -0.5], [tex.shape[1] - 0.5, -0.5], [tex.shape[1] - 0.5, tex.shape[0] - 0.5],
                        [-0.5, tex.shape[0] - 0.5]], np.float32)
        obj = np.array([[0, 0, 0], [bw, 0, 0], [bw, bh, 0], [0, bh, 0]], float)
        col: np.ndarray = np.zeros((h * self.ss, w * self.ss, 3), np.float32)
        alpha: np.ndarray = np.zeros((h * self.ss, w * self.ss), np.float32)
        # A white margin of one square around the board, as printed.
        m = design.square_mm
        margin = np.array([[-m, -m, 0], [bw + m, -m, 0], [bw + m, bh + m, 0], [-m, bh + m, 0]], float)
        self._fill_quad(col, alpha, self._project_ss(pose.apply(margin)), (235, 235, 235))
        self._warp_into(col, alpha, tex, src, self._project_ss(pose.apply(obj)), shade=1.0)
        col = cv2.resize(col, (w, h), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
        if self._has_dist:
            mx, my = self._distortion_maps()
            col = cv2.remap(col, mx, my, cv2.INTER_LINEAR)
            alpha = cv2.remap(alpha, mx, my, cv2.INTER_LINEAR)
        out = background.astype(np.float32) * (1.0 - alpha[..., None]) + col
        if noise_sigma > 0:
            rng = rng or np.random.default_rng(0)
            out += rng.normal(0.0, noise_sigma, out.shape).astype(np.float32)
        corners3d = np.asarray(design.board().getChessboardCorners())  # (N, 3) float32
        truth = self.project(pose.apply(corners3d))
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), truth

    def project(self, points_cam_mm: np.ndarray) -> np.ndarray:
        """Camera-frame points -> distorted pixels, the exact ground-truth projection."""
        pts = np.asarray(points_cam_mm, dtype=np.float64).reshape(-1, 3)
        px, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), self.camera.K, self.camera.dist)
        return px.reshape(-1, 2)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _pose_at(item: SceneItem, dt: float) -> RigidPose:
        if dt == 0.0:
            return item.pose
        about = item.pose.apply(item.tip_offset_mm) if (item.rotate_about_tip and item.tip_offset_mm is not None) else None
        return item.pose.advanced(item.linear_velocity_mm_s, item.angular_velocity_rad_s, dt, about)

    def _project_ss(self, pts_cam: np.ndarray) -> np.ndarray:
        p = pts_cam @ self._K_ss.T
        return (p[:, :2] / p[:, 2:3]).astype(np.float32)

    def _tile(self, dictionary: str, marker_id: int, plate_ratio: float) -> tuple[np.ndarray, int]:
        plate_px = _MARKER_TEX_PX + 2 * int(round((plate_ratio - 1.0) * _MARKER_TEX_PX / 2))
        key = (dictionary, marker_id, plate_px)
        if key not in self._tiles:
            self._tiles[key] = marker_tile(dictionary, marker_id, _MARKER_TEX_PX, plate_px)
        return self._tiles[key], (plate_px - _MARKER_TEX_PX) // 2

    @staticmethod
    def _facing(body: MarkerBody, pose: RigidPose, marker_id: int) -> float:
        n = pose.R @ body.normal(marker_id)
        c = pose.apply(body.centre_mm(marker_id))
        return float(np.dot(n, -c) / np.linalg.norm(c))

    def _draw_item(self, col: np.ndarray, alpha: np.ndarray, item: SceneItem, pose: RigidPose) -> None:
        body = item.body
        if item.shaft_diameter_mm > 0 and item.tip_offset_mm is not None:
            self._draw_shaft(col, alpha, item, pose)
        order = sorted(body.ids, key=lambda i: -pose.apply(body.centre_mm(i))[2])  # far first
        for mid in order:
            cos_view = self._facing(body, pose, mid)
            corners_cam = pose.apply(body.corners_mm[mid])
            if cos_view <= 0.02 or corners_cam[:, 2].min() < 10.0:
                continue
            ratio = (item.plate_mm or {}).get(mid, body.size_mm[mid] * 28.0 / 22.0) / body.size_mm[mid]
            tile, o = self._tile(body.dictionary, mid, ratio)
            m = _MARKER_TEX_PX
            src = np.array([[o - 0.5, o - 0.5], [o + m - 0.5, o - 0.5], [o + m - 0.5, o + m - 0.5],
                            [o - 0.5, o + m - 0.5]], np.float32)
            shade = 0.55 + 0.45 * cos_view
            self._warp_into(col, alpha, tile, src, self._project_ss(corners_cam), shade)
            frac = 1.0 if item.hide_all else item.occlude.get(mid, 0.0)
            if frac > 0:
                self._draw_finger(col, alpha, body, pose, mid, frac, ratio)

    def _warp_into(self, col, alpha, tile, src_pts, dst_pts, shade) -> None:
        H = cv2.getPerspectiveTransform(src_pts, dst_pts.astype(np.float32))
        th, tw = tile.shape[:2]
        outline = cv2.perspectiveTransform(
            np.array([[[-0.5, -0.5], [tw - 0.5, -0.5], [tw - 0.5, th - 0.5], [-0.5, th - 0.5]]], np.float32), H)[0]
        x0, y0 = np.floor(outline.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(outline.max(axis=0)).astype(int) + 2
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, col.shape[1]), min(y1, col.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        T = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]]) @ H
        size = (int(x1 - x0), int(y1 - y0))
        tex = cv2.warpPerspective(tile.astype(np.float32) * shade, T, size, flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mask = cv2.warpPerspective(np.ones(tile.shape[:2], np.float32), T, size, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        roi_c = col[y0:y1, x0:x1]
        roi_a = alpha[y0:y1, x0:x1]
        keep = (1.0 - mask)
        tex3 = tex if tex.ndim == 3 else np.repeat(tex[..., None], 3, axis=2)
        roi_c *= keep[..., None]
        roi_c += tex3  # the warped mask already weights the texture's edge pixels
        roi_a *= keep
        roi_a += mask

    def _fill_quad(self, col, alpha, pts, bgr) -> None:
        """A solid polygon at the supersampled resolution (anti-aliased by the final downsampling)."""
        poly = np.round(pts * 16).astype(np.int32)
        mask = np.zeros(alpha.shape, np.uint8)
        cv2.fillPoly(mask, [poly], 1, lineType=cv2.LINE_8, shift=4)
        m = mask.astype(bool)
        col[m] = bgr
        alpha[m] = 1.0

    def _draw_shaft(self, col, alpha, item: SceneItem, pose: RigidPose) -> None:
        a = pose.apply(np.array([[0, 0, item.shaft_rear_z_mm], item.tip_offset_mm], float))
        if a[:, 2].min() < 10.0:
            return
        p = self._project_ss(a)
        d = p[1] - p[0]
        if np.linalg.norm(d) < 1e-6:
            d = np.array([1.0, 0.0])
        perp = np.array([-d[1], d[0]]) / np.linalg.norm(d)
        f = self._K_ss[0, 0]
        r0 = f * item.shaft_diameter_mm / 2 / a[0, 2]
        r1 = f * item.shaft_diameter_mm / 2 / a[1, 2] * 0.5  # the body tapers towards the electrode
        quad = np.array([p[0] + perp * r0, p[1] + perp * r1, p[1] - perp * r1, p[0] - perp * r0])
        self._fill_quad(col, alpha, quad, _SHAFT_BGR)

    def _draw_finger(self, col, alpha, body: MarkerBody, pose: RigidPose, mid: int, frac: float, ratio: float) -> None:
        """A skin-coloured band across the marker covering `frac` of its width from the left edge."""
        c = body.corners_mm[mid]
        centre = c.mean(axis=0)
        grow = ratio * 1.15
        g = centre + (c - centre) * grow  # slightly beyond the plate
        left = [g[0], g[3]]
        right = [g[1], g[2]]
        frac = min(max(frac, 0.0), 1.0)
        # Marker-relative split: map the fraction of the black square onto the grown quad.
        s = 0.5 + (frac - 0.5) / grow if frac < 1.0 else 1.0
        top = left[0] + (right[0] - left[0]) * s
        bot = left[1] + (right[1] - left[1]) * s
        quad = np.array([left[0], top, bot, left[1]])
        lift = pose.R @ body.normal(mid) * 2.0  # a finger lies on top of the plate
        self._fill_quad(col, alpha, self._project_ss(pose.apply(quad) + lift), _SKIN_BGR)

    def _truth(self, item: SceneItem) -> GroundTruth:
        w, h = self.camera.size
        pose = item.pose
        corners, visible, facing = {}, [], {}
        for mid in item.body.ids:
            cos_view = self._facing(item.body, pose, mid)
            if cos_view <= 0.02:
                continue
            facing[mid] = cos_view
            px = self.project(pose.apply(item.body.corners_mm[mid]))
            corners[mid] = px
            inside = bool(np.all((px[:, 0] >= 0) & (px[:, 0] <= w - 1) & (px[:, 1] >= 0) & (px[:, 1] <= h - 1)))
            hidden = item.hide_all or item.occlude.get(mid, 0.0) > 0
            if inside and not hidden:
                visible.append(mid)
        tip_mm = tip_px = None
        if item.tip_offset_mm is not None:
            tip_mm = pose.apply(item.tip_offset_mm.reshape(1, 3))[0]
            tip_px = self.project(tip_mm)[0]
        return GroundTruth(pose, tip_mm, tip_px, corners, visible, facing)

    def _distortion_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """For each distorted output pixel, where it sits in the ideal pinhole image."""
        if self._dist_maps is None:
            w, h = self.camera.size
            xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            pts = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2)
            und = cv2.undistortPoints(pts, self.camera.K, self.camera.dist, R=None, P=self.camera.K,
                                    criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-6))
            und = und.reshape(h, w, 2)
            self._dist_maps = (und[..., 0].astype(np.float32), und[..., 1].astype(np.float32))
        return self._dist_maps


def fit_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize-and-crop a video frame to `size` (w, h) keeping its aspect ratio (no black bars)."""
    w, h = size
    ih, iw = image.shape[:2]
    s = max(w / iw, h / ih)
    r = cv2.resize(image, (int(np.ceil(iw * s)), int(np.ceil(ih * s))), interpolation=cv2.INTER_LINEAR)
    y0 = (r.shape[0] - h) // 2
    x0 = (r.shape[1] - w) // 2
    return np.ascontiguousarray(r[y0:y0 + h, x0:x0 + w])


def sample_tip_pose(profile: HandpieceProfile, camera: CameraModel, rng: np.random.Generator,
                    depth_mm: tuple[float, float] = (300.0, 500.0), tilt_deg: tuple[float, float] = (20.0, 80.0),
                    margin: float = 0.25) -> RigidPose:
    """A plausible treatment pose: tip at 30-50 cm inside the central image area, the shaft pointing
    into the scene at `tilt_deg` from the optical axis (the practitioner's hand towards the camera)."""
    w, h = camera.size
    z = rng.uniform(*depth_mm)
    u = rng.uniform(margin * w, (1 - margin) * w)
    v = rng.uniform(margin * h, (1 - margin) * h)
    ray = np.linalg.solve(camera.K, np.array([u, v, 1.0]))
    tip = ray / ray[2] * z
    th, az = np.radians(rng.uniform(*tilt_deg)), rng.uniform(0, 2 * np.pi)
    axis = np.array([np.sin(th) * np.cos(az), np.sin(th) * np.sin(az), np.cos(th)])
    return pose_with_tip_at(profile, tip, axis, rng.uniform(0, 2 * np.pi))


def video_frames(path: str, size: tuple[int, int], limit: int | None = None) -> list[np.ndarray]:
    """Frames of a video fitted to `size`, for use as backgrounds."""
    cap = cv2.VideoCapture(str(path))
    out: list[np.ndarray] = []
    try:
        while limit is None or len(out) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            out.append(fit_frame(frame, size))
    finally:
        cap.release()
    return out
