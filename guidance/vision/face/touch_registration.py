"""Registering the head band by touching face landmarks with the handpiece's tip.

Why: the face tracker's head pose is biased, not noisy (docs/scalp.md, "What
limits the registration": 4.7 mm too far along the line of sight and 1.9 deg
of pitch on the rendered client, the same on every frame), and a band
registered through it carries that bias to every scalp point (11 mm median
chart error). Neuronavigation and image-guided hair restoration register by
touching landmarks with a tracked pointer; here the pointer is the handpiece,
whose tip lands within 0.1-0.5 mm of the truth when the head pose is right.

How: the practitioner touches five landmarks in turn and holds the tip still
on each (`TOUCH_POINTS`: mid-forehead, nasion, chin, in front of each ear). A touch
is a hold: the tip, in the band's frame (so the head may sway), stays within
`still_mm` for `hold_s`. A hold counts for the landmark asked for only near
where the face-pose registration (made first, in the same frontal frames)
expects that landmark, so a handpiece resting elsewhere is not taken for a
touch. After the last touch the rigid transform band -> head is fitted to the
five points (least squares, Kabsch); a fit whose RMS residual is above
`max_residual_mm` (a point touched wrong, or a head far from the model's
proportions) is refused and the touches start again from the first.

Plans with neck zones add a sixth touch, the sternal notch (`NOTCH_POINT`),
after the fit is accepted. It is not part of the fit (the notch is on the
torso, and a real client's is not where the canonical proportions put it): its
hold is judged in the camera's frame (the torso still, the head free to sway)
near where the fitted head puts the model's notch, and the point is handed on
with the registration (`notch_cam_mm`) to place the neck's lower end
(zones/neck_twist.py).

What it cannot see: the fit is as good as the model is to the client. On the
rendered client the head *is* the model, so the fit's error there is the
tip's and the practitioner's aim; on a real client, whose nasion-to-ear
distances differ from the canonical face's by a few mm, the residual shows
part of that mismatch and the gate's sigma is widened by it (`sigma_mm`).
The residual cannot show everything: no fit to a few points can (a miss
along a direction the fit absorbs leaves little residual); the five points
are chosen so that a 9 mm miss leaves at least 2.4 mm.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from guidance.vision.handpiece.marker_pose import BodyPose
from guidance.vision.rigid import RigidPose


@dataclass(frozen=True)
class TouchPoint:
    name: str
    words: str  # what the practitioner is asked to touch
    landmark: int  # index into the canonical face's 468 points


# Spread for leverage on the scalp, and redundancy: the ears are 135 mm apart and 75 mm behind the nasion, the chin
# 118 mm below it (the mesh point at each ear is on the face's edge at the level of the tragus' top). Five points,
# not four: with the nasion, forehead and ears alone, an ear touched 9 mm high tilts the fit (9.7 mm at the scalp)
# and leaves 1.8 mm of residual, which a steady hand's scatter also gives; the chin's lever shows it (a 9 mm miss
# anywhere leaves at least 2.4 mm of residual, and at most 6 mm at the scalp).
TOUCH_POINTS = (
    TouchPoint("forehead", "the middle of the forehead", 151),
    TouchPoint("nasion", "the nasion (between the eyes)", 168),
    TouchPoint("chin", "the chin (mouth closed)", 152),
    TouchPoint("right_ear", "in front of the right ear", 234),
    TouchPoint("left_ear", "in front of the left ear", 454),
)


# The sixth touch of a plan with neck zones: on the torso, not a face landmark (landmark -1).
NOTCH_POINT = TouchPoint("sternal_notch", "the sternal notch (the hollow above the breastbone)", -1)


@dataclass(frozen=True)
class TouchConfig:
    hold_s: float = 0.5  # the tip held still this long is a touch
    still_mm: float = 1.5  # ... within this distance of its mean, in the band's frame
    # A touch counts only this close to where the face pose's registration puts the landmark. That registration
    # carries the face pose's bias: 6-10 mm on the rendered scalp session's landmarks, 17-20 mm at the chin in the
    # neck session (the face higher in the picture, further away). 30 mm is about the most the landmarks' spacing
    # allows (forehead and nasion are 32 mm apart; a hold on the wrong one leaves a residual the fit refuses).
    expect_mm: float = 30.0
    # The fit's RMS residual above this refuses the touches: a steady hand's 1 mm scatter gives at most 1.2 mm (p99),
    # a 9 mm miss at least 2.4 mm. Not measured on real heads: one whose proportions depart from the model's by more
    # than a few mm is refused (then `--band-registration face`).
    max_residual_mm: float = 3.0
    # The notch's hold counts this close to where the fitted head puts the model's notch: necks differ in length and
    # posture by more than faces differ in proportion (not measured on real clients).
    notch_expect_mm: float = 40.0
    aim_mm: float = 2.0  # floor of the touch's localization error (3D RMS): the aim, the tip, the landmark's spot
    band_mm: float = 1.5  # the band's own error on the scalp (true registration: 0.8 mm median, 2.0 p90)

    def __post_init__(self) -> None:
        for name in ("hold_s", "still_mm", "expect_mm", "max_residual_mm", "notch_expect_mm", "aim_mm", "band_mm"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"TouchConfig.{name} must be a positive number, got {v!r}")


@dataclass(frozen=True)
class TouchFit:
    band_to_head: RigidPose  # x_band = band_to_head.apply(x_head)
    rms_mm: float
    residuals_mm: tuple[float, ...]


def fit_band_to_head(head_points: np.ndarray, band_points: np.ndarray) -> TouchFit:
    """Least-squares rigid transform with band = R @ head + t over paired points (at least 3, not collinear)."""
    a = np.asarray(head_points, float)
    b = np.asarray(band_points, float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3 or len(a) < 3:
        raise ValueError(f"need paired (N, 3) points with N >= 3, got {a.shape} and {b.shape}")
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    H = (a - ca).T @ (b - cb)
    s = np.linalg.svd(a - ca, compute_uv=False)
    if s[1] < 1e-6 * max(s[0], 1e-9):
        raise ValueError("the points are collinear: they do not fix a rotation")
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    t = cb - R @ ca
    res = np.linalg.norm((a @ R.T + t) - b, axis=1)
    return TouchFit(RigidPose(R, t), float(np.sqrt(np.mean(res ** 2))), tuple(float(x) for x in res))


def target_registration_error(fiducials: np.ndarray, targets: np.ndarray, fle_mm: float) -> np.ndarray:
    """Expected RMS error (mm) at each target of a rigid fit to `fiducials` localized with RMS error `fle_mm`
    (Fitzpatrick, West & Maurer 1998: TRE^2 = FLE^2 / N * (1 + 1/3 * sum_k d_k^2 / f_k^2), d_k the target's and
    f_k the fiducials' RMS distance from the configuration's k-th principal axis). Checked against a Monte Carlo
    of the fit in tests/vision/face/test_touch_registration.py."""
    f = np.asarray(fiducials, float)
    c = f.mean(axis=0)
    x = f - c
    axes = np.linalg.svd(x, full_matrices=False)[2]
    r = np.asarray(targets, float).reshape(-1, 3) - c
    total = np.zeros(len(r))
    for ax in axes:
        f2 = float(np.mean(np.sum(x ** 2, axis=1) - (x @ ax) ** 2))
        total += (np.sum(r ** 2, axis=1) - (r @ ax) ** 2) / f2
    return np.sqrt(fle_mm ** 2 / len(f) * (1.0 + total / 3.0))


def scalp_targets(scalp: dict, step_deg: float = 15.0) -> np.ndarray:
    """Points on the chart's scalp ellipsoid above its equator (head frame), where a touch registration's sigma must
    hold: every longitude, elevations 0-75 degrees."""
    c, a = np.asarray(scalp["centre_mm"], float), np.asarray(scalp["semi_axes_mm"], float)
    th, ph = np.meshgrid(np.radians(np.arange(-180.0, 180.0, step_deg)), np.radians(np.arange(0.0, 76.0, step_deg)))
    q = np.stack([np.sin(th) * np.cos(ph), -np.sin(ph), -np.cos(th) * np.cos(ph)], axis=-1).reshape(-1, 3)
    return c + a * q


def neck_targets(neck: dict, step_deg: float = 15.0, step_mm: float = 20.0) -> np.ndarray:
    """Points on the chart's neck cylinder (head frame at rest), its front half, from under the jaw to the notch:
    where a touch registration's sigma must hold when the band carries the neck too."""
    th, y = np.meshgrid(np.radians(np.arange(-90.0, 91.0, step_deg)),
                        np.arange(float(neck["y_top_mm"]), float(neck["y_bottom_mm"]) + 1e-6, step_mm))
    r = float(neck["radius_mm"])
    return np.stack([neck["axis_x_mm"] + r * np.sin(th), y, neck["axis_z_mm"] - r * np.cos(th)], -1).reshape(-1, 3)


