"""What the live page tells the practitioner for each deny reason: what happened, and what to do next.

One entry per `guidance.gate.Reason` (tests/console/test_texts.py fails for a code without words). The
banner shows `words`; `next` is the instruction under it, written for someone holding a handpiece.
"""

from __future__ import annotations

from guidance.gate import Reason

PRACTITIONER_TEXT: dict[str, tuple[str, str]] = {
    # code: (what happened, what to do next)
    Reason.OK.value: ("permitted", "treat: the pulse may fire here"),
    Reason.NOT_ARMED.value: ("the session is not armed", "check the client and the plan, then press ARM"),
    Reason.CAMERA_STALLED.value: ("the camera stopped sending pictures", "check the camera cable and the light; wait for the picture to move"),
    Reason.NO_FACE.value: ("no face in view", "bring the client's face into the camera's view"),
    Reason.OTHER_FACE.value: ("another face, not the client's, is in view", "bring the client's face back into view; keep others out of the picture"),
    Reason.FACE_STALE.value: ("face tracking fell behind", "hold still a moment; the tracking catches up"),
    Reason.LOW_PRESENCE.value: ("the face is not seen clearly", "improve the light, or turn the face towards the camera"),
    Reason.BAND_UNREGISTERED.value: ("the head band is not registered yet", "keep the face to the camera, band in view, head still, a second"),
    Reason.BAND_LOST.value: ("the head band is not seen", "turn the head or the camera so the band's markers are in view"),
    Reason.BAND_MOVED.value: ("the head band slipped", "settle the band, face the client to the camera until it registers again"),
    Reason.TIP_LOST.value: ("the handpiece tip is not seen", "turn the handpiece so its markers face the camera"),
    Reason.TIP_LOW_CONFIDENCE.value: ("the tip position is uncertain", "turn the markers towards the camera; do not cover them with your fingers"),
    Reason.PATCH_LOST.value: ("the skin patch is not seen", "uncover the printed patch; turn the camera so it sees the patch"),
    Reason.PATCH_STALE.value: ("the skin patch is hidden", "keep the handpiece and your hand off the patch's markers"),
    Reason.NECK_UNREFERENCED.value: ("the neck is not placed yet", "face the client to the camera, head straight, a moment"),
    Reason.PATCH_FAR.value: ("too far from the skin patch", "treat near the patch, or move the patch to this area"),
    Reason.CALIBRATION_MISSING.value: ("calibration is missing", "stop and calibrate the camera and the handpiece"),
    Reason.OFF_SURFACE.value: ("the tip is not over treatable skin", "move the tip onto a planned zone"),
    Reason.ZONE_EXCLUDED.value: ("this area is excluded", "move away: eyes, lips and excluded zones are never treated"),
    Reason.ZONE_NOT_PLANNED.value: ("this zone is not in the plan", "move to a zone shown in the plan"),
    Reason.NEAR_BOUNDARY.value: ("too close to the edge of the plan for this speed", "slow down, or move further inside the zone"),
    Reason.NEAR_EXCLUSION.value: ("too close to an excluded area", "move away from the eyes, lips or excluded zone"),
    Reason.PASSES_EXCEEDED.value: ("this area has had its passes", "move on to an area that still needs passes"),
    Reason.ZONE_COMPLETE.value: ("this zone is complete", "move on to the next zone of the plan"),
    Reason.INTERNAL_ERROR.value: ("the guidance service hit an error", "stop the session and tell the technician"),
    Reason.SERVICE_STOPPING.value: ("the session is stopping", "wait; start a new session to go on"),
}


def practitioner_text(reason: str) -> tuple[str, str]:
    """(words, next step) for a reason code; an unknown code (a newer service) is still said, never hidden."""
    return PRACTITIONER_TEXT.get(reason, (reason.replace("_", " "), "stop and check the session"))


def live_words(state: dict) -> tuple[str, str]:
    """(words, next step) for a live session's state: the reason in practitioner words, and the next step the
    session's own prompt when it asks for one (a scalp session's touch registration: which landmark to touch)."""
    words, nxt = practitioner_text(str(state.get("reason", "not_armed")))
    return words, str(state.get("prompt") or nxt)
