"""Gate policy: each condition denies with its own code; the look-ahead stops a fast tip before the edge."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from guidance.gate import GateInput, GatePolicy, LatencyTracker, Reason, ZoneKind, decide, required_distance_mm

MS = 1_000_000
NOW = 10_000 * MS
POLICY = GatePolicy(ttl_ms=50, margin_mm=2.0)


def good(**kw) -> GateInput:
    base = GateInput(
        armed=True, t_capture_ns=NOW - 10 * MS, face_found=True, t_face_ns=NOW - 10 * MS, presence=0.9,
        tip_valid=True, tip_confidence=0.9, zone="cheek_left", zone_kind=ZoneKind.TREAT, zone_planned=True,
        boundary_mm=10.0, speed_mm_s=20.0, pipeline_latency_ms=15.0, local_passes=1, max_passes=3,
        tip_u=0.3, tip_v=0.6,
    )
    return dataclasses.replace(base, **kw)


def test_all_conditions_met_permits():
    d = decide(POLICY, good(), NOW)
    assert d.permit and d.reason == Reason.OK and d.reasons == ()
    assert d.required_mm == pytest.approx(2.0 + 20.0 * (15 + 50) / 1000)


@pytest.mark.parametrize("change,reason", [
    (dict(armed=False), Reason.NOT_ARMED),
    (dict(t_capture_ns=NOW - 200 * MS, t_face_ns=NOW - 200 * MS), Reason.CAMERA_STALLED),
    (dict(t_capture_ns=NOW + 5 * MS), Reason.CAMERA_STALLED),  # from the future: not trusted either
    (dict(face_found=False), Reason.NO_FACE),
    (dict(face_found=False, other_face=True), Reason.OTHER_FACE),  # the client's face lost, another one seen
    (dict(t_face_ns=NOW - 100 * MS), Reason.FACE_STALE),
    (dict(t_face_ns=None), Reason.FACE_STALE),
    (dict(presence=0.2), Reason.LOW_PRESENCE),
    (dict(presence=math.nan), Reason.LOW_PRESENCE),
    (dict(tip_valid=False), Reason.TIP_LOST),
    (dict(tip_confidence=0.1), Reason.TIP_LOW_CONFIDENCE),
    (dict(calibration_required=True, calibration_ok=False), Reason.CALIBRATION_MISSING),
    (dict(zone=None, zone_kind=None), Reason.OFF_SURFACE),
    (dict(zone_kind=ZoneKind.OFF_SURFACE), Reason.OFF_SURFACE),
    (dict(zone="lip", zone_kind=ZoneKind.EXCLUSION), Reason.ZONE_EXCLUDED),
    (dict(zone_planned=False), Reason.ZONE_NOT_PLANNED),
    (dict(boundary_mm=3.0), Reason.NEAR_BOUNDARY),
    (dict(boundary_mm=-1.0), Reason.NEAR_BOUNDARY),
    (dict(boundary_mm=None), Reason.NEAR_BOUNDARY),
    (dict(boundary_mm=math.nan), Reason.NEAR_BOUNDARY),
    (dict(speed_mm_s=None), Reason.NEAR_BOUNDARY),
    (dict(speed_mm_s=math.inf), Reason.NEAR_BOUNDARY),
    (dict(pipeline_latency_ms=math.nan), Reason.NEAR_BOUNDARY),
    (dict(local_passes=3), Reason.PASSES_EXCEEDED),
    (dict(zone_complete=True, stop_at_target=True), Reason.ZONE_COMPLETE),
    (dict(armed=1), Reason.NOT_ARMED),  # only a real boolean arms
    (dict(head_band="unregistered"), Reason.BAND_UNREGISTERED),
    (dict(head_band="lost"), Reason.BAND_LOST),
    (dict(head_band="moved"), Reason.BAND_MOVED),
    (dict(head_band="registered"), Reason.BAND_LOST),  # an unknown state is no band
    (dict(head_band=""), Reason.BAND_LOST),
])
def test_each_condition_denies_with_its_code(change, reason):
    d = decide(POLICY, good(**change), NOW)
    assert not d.permit
    assert d.reason == reason and reason in d.reasons


def test_complete_zone_without_stop_at_target_still_permits():
    assert decide(POLICY, good(zone_complete=True, stop_at_target=False), NOW).permit


def test_first_failure_is_the_reason_and_all_are_listed():
    d = decide(POLICY, good(armed=False, tip_valid=False, boundary_mm=0.0), NOW)
    assert d.reason == Reason.NOT_ARMED
    assert d.reasons == (Reason.NOT_ARMED, Reason.TIP_LOST, Reason.NEAR_BOUNDARY)


def test_scalp_session_judges_the_band_not_the_face():
    # The face turned away: a scalp session with its band tracked and registered may still permit ...
    assert decide(POLICY, good(head_band="ok", face_found=False, t_face_ns=None, presence=0.0), NOW).permit
    # ... and the band's state comes where the face checks come in the order.
    d = decide(POLICY, good(head_band="lost", face_found=False, tip_valid=False), NOW)
    assert d.reasons == (Reason.BAND_LOST, Reason.TIP_LOST)


def test_policy_error_is_a_deny():
    d = decide(POLICY, good(t_capture_ns="not a time"), NOW)  # type: ignore[arg-type]
    assert not d.permit and d.reason == Reason.INTERNAL_ERROR


def test_frame_age_counts_as_latency_in_the_look_ahead():
    # 5 mm inside at 60 mm/s: with 15 ms latency it needs 2 + 60*0.065 = 5.9 mm -> deny;
    # at 40 mm/s it needs 4.6 mm -> permit, unless the frame is already 40 ms old (2 + 40*0.09 = 5.6).
    assert not decide(POLICY, good(boundary_mm=5.0, speed_mm_s=60.0), NOW).permit
    assert decide(POLICY, good(boundary_mm=5.0, speed_mm_s=40.0), NOW).permit
    old = good(boundary_mm=5.0, speed_mm_s=40.0, t_capture_ns=NOW - 40 * MS, t_face_ns=NOW - 40 * MS)
    d = decide(POLICY, old, NOW)
    assert not d.permit and d.reason == Reason.NEAR_BOUNDARY and d.required_mm == pytest.approx(5.6)


def test_fast_tip_toward_exclusion_is_denied_before_it_crosses():
    """Simulate a tip moving at 150 mm/s toward an exclusion 12 mm away, one frame per 1/60 s.

    Every permit granted must keep the tip inside for its whole validity window
    (latency + ttl), so a pulse fired anytime under any permit lands inside.
    """
    frame_ns = int(1e9 / 60)
    latency_ms = 12.0
    speed = 150.0
    x0 = 12.0  # distance to the edge at t=0
    t_cross = x0 / speed
    last_permit_t = None
    for i in range(60):
        t_cap = i * frame_ns
        dist = x0 - speed * t_cap / 1e9
        now = t_cap + int(latency_ms * MS)
        d = decide(POLICY, good(t_capture_ns=t_cap, t_face_ns=t_cap, boundary_mm=dist, speed_mm_s=speed,
                                pipeline_latency_ms=latency_ms), now)
        if d.permit:
            last_permit_t = t_cap
            window_end_s = (t_cap + POLICY.ttl_ms * MS) / 1e9 + latency_ms / 1e3
            assert speed * window_end_s + POLICY.margin_mm <= x0 + 1e-9  # inside with the margin to spare
    assert last_permit_t is not None, "the tip started well inside; it must have been permitted at first"
    assert last_permit_t / 1e9 < t_cross - (POLICY.ttl_ms + latency_ms) / 1e3
    # The slow tip on the same path is permitted much closer to the edge.
    assert decide(POLICY, good(boundary_mm=3.0, speed_mm_s=5.0), NOW).permit


def test_required_distance_formula():
    assert required_distance_mm(POLICY, -30.0, 10.0) == pytest.approx(2.0 + 30.0 * 0.06)


def test_reason_codes_are_documented_and_stable():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    table = set(re.findall(r"^\| `(\w+)` \|", doc, re.M))
    assert {r.value for r in Reason} <= table
    assert Reason.NEAR_BOUNDARY.value == "near_boundary" and Reason.OK.value == "ok"


def test_latency_look_ahead_covers_slow_frames_and_recovers_within_a_second_of_a_hiccup():
    lt = LatencyTracker()
    assert lt.value_ms(default_ms=33.0) == 33.0
    t = 0
    for _ in range(60):  # two seconds at 30 fps, ~8 ms a frame with every tenth at 12 ms
        t += 33_333_333
        lt.add(12.0 if t // 33_333_333 % 10 == 0 else 8.0, t)
    assert 8.0 < lt.value_ms() <= 12.0  # a high percentile: the slow frames are covered
    t += 33_333_333
    lt.add(538.0, t)  # one stall
    assert lt.value_ms() > 8.0
    for _ in range(32):  # a second and a frame later the stall no longer widens the look-ahead
        t += 33_333_333
        lt.add(8.0, t)
    assert lt.value_ms() <= 12.0
    lt.add(math.nan, t + 1)
    assert lt.value_ms() <= 12.0


def test_an_exclusion_keeps_its_buffer_whatever_the_margin():
    base = dict(armed=True, t_capture_ns=1_000_000_000, face_found=True, t_face_ns=1_000_000_000, presence=0.9,
                tip_valid=True, tip_confidence=0.9, zone="chin", zone_kind=ZoneKind.TREAT, zone_planned=True,
                boundary_mm=10.0, speed_mm_s=0.0, pipeline_latency_ms=10.0, tip_sigma_mm=0.5)
    now = 1_005_000_000
    clear = decide(POLICY, GateInput(**base, exclusion_clearance_mm=3.0, exclusion="lips"), now)
    close = decide(POLICY, GateInput(**base, exclusion_clearance_mm=1.0, exclusion="lips"), now)
    assert clear.permit and clear.exclusion_clearance_mm == 3.0
    assert not close.permit and close.reason == Reason.NEAR_EXCLUSION
    nan = decide(POLICY, GateInput(**base, exclusion_clearance_mm=float("nan")), now)
    assert not nan.permit and nan.reason == Reason.NEAR_EXCLUSION


def test_the_mapping_uncertainty_adds_to_the_tip_in_quadrature():
    base = dict(armed=True, t_capture_ns=1_000_000_000, face_found=True, t_face_ns=1_000_000_000, presence=0.9,
                tip_valid=True, tip_confidence=0.9, zone="cheek_left", zone_kind=ZoneKind.TREAT, zone_planned=True,
                boundary_mm=10.0, speed_mm_s=0.0, pipeline_latency_ms=10.0)
    now = 1_005_000_000
    d = decide(POLICY, GateInput(**base, tip_sigma_mm=3.0, mapping_sigma_mm=4.0), now)
    assert d.sigma_mm == pytest.approx(5.0) and d.required_mm == pytest.approx(POLICY.margin_mm + 5.0)
    assert not decide(POLICY, GateInput(**base, tip_sigma_mm=0.5, mapping_sigma_mm=-1.0), now).permit
    assert not decide(POLICY, GateInput(**base, tip_sigma_mm=0.5, mapping_sigma_mm=float("inf")), now).permit


def test_tip_uncertainty_widens_the_required_distance():
    base = dict(armed=True, t_capture_ns=1_000_000_000, face_found=True, t_face_ns=1_000_000_000, presence=0.9,
                tip_valid=True, tip_confidence=0.9, zone="cheek_left", zone_kind=ZoneKind.TREAT, zone_planned=True,
                boundary_mm=4.0, speed_mm_s=0.0, pipeline_latency_ms=10.0)
    now = 1_005_000_000
    sure = decide(POLICY, GateInput(**base, tip_sigma_mm=0.5), now)
    shaky = decide(POLICY, GateInput(**base, tip_sigma_mm=2.5), now)
    assert sure.permit and sure.required_mm == pytest.approx(POLICY.margin_mm + 0.5)
    assert not shaky.permit and shaky.reason == Reason.NEAR_BOUNDARY
    nan = decide(POLICY, GateInput(**base, tip_sigma_mm=float("nan")), now)
    assert not nan.permit


# ---------------------------------------------------------------- body plans: the skin patch replaces the face


def body(**kw) -> GateInput:
    """A body-plan input that permits: the face fields say nothing (no face tracker runs), the patch fields do."""
    return good(**{"reference": "patch", "face_found": False, "t_face_ns": None, "presence": 0.0,
                   "patch_found": True, "t_patch_ns": NOW - 10 * MS, "patch_in_range": True, "zone": "thigh_upper",
                   **kw})


def test_a_body_plan_is_judged_by_the_patch_not_the_face():
    assert decide(POLICY, body(), NOW).permit  # no face anywhere, and that is right for a body plan
    assert decide(POLICY, body(reference="face"), NOW).reason == Reason.NO_FACE


@pytest.mark.parametrize("change,reason", [
    (dict(patch_found=False), Reason.PATCH_LOST),
    (dict(patch_found=1), Reason.PATCH_LOST),  # only a real boolean counts
    (dict(t_patch_ns=NOW - 10 * MS - 41 * MS), Reason.PATCH_STALE),  # held from a frame 41 ms before this one
    (dict(t_patch_ns=None), Reason.PATCH_STALE),
    (dict(t_patch_ns=NOW), Reason.PATCH_STALE),  # a pose from after the frame: not trusted either
    (dict(patch_in_range=False, zone="off-surface", zone_kind=ZoneKind.OFF_SURFACE), Reason.PATCH_FAR),
    (dict(patch_in_range=False), Reason.PATCH_FAR),
    (dict(reference="nonsense", patch_found=False), Reason.PATCH_LOST),  # an unknown reference fails closed
])
def test_each_patch_check_denies_with_its_own_reason(change, reason):
    d = decide(POLICY, body(**change), NOW)
    assert not d.permit and d.reason == reason


def test_a_pose_held_from_the_previous_frame_still_permits():
    assert decide(POLICY, body(t_patch_ns=NOW - 10 * MS - 33 * MS), NOW).permit


def test_the_patch_reasons_keep_their_documented_place():
    """patch_lost and patch_stale stand where the face checks stand; patch_far comes before off_surface."""
    d = decide(POLICY, body(patch_found=False, tip_valid=False, patch_in_range=False, zone=None, zone_kind=None), NOW)
    assert d.reasons[:2] == (Reason.PATCH_LOST, Reason.TIP_LOST)
    d = decide(POLICY, body(armed=False, patch_in_range=False, zone="off-surface", zone_kind=ZoneKind.OFF_SURFACE), NOW)
    assert d.reasons[:3] == (Reason.NOT_ARMED, Reason.PATCH_FAR, Reason.OFF_SURFACE)
    order = [r.value for r in Reason]
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    table = [c for c in re.findall(r"^\| `(\w+)` \|", doc, re.M) if c in order]
    # in the block of the face checks' stand-ins (the head band's for scalp sessions, the patch's for body plans)
    face_block = table[table.index("low_presence") + 1:table.index("tip_lost")]
    assert face_block[-2:] == ["patch_lost", "patch_stale"] and set(face_block) <= {
        "band_unregistered", "band_lost", "band_moved", "patch_lost", "patch_stale"}
    assert table.index("patch_far") == table.index("off_surface") - 1


def test_another_face_never_stands_in_for_the_client():
    """other_face only says why the client's face is missing: with the client's face found it changes nothing."""
    assert decide(POLICY, good(other_face=True), NOW).permit
    d = decide(POLICY, good(face_found=False, other_face=True), NOW)
    assert d.reasons[0] == Reason.OTHER_FACE and Reason.NO_FACE not in d.reasons
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    table = re.findall(r"^\| `(\w+)` \|", doc, re.M)
    assert table.index("other_face") == table.index("no_face") + 1


def test_the_client_found_again_just_after_another_face_had_its_place_is_not_trusted_yet():
    """A face found within client_settle_ms of a frame whose only face was someone else's is denied other_face;
    once the client's track has held that long it is judged as any other frame."""
    settle = POLICY.client_settle_ms * MS
    t = NOW - 10 * MS
    for since, permit in ((0, False), (2 * 33 * MS, False), (settle - MS, False), (settle, True), (10 * settle, True),
                          (-33 * MS, False)):  # a mark from the future: not trusted either
        d = decide(POLICY, good(t_other_face_ns=t - since), NOW)
        assert d.permit == permit, (since, d.reasons)
        if not permit:
            assert d.reason == Reason.OTHER_FACE and Reason.NO_FACE not in d.reasons
    assert decide(POLICY, good(t_other_face_ns=None), NOW).permit
    # the order of the documented table: other_face before the face's own checks
    d = decide(POLICY, good(t_other_face_ns=t, presence=0.1), NOW)
    assert d.reasons[:2] == (Reason.OTHER_FACE, Reason.LOW_PRESENCE)
