"""Head pose from the head band, tied to the face's head frame, so scalp work keeps a head pose with the face turned away.

While the face is visible, each frame gives a pair (band pose, face head pose);
the fixed transform band -> head is their robust average (registration). After
that the band alone gives the head pose. While both are visible we keep
comparing them: if they disagree by more than a few millimetres the band has
moved on the head, and we stop trusting it (reason `head_band_moved`) until it
is registered again. The face tracker's head pose enters through the small
`HeadPoseSample` type so this module does not depend on the face tracker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from guidance.vision.capture.camera import CameraModel
from guidance.vision.face.touch_registration import TouchRegistration
from guidance.vision.handpiece.marker_body import MarkerBody
from guidance.vision.handpiece.marker_detect import MarkerDetector
from guidance.vision.handpiece.marker_pose import BodyPose, PoseLimits, estimate_body_pose
from guidance.vision.rigid import RigidPose, mean_rotation, rotation_angle_deg

NOT_REGISTERED = "head_band_not_registered"
BAND_MOVED = "head_band_moved"
NO_HEAD = "no_face_and_no_head_band"


@dataclass(frozen=True)
class HeadPoseSample:
    """A head pose from the face tracker: x_camera = R @ x_head + t_mm, at capture time t_ns."""

    R: np.ndarray
    t_mm: np.ndarray
    t_ns: int


@dataclass(frozen=True)
class HeadPoseObservation:
    t_capture_ns: int
    valid: bool
    reason: str
    R: np.ndarray | None  # head -> camera
    t_mm: np.ndarray | None
    source: str  # "band" or "face" when valid
    band_valid: bool
    band_reason: str
    face_band_disagreement_mm: float | None  # when both were available this frame
    band_head: RigidPose | None = None  # the head pose from the band alone (registered, seen, not moved)
    state: str = "lost"  # for a session carried by the band: ok | unregistered | lost | moved


@dataclass(frozen=True)
class Registration:
    registered: bool
    reason: str
    band_to_head: RigidPose | None  # x_band = band_to_head.apply(x_head)
    samples: int  # face/band pose pairs averaged (method "face"), or landmarks touched (method "touch")
    spread_mm: float  # their RMS spread in translation ("face"), or the touch fit's RMS residual ("touch")
    spread_deg: float  # their RMS spread in rotation ("face"; NaN for "touch")
    method: str = "face"  # face | touch (vision/face/touch_registration.py)
    notch_cam_mm: tuple[float, float, float] | None = None  # the touched sternal notch, camera frame (neck plans)


@dataclass(frozen=True)
class BandHead:
    """What a scalp session's lookup and gate take from the head band in one frame (recorded; re-processing
    rebuilds it). `state`: ok | unregistered | lost | moved; `pose`: head -> camera from the band alone, when ok."""

    state: str
    pose: RigidPose | None
    band_valid: bool = False
    band_reason: str = ""
    registration: Registration | None = None
    face_used: bool = False  # a near-frontal face pose was given this frame (registration, slip check)
    disagreement_mm: float | None = None
    sigma_mm: float | None = None  # 1-sigma of a scalp point carried by the band (registration and band pose)

    @classmethod
    def of(cls, obs: HeadPoseObservation, registration: Registration, face_used: bool,
           sigma_mm: float | None) -> "BandHead":
        pose = obs.band_head if obs.state == "ok" else None
        return cls(obs.state if pose is not None or obs.state != "ok" else "lost", pose, obs.band_valid,
                   obs.band_reason, registration, face_used, obs.face_band_disagreement_mm,
                   sigma_mm if pose is not None else None)


class HeadBandRegistration:
    """Collects simultaneous band and face poses; the band->head transform once they agree."""

    def __init__(self, min_samples: int = 15, max_spread_mm: float = 4.0, max_spread_deg: float = 3.0,
                 max_dt_ns: int = 20_000_000, window: int = 90):
        self.min_samples = min_samples
        self.max_spread_mm = max_spread_mm
        self.max_spread_deg = max_spread_deg
        self.max_dt_ns = max_dt_ns
        self.window = window
        self._pairs: list[RigidPose] = []
        self.result = Registration(False, NOT_REGISTERED, None, 0, float("nan"), float("nan"))

    def reset(self) -> None:
        self._pairs.clear()
        self.result = Registration(False, NOT_REGISTERED, None, 0, float("nan"), float("nan"))

    def add(self, band: BodyPose, face: HeadPoseSample) -> Registration:
        if not band.valid or abs(band.t_capture_ns - face.t_ns) > self.max_dt_ns:
            return self.result
        assert band.pose is not None, "a valid BodyPose carries its pose"
        head = RigidPose(np.asarray(face.R, float), np.asarray(face.t_mm, float))
        self._pairs.append(band.pose.inverse().compose(head))  # head frame -> band frame
        del self._pairs[:-self.window]
        if self.result.registered:
            return self.result
        if len(self._pairs) >= self.min_samples:
            self.result = self._estimate()
        return self.result

    def _estimate(self) -> Registration:
        ts = np.array([p.t_mm for p in self._pairs])
        med = np.median(ts, axis=0)
        d = np.linalg.norm(ts - med, axis=1)
        keep = d <= max(3.0 * np.median(d), 1.0)
        pairs = [p for p, k in zip(self._pairs, keep) if k]
        R = mean_rotation([p.R for p in pairs])
        t = np.mean([p.t_mm for p in pairs], axis=0)
        spread_mm = float(np.sqrt(np.mean([np.sum((p.t_mm - t) ** 2) for p in pairs])))
        spread_deg = float(np.sqrt(np.mean([rotation_angle_deg(R, p.R) ** 2 for p in pairs])))
        if spread_mm > self.max_spread_mm or spread_deg > self.max_spread_deg:
            reason = (f"{NOT_REGISTERED}: band and face poses disagree by {spread_mm:.1f} mm / {spread_deg:.1f} deg "
                      f"RMS; keep the head still and the face visible")
            return Registration(False, reason, None, len(pairs), spread_mm, spread_deg)
        return Registration(True, "", RigidPose(R, t), len(pairs), spread_mm, spread_deg)


class HeadReferenceTracker:
    def __init__(self, band: MarkerBody, camera: CameraModel, registration: HeadBandRegistration | None = None,
                 max_disagreement_mm: float = 8.0, limits: PoseLimits = PoseLimits(), moved_after: int = 1,
                 touch: TouchRegistration | None = None):
        """`moved_after`: consecutive frames of disagreement before the band counts as slipped and is
        registered again; a frame that disagrees short of that is still not trusted (state `moved` for
        that frame: a scalp session's gate denies it), so a face pose's passing glitch costs a frame, not
        the registration.

        `touch`: register by touching face landmarks with the tip (docs/scalp.md). The face-pose registration
        is still made first: it says where the landmarks are roughly (a hold elsewhere is not a touch) and it
        stays the slip check's reference (the face pose's bias is the same in both, so it does not read as a
        slip); the head pose, and with it every scalp point, is carried by the touch fit. A slip clears both."""
        self.touch = touch
        self.band = band
        self.camera = camera
        self.registration = registration or HeadBandRegistration()
        self.max_disagreement_mm = max_disagreement_mm
        self.limits = limits
        self.detector = MarkerDetector(band.dictionary, band.ids)
        self._prior: BodyPose | None = None
        self._moved = False
        self.moved_after = max(1, int(moved_after))
        self._disagree_run = 0

    def process(self, image: np.ndarray, t_capture_ns: int, face: HeadPoseSample | None,
                tip_cam_mm: np.ndarray | None = None) -> HeadPoseObservation:
        return self.combine(self.track(image, t_capture_ns), face, tip_cam_mm)

    def carrier(self) -> Registration:
        """The registration the head pose is carried by: the touch fit when touching is asked for, else the face's."""
        if self.touch is None:
            return self.registration.result
        face = self.registration.result
        fit = self.touch.fit
        if fit is None:
            if face.registered:
                reason = f"{NOT_REGISTERED}: {self.touch.prompt()}"
            elif face.reason and face.reason != NOT_REGISTERED:
                reason = face.reason
            else:
                reason = f"{NOT_REGISTERED}: face the camera and keep the head still (the band is being found)"
            return Registration(False, reason or NOT_REGISTERED, None, len(self.touch.touched), float("nan"),
                                float("nan"), "touch")
        notch = self.touch.notch_cam_mm
        return Registration(True, "", fit.band_to_head, len(self.touch.touched), fit.rms_mm, float("nan"), "touch",
                            None if notch is None else (float(notch[0]), float(notch[1]), float(notch[2])))

    def track(self, image: np.ndarray, t_capture_ns: int) -> BodyPose:
        """The band's own pose in this frame (markers only; no face needed, so it can run beside the face)."""
        h, w = image.shape[:2]
        if (w, h) != self.camera.size:
            self.camera = self.camera.scaled_to(w, h)
        found = self.detector.detect(image)
        if len(found.corners_px) < 2 and not found.searched_full_frame:
            # The detector looks near the last markers first; the band's next plates come into view beside
            # them as the head turns, outside that window: one marker alone (ambiguous) means look everywhere.
            self.detector.reset()
            found = self.detector.detect(image)
        band = estimate_body_pose(self.band, found, self.camera, t_capture_ns, self._prior, self.limits)
        self._prior = band if band.valid else None
        return band

    def combine(self, band: BodyPose, face: HeadPoseSample | None,
                tip_cam_mm: np.ndarray | None = None) -> HeadPoseObservation:
        t = band.t_capture_ns
        fresh_face = face if face is not None and abs(face.t_ns - t) <= self.registration.max_dt_ns else None
        reg = self.registration.result
        from_band = None
        if band.valid and reg.registered:
            assert band.pose is not None, "a valid BodyPose carries its pose"
            assert reg.band_to_head is not None, "a registered Registration carries its transform"
            from_band = band.pose.compose(reg.band_to_head)
        disagreement = None
        doubt = False  # the face disagrees with the band this frame, not (yet) for long enough to re-register
        if from_band is not None and fresh_face is not None:
            disagreement = float(np.linalg.norm(from_band.t_mm - np.asarray(fresh_face.t_mm, float)))
            # While the landmarks are being touched the handpiece covers the face and its pose wanders (8-9 mm on
            # the rendered chin touch): no slip is judged then; nothing is carried by the band yet, and a band
            # that slips between touches spoils the fit, which its residual refuses.
            touching = self.touch is not None and not self.touch.registered
            if disagreement > self.max_disagreement_mm and not touching:
                self._disagree_run += 1
                if self._disagree_run >= self.moved_after:
                    self._moved = True  # the band slipped on the head: re-register from scratch
                    self.registration.reset()
                    if self.touch is not None:
                        self.touch.reset()
                    self._disagree_run = 0
                from_band = None
                doubt = not self._moved
            else:
                self._disagree_run = 0
        if band.valid and fresh_face is not None and not self.registration.result.registered:
            reg = self.registration.add(band, fresh_face)
            if reg.registered:
                self._moved = False
        if self.touch is not None and not self._moved and not doubt:
            self.touch.add(band, tip_cam_mm, self.registration.result.band_to_head)
        carrier = self.carrier()
        band_head = None
        if band.valid and not self._moved and not doubt and carrier.registered:
            assert band.pose is not None and carrier.band_to_head is not None
            band_head = band.pose.compose(carrier.band_to_head)
        if self._moved or doubt:
            state = "moved"
        elif not carrier.registered:
            state = "unregistered"
        elif not band.valid:
            state = "lost"
        else:
            state = "ok"
        if fresh_face is not None:
            return HeadPoseObservation(t, True, "", np.asarray(fresh_face.R, float),
                                       np.asarray(fresh_face.t_mm, float), "face", band.valid, band.reason,
                                       disagreement, band_head, state)
        if band_head is not None:
            return HeadPoseObservation(t, True, "", band_head.R, band_head.t_mm, "band", True, "", None, band_head,
                                       state)
        if self._moved:
            reason = BAND_MOVED
        elif band.valid:
            reason = carrier.reason or NOT_REGISTERED
        else:
            reason = NO_HEAD
        return HeadPoseObservation(t, False, reason, None, None, "", band.valid, band.reason, disagreement, band_head,
                                   state)
