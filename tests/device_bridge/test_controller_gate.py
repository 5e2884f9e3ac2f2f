"""ControllerGate: the only way to True is an authentic, newest, unexpired permit=true."""

from __future__ import annotations

import json

import pytest

from guidance.device_bridge.controller.gate import ControllerGate, GateState, Verdict
from guidance.device_bridge.protocol import Permit

MS = 1_000_000
BOOT_A = "aaaaaaaaaaaaaaaa"
BOOT_B = "bbbbbbbbbbbbbbbb"


def permit(seq, t_cap_ms, *, ok=True, boot=BOOT_A, ttl_ms=50, age_ms=2, service="guidance"):
    t = t_cap_ms * MS
    return Permit(service, boot, seq, t, t + age_ms * MS, ttl_ms, ok, "ok" if ok else "near_boundary",
                  "cheek", 0.5, 0.5, 9.0, 3.0, 10.0).encode()


def armed_gate(**kw) -> ControllerGate:
    """A gate that has confirmed boot A with seq 1, 2 (received at 1 ms after publish)."""
    g = ControllerGate(**kw)
    assert g.offer(permit(1, 0), 3 * MS, True) == Verdict.BOOT_UNCONFIRMED
    assert not g.may_fire(3 * MS)
    assert g.offer(permit(2, 10), 13 * MS, True) == Verdict.ACCEPTED
    return g


def test_fresh_permit_allows_until_expiry_then_denies():
    g = armed_gate()
    assert g.may_fire(13 * MS)
    # expiry = t_recv + ttl - age = 13 + 50 - 2 = 61 ms on the controller clock
    assert g.may_fire(60 * MS)
    assert not g.may_fire(61 * MS)
    assert g.state(61 * MS) == GateState.EXPIRED
    assert not g.may_fire(62 * MS)


def test_silence_means_no_permit():
    g = ControllerGate()
    assert not g.may_fire(0) and not g.may_fire(10**12)
    assert g.state(5) == GateState.NO_PERMIT


def test_deny_revokes_immediately():
    g = armed_gate()
    assert g.offer(permit(3, 20, ok=False), 23 * MS, True) == Verdict.ACCEPTED_DENY
    assert not g.may_fire(23 * MS)
    assert g.state(23 * MS) == GateState.DENIED


@pytest.mark.parametrize("frame,verdict", [
    (permit(2, 10), Verdict.DUPLICATE),
    (permit(1, 0), Verdict.OUT_OF_ORDER),  # old permit replayed
    (permit(5, 5), Verdict.STALE),  # newer seq but older frame
    (permit(6, 20, age_ms=50), Verdict.STALE),  # already expired when published
    (permit(7, 20, boot="0123456789abcdef"), Verdict.BOOT_UNCONFIRMED),
    (permit(8, 20, ttl_ms=0), Verdict.MALFORMED),
    (permit(9, 20).replace(b'"v":1', b'"v":2'), Verdict.WRONG_VERSION),
    (permit(9, 20).replace(b"true", b"1"), Verdict.MALFORMED),
    (b"\x00" * 10, Verdict.MALFORMED),
    (b"{" * 5000, Verdict.OVERSIZE),
    (json.dumps({"v": 1, "type": "pulse"}).encode(), Verdict.UNEXPECTED_TYPE),
])
def test_bad_input_denies_and_revokes(frame, verdict):
    g = armed_gate()
    assert g.may_fire(20 * MS)
    before = g.counters[verdict.value]
    assert g.offer(frame, 21 * MS, True) == verdict
    assert not g.may_fire(21 * MS)  # the held permit is gone, not just the bad one ignored
    assert g.counters[verdict.value] == before + 1


def test_recovers_with_the_next_good_permit_after_bad_input():
    g = armed_gate()
    g.offer(b"garbage", 21 * MS, True)
    assert g.offer(permit(3, 20), 23 * MS, True) == Verdict.ACCEPTED
    assert g.may_fire(23 * MS)