class TouchRegistration:
    """Collects the touches, in `TOUCH_POINTS` order, and fits band -> head from them.

    `model_points`: the canonical face (468 x 3, head frame, mm). Feed every frame to `add` with the band's pose,
    the tip (camera frame, None when not tracked) and the face-pose registration's band -> head (None until made).
    """

    def __init__(self, model_points: np.ndarray, config: TouchConfig = TouchConfig(),
                 points: tuple[TouchPoint, ...] = TOUCH_POINTS, targets: np.ndarray | None = None,
                 notch: np.ndarray | None = None):
        """`targets`: head-frame points the sigma must hold for (the scalp's); default the model's own points.
        `notch`: the model's sternal notch (head frame at rest): touched last, after the fit (plans with neck zones)."""
        model = np.asarray(model_points, float)
        self.notch_model = None if notch is None else np.asarray(notch, float).reshape(3)
        self.notch_cam_mm: np.ndarray | None = None  # the touched notch, camera frame
        self.targets = model if targets is None else np.asarray(targets, float).reshape(-1, 3)
        self.config = config
        self.points = points
        self.head_points = np.array([model[p.landmark] for p in points])
        self._hold: deque[tuple[int, np.ndarray]] = deque()
        self.touched: list[np.ndarray] = []  # band frame, in `points` order
        self.fit: TouchFit | None = None
        self._face_fit: TouchFit | None = None  # the accepted fit while the notch is still to be touched
        self.refused = ""  # why the last complete set was refused ("" none)

    @property
    def asked(self) -> tuple[TouchPoint, ...]:
        """Every touch asked for, in order: the landmarks, then the notch when the plan treats the neck."""
        return self.points + ((NOTCH_POINT,) if self.notch_model is not None else ())

    def reset(self) -> None:
        self._hold.clear()
        self.touched.clear()
        self.fit = None
        self._face_fit = None
        self.notch_cam_mm = None

    @property
    def registered(self) -> bool:
        return self.fit is not None

    def prompt(self) -> str:
        """What the practitioner should do now ("" once registered)."""
        if self.fit is not None:
            return ""
        k = len(self.touched)  # the notch after the five: asked[5]
        ask = (f"touch {k + 1} of {len(self.asked)}: {self.asked[k].words}, and hold the tip still")
        return f"{self.refused}; {ask}" if self.refused else ask

    def add(self, band: BodyPose, tip_cam_mm: np.ndarray | None, face_band_to_head: RigidPose | None) -> bool:
        """One frame; True when this frame completed the registration."""
        if self.fit is not None:
            return False
        if not band.valid or band.pose is None or tip_cam_mm is None or face_band_to_head is None:
            self._hold.clear()  # a hold must be seen whole, on the band, with the head's rough pose known
            return False
        notch = self._face_fit is not None  # the notch's hold is on the torso: judged in the camera's frame
        tip = np.asarray(tip_cam_mm, float).reshape(1, 3)
        p = tip[0] if notch else band.pose.inverse().apply(tip)[0]
        self._hold.append((int(band.t_capture_ns), p))
        t_now = self._hold[-1][0]
        hold_ns = int(self.config.hold_s * 1e9)
        while len(self._hold) > 1 and t_now - self._hold[1][0] >= hold_ns:
            self._hold.popleft()  # keep the shortest tail spanning hold_s
        pts = np.array([q for _, q in self._hold])
        if t_now - self._hold[0][0] < hold_ns:
            return False
        centre = pts.mean(axis=0)
        if float(np.max(np.linalg.norm(pts - centre, axis=1))) > self.config.still_mm:
            return False
        if self._face_fit is not None:
            assert self.notch_model is not None
            expected = band.pose.compose(self._face_fit.band_to_head).apply(self.notch_model[None])[0]
            if float(np.linalg.norm(centre - expected)) > self.config.notch_expect_mm:
                return False
            self.notch_cam_mm = centre
            self.fit, self._face_fit = self._face_fit, None
            self._hold.clear()
            return True
        k = len(self.touched)
        expected = face_band_to_head.apply(self.head_points[k:k + 1])[0]
        if float(np.linalg.norm(centre - expected)) > self.config.expect_mm:
            return False  # still, but not where this landmark is: resting, or touching another point
        self.touched.append(centre)
        self._hold.clear()
        if len(self.touched) < len(self.points):
            return False
        fit = fit_band_to_head(self.head_points, np.array(self.touched))
        if fit.rms_mm > self.config.max_residual_mm:
            self.refused = (f"the touches do not fit the head ({fit.rms_mm:.1f} mm RMS, limit "
                            f"{self.config.max_residual_mm:g} mm): touch again")
            self.touched.clear()
            return False
        self.refused = ""
        if self.notch_model is not None:
            self._face_fit = fit  # the notch next: the registration is complete once it is touched
            return False
        self.fit = fit
        return True

    def sigma_mm(self) -> float | None:
        """1-sigma (mm) of a point carried by a touch registration, the worst over `targets`: the fit's expected
        error there (`target_registration_error`) for a localization error that is the larger of the `aim_mm` floor
        and what the residual says (E[FRE^2] = (1 - 2/N) FLE^2), with the band's own error in quadrature."""
        if self.fit is None:
            return None
        n = len(self.points)
        fle = max(self.config.aim_mm, self.fit.rms_mm / np.sqrt(max(1.0 - 2.0 / n, 1e-6)))
        tre = float(np.max(target_registration_error(self.head_points, self.targets, fle)))
        return float(np.hypot(self.config.band_mm, tre))