def test_unauthenticated_input_is_refused_unless_insecure_was_chosen():
    g = ControllerGate()
    g.offer(permit(1, 0), 1 * MS, False)
    assert g.offer(permit(2, 10), 11 * MS, False) == Verdict.UNAUTHENTICATED
    assert not g.may_fire(11 * MS)
    dev = ControllerGate(accept_unauthenticated=True)
    dev.offer(permit(1, 0), 1 * MS, False)
    assert dev.offer(permit(2, 10), 11 * MS, False) == Verdict.ACCEPTED


def test_sequence_regression_stays_denied():
    g = armed_gate()
    g.offer(permit(100, 20), 21 * MS, True)
    for i, seq in enumerate(range(3, 50)):  # a service that restarted its counter without a new boot
        t = 30 + 10 * i
        assert g.offer(permit(seq, t), (t + 1) * MS, True) == Verdict.OUT_OF_ORDER
        assert not g.may_fire((t + 1) * MS)


def test_service_restart_new_boot_needs_two_permits_and_old_boot_never_returns():
    g = armed_gate()
    assert g.offer(permit(1, 30, boot=BOOT_B), 31 * MS, True) == Verdict.BOOT_UNCONFIRMED
    assert not g.may_fire(31 * MS)
    assert g.offer(permit(2, 40, boot=BOOT_B), 41 * MS, True) == Verdict.ACCEPTED
    assert g.may_fire(41 * MS)
    # The old boot's permits, even with huge sequence numbers, are refused for good.
    assert g.offer(permit(10**6, 50, boot=BOOT_A), 51 * MS, True) == Verdict.OLD_BOOT
    assert not g.may_fire(51 * MS)


def test_pinned_service_id():
    g = ControllerGate(expect_service="guidance")
    assert g.offer(permit(1, 0, service="impostor"), 1 * MS, True) == Verdict.WRONG_SERVICE


def test_clock_jumps():
    g = armed_gate()
    assert not g.may_fire(12 * MS)  # controller clock went backwards past the receive time
    assert g.state(12 * MS) in (GateState.CLOCK_BACKWARDS, GateState.NO_PERMIT)
    g = armed_gate()
    assert not g.may_fire(10_000 * MS)  # jumped forward: expired
    assert not g.may_fire(20 * MS)  # and coming back does not resurrect it


def test_controller_caps_the_window():
    g = ControllerGate(max_ttl_ms=20)
    g.offer(permit(1, 0, ttl_ms=5000), 3 * MS, True)
    g.offer(permit(2, 10, ttl_ms=5000), 13 * MS, True)
    assert g.may_fire(27 * MS)  # 13 + 20 - 2 = 31
    assert not g.may_fire(31 * MS)


def test_ping_bound_expires_a_permit_delayed_in_transit():
    g = ControllerGate()
    g.note_ping(BOOT_A, t1_service_ns=0, t2_ctrl_ns=1000 * MS + 1 * MS)  # controller clock ≈ service + 1000 ms
    g.offer(permit(1, 0), 1003 * MS, True)
    g.offer(permit(2, 10), 1013 * MS, True)
    assert g.may_fire(1013 * MS)
    assert not g.may_fire(1061 * MS)  # bound: 10 + 1001 + 50 = 1061
    # The same permit arriving 40 ms late keeps only what is left of its window.
    g.offer(permit(3, 20), 1060 * MS, True)
    assert g.may_fire(1060 * MS) and not g.may_fire(1071 * MS)
    # ... and one arriving after its window is stale on arrival.
    assert g.offer(permit(4, 30), 1090 * MS, True) == Verdict.STALE
    assert not g.may_fire(1090 * MS)


def test_fire_names_the_permit_it_used():
    g = armed_gate()
    p = g.fire(20 * MS)
    assert p is not None and p.seq == 2 and p.boot == BOOT_A
    assert g.fire(100 * MS) is None
