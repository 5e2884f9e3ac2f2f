"""Clock offset, tip track and pulse attribution: every pulse gets exactly one outcome."""

from __future__ import annotations

import dataclasses
import random

from guidance.device_bridge.attribution import (OutcomeLedger, PermitLog, PulseAttributor, PulseListSink, TipSample,
                                                TipTrack)
from guidance.device_bridge.clock import ClockOffsetEstimator
from guidance.device_bridge.heartbeat import HeartbeatMonitor
from guidance.device_bridge.protocol import Permit, Pulse, Status

MS = 1_000_000
SB = "5555555555555555"
CB = "cccccccccccccccc"


def exchange(est, t1, offset, d_up, d_down, proc=20_000):
    t2 = t1 + d_up + offset
    t3 = t2 + proc
    t4 = t3 - offset + d_down
    return est.add(t1, t2, t3, t4)


def test_offset_estimate_prefers_fastest_exchange_and_follows_a_step():
    rng = random.Random(7)
    est = ClockOffsetEstimator()
    true = 3_210_987_654
    for i in range(30):
        exchange(est, i * 20 * MS, true, rng.randint(30_000, 2_000_000), rng.randint(30_000, 2_000_000))
    assert est.synced
    assert abs(est.offset_ns - true) <= est.uncertainty_ns <= 1 * MS
    assert abs(est.to_service_ns(true + 5 * MS) - 5 * MS) <= est.uncertainty_ns
    # The controller clock steps by +700 ms: two far samples reset the window.
    exchange(est, 700 * MS, true + 700 * MS, 50_000, 50_000)
    assert abs(est.offset_ns - true) < 1 * MS  # one sample is not enough to move
    exchange(est, 720 * MS, true + 700 * MS, 50_000, 50_000)
    assert est.steps == 1 and abs(est.offset_ns - (true + 700 * MS)) < 1 * MS
    assert est.add(0, 10, 5, 20) is None and est.rejected == 1  # t3 < t2: impossible


def test_tip_track_interpolates_and_refuses_holes():
    tr = TipTrack(max_gap_ms=50)
    tr.add(TipSample(0, 0.0, 0.0, "a", True))
    tr.add(TipSample(10 * MS, 1.0, 0.5, "b", True))
    tr.add(TipSample(20 * MS, None, None, None, False))
    tr.add(TipSample(200 * MS, 0.0, 0.0, "a", True))
    tr.add(TipSample(300 * MS, 1.0, 1.0, "a", True))
    s = tr.at(4 * MS)
    assert s.u == 0.4 and s.v == 0.2 and s.zone == "a"
    assert tr.at(8 * MS).zone == "b"
    assert tr.at(15 * MS) is None  # next to an invalid sample
    assert tr.at(250 * MS) is None  # across a 100 ms hole
    assert tr.at(-1) is None and tr.at(301 * MS) is None
    assert tr.at(10 * MS).u == 1.0


def permit(seq, t_cap_ms, ok=True):
    return Permit("guidance", SB, seq, t_cap_ms * MS, t_cap_ms * MS + 2 * MS, 50, ok, "ok" if ok else "tip_lost",
                  "cheek", 0.1 * seq, 0.5, 8.0, 3.0, 10.0)


def pulse(seq, t_ms, permit_seq, boot=SB, contact=True, minor=1):
    return Pulse("ctl", CB, seq, t_ms * MS, 2000, 60.0, None, boot if permit_seq else None, permit_seq,
                 contact if minor else None, minor=minor)


def make():
    log = PermitLog(SB)
    track = TipTrack()
    for i, ok in enumerate([True, True, False, True], start=1):
        p = permit(i, 10 * i, ok)
        log.add(p)
        track.add(TipSample(p.t_capture_ns, p.tip_u, p.tip_v, p.zone, True))
    sink = PulseListSink()
    return PulseAttributor(log, track, sink), sink


def test_each_pulse_is_coverage_or_a_named_violation():
    a, sink = make()
    cases = [
        (pulse(1, 15, 1), "ok"),
        (pulse(2, 25, 2), "ok"),
        (pulse(3, 35, 3), "permit_denied"),
        (pulse(4, 42, None), "no_permit"),
        (pulse(5, 45, 99), "unknown_permit"),
        (pulse(6, 45, 4, boot="6666666666666666"), "unknown_permit"),
        (pulse(7, 5, 1), "before_permit"),
        (pulse(8, 95, 4), "expired_permit"),
        (pulse(9, 55, 2), "after_revocation"),  # permit 3 (deny) went out at 32 ms; 55 > 32 + 10 grace
    ]
    for p, reason in cases:
        out = a.on_pulse(p, p.t_ctrl_ns, 0)
        assert [o.reason for o in out] == [reason]
    assert [o.pulse_seq for o in sink.pulses] == [1, 2]
    assert abs(sink.pulses[0].tip_u - 0.15) < 1e-9  # halfway between permits 1 and 2
    assert a.accounted() and a.covered == 2 and len(a.violations) == 7


def test_gaps_are_missing_until_the_late_report_arrives_and_duplicates_count_once():
    a, sink = make()
    a.on_pulse(pulse(1, 15, 1), 15 * MS, 0)
    a.on_pulse(pulse(4, 16, 1), 16 * MS, 0)
    assert sorted(v.pulse_seq for v in a.violations if v.reason == "missing") == [2, 3]
    a.on_pulse(pulse(3, 16, 1), 16 * MS, 0)
    assert sorted(v.pulse_seq for v in a.violations if v.reason == "missing") == [2]
    assert a.on_pulse(pulse(3, 16, 1), 16 * MS, 0) == [] and a.duplicates == 1
    assert a.covered == 3 and a.accounted()


def test_unsynced_pulse_is_placed_at_its_permit():
    a, sink = make()
    out = a.on_pulse(pulse(1, 999_999, 2), None, None)
    assert out[0].outcome == "coverage" and out[0].time_source == "permit" and out[0].t_service_ns == 22 * MS


def test_heartbeat_monitor_records_silence_resume_restart():
    hb = HeartbeatMonitor(timeout_ms=100)
    st = Status("ctl", CB, 1, 0, False, "no_permit", False, None, 0, 0)
    hb.on_status(st, 0)
    assert hb.check(50 * MS) == [] and not hb.any_silent()
    assert [e.kind for e in hb.check(150 * MS)] == ["silent"] and hb.any_silent()
    assert hb.check(300 * MS) == []  # reported once
    hb.on_status(st, 310 * MS)
    hb.on_status(Status("ctl", "dddddddddddddddd", 1, 0, False, "no_permit", False, None, 0, 0), 320 * MS)
    assert [e.kind for e in hb.events] == ["connected", "silent", "resumed", "restarted"]


def status(pulses, boot=CB, seq=1):
    return Status("ctl", boot, seq, 0, True, "ok", True, None, pulses, 0)


def test_status_count_flags_a_lost_last_report_once_through_the_gap_path():
    a, sink = make()
    a.on_pulse(pulse(1, 15, 1), 15 * MS, 0)
    a.on_status(status(3), 100 * MS)  # 2 and 3 delivered, unreported
    assert a.flag_overdue(399 * MS) == [] and a.violations == []  # still within the grace
    a.on_status(status(3, seq=2), 200 * MS)  # the same count again: no second claim
    a.on_status(status(2, seq=3), 250 * MS)  # a lower count never withdraws one
    assert [(v.reason, v.pulse_seq) for v in a.flag_overdue(400 * MS)] == [("missing", 2), ("missing", 3)]
    assert a.flag_overdue(10_000 * MS) == []
    out = a.on_pulse(pulse(5, 16, 1), 16 * MS, 0)  # a later gap flags only what is not flagged yet
    assert [(o.reason, o.pulse_seq) for o in out] == [("missing", 4), ("ok", 5)]
    out = a.on_pulse(pulse(3, 16, 1), 16 * MS, 0)  # late: replaces its placeholder, marked so
    assert [(o.reason, o.pulse_seq, o.late) for o in out] == [("ok", 3, True)]
    assert sorted(v.pulse_seq for v in a.violations) == [2, 4] and a.late == 1
    assert a.covered == 3 and a.accounted()


def test_the_outcome_ledger_counts_a_late_report_once_as_the_attributor_does():
    """What the live totals, the review timeline and a re-run count from the emitted outcomes."""
    a, sink = make()
    ledger = OutcomeLedger()
    emitted = a.on_pulse(pulse(1, 15, 1), 15 * MS, 0)
    a.on_status(status(4), 100 * MS)
    emitted += a.flag_overdue(400 * MS)  # 2, 3 and 4 missing
    emitted += a.on_pulse(pulse(3, 16, 1), 16 * MS, 0)  # late, allowed
    emitted += a.on_pulse(pulse(4, 999_999, 2), 16 * MS, 0)  # late, and under a permit it never had
    replaced = [ledger.add(o.outcome, o.reason, (o.controller, o.controller_boot, o.pulse_seq), o.late, token=o)
                for o in emitted]
    assert [r.pulse_seq for r in replaced if r is not None] == [3, 4]  # the placeholders each late one replaced
    assert ledger.pulses == a.covered == 2
    assert ledger.violations == len(a.violations) == 2 and ledger.late == a.late == 2
    assert ledger.violation_reasons == {"missing": 1, emitted[-1].reason: 1} and emitted[-1].reason != "missing"
    # a late report whose placeholder was never emitted (beyond the listed run) replaces nothing
    other = OutcomeLedger()
    assert other.add("coverage", "ok", ("ctl", CB, 9), late=True) is None
    assert (other.pulses, other.violations, other.late) == (1, 0, 0)


def test_session_end_flags_every_announced_pulse_without_the_grace_per_boot():
    a, sink = make()
    a.on_pulse(pulse(1, 15, 1), 15 * MS, 0)
    a.on_status(status(2), 100 * MS)
    a.on_status(status(1, boot="dddddddddddddddd"), 110 * MS)  # restarted: counted fresh, nothing received yet
    out = a.flag_all_announced()
    assert sorted((o.controller_boot, o.pulse_seq) for o in out) == [(CB, 2), ("dddddddddddddddd", 1)]
    assert a.flag_all_announced() == [] and a.flag_overdue(10**12) == []


def test_absurd_counts_are_bounded_and_counted_not_listed():
    a, sink = make()
    a.on_status(status(2**62), 0)
    out = a.flag_all_announced()
    assert len(out) == a.max_missing_run and a.missing_unlisted == 2**62 - a.max_missing_run
    b, _ = make()
    out = b.on_pulse(pulse(2**62, 15, 1), 15 * MS, 0)
    assert len(out) == b.max_missing_run + 1 and b.missing_unlisted == 2**62 - 1 - b.max_missing_run


def test_contact_is_a_separate_answer_and_only_contact_pulses_deposit():
    """Issue 14 item 7: a pulse fired with the tip lifted used to count as delivered coverage."""
    a, sink = make()
    ledger = OutcomeLedger()
    out = []
    out += a.on_pulse(pulse(1, 15, 1), 15 * MS, 0)  # in contact, permitted: coverage
    out += a.on_pulse(pulse(2, 25, 2, contact=False), 25 * MS, 0)  # lifted over the lips, permitted
    out += a.on_pulse(pulse(3, 42, None, contact=False), 42 * MS, 0)  # lifted and no permit
    out += a.on_pulse(pulse(4, 48, 4, minor=0), 48 * MS, 0)  # a 1.0 controller: contact unknown
    assert [(o.outcome, o.reason, o.contact, o.deposits) for o in out] == [
        ("coverage", "ok", True, True), ("coverage", "ok", False, False), ("violation", "no_permit", False, False),
        ("coverage", "ok", None, False)]
    assert [o.contact_state for o in out] == ["contact", "lifted", "lifted", "unknown"]
    assert [p.pulse_seq for p in sink.pulses] == [1]  # the sink only ever sees depositing pulses
    assert (a.permitted, a.covered, a.lifted, a.contact_unknown) == (3, 1, 2, 1) and a.accounted()
    for o in out:
        ledger.add_pulse(o)
    assert (ledger.pulses, ledger.lifted, ledger.contact_unknown, ledger.violations) == (1, 2, 1, 1)


def test_pulses_faster_than_the_protocol_rate_limit_are_violations():
    a, sink = make()
    out = a.on_pulse(pulse(1, 15, 1), 15 * MS, 0)
    out += a.on_pulse(Pulse("ctl", CB, 2, 15 * MS + 4_999_999, 2000, 60.0, None, SB, 1, True), 16 * MS, 0)
    out += a.on_pulse(Pulse("ctl", CB, 3, 15 * MS + 9_999_999, 2000, 60.0, None, SB, 1, True), 20 * MS, 0)
    out += a.on_pulse(Pulse("ctl", CB, 4, 15 * MS + 11_000_000, 2000, 60.0, None, SB, 3, True), 36 * MS, 0)
    assert [o.reason for o in out] == ["ok", "rate_exceeded", "ok", "permit_denied"]  # the permit question first


def test_late_is_set_only_for_a_pulse_truly_recorded_missing():
    """Issue 14 item 3: `late` came from `pulse_seq <= high`, and that path decremented missing_unlisted."""
    a, sink = make()
    a.on_status(status(2000), 0)
    flagged = a.flag_all_announced()  # 1..1000 listed, 1001..2000 only counted
    assert len(flagged) == 1000 and a.missing_unlisted == 1000
    listed = a.on_pulse(pulse(5, 15, 1), 15 * MS, 0)
    unlisted = a.on_pulse(pulse(1500, 16, 1), 16 * MS, 0)
    fresh = a.on_pulse(pulse(2001, 17, 1), 17 * MS, 0)
    assert [(o.pulse_seq, o.late) for o in listed + unlisted + fresh] == [(5, True), (1500, True), (2001, False)]
    assert a.missing_unlisted == 999 and a.late == 2
    assert 5 not in {v.pulse_seq for v in a.violations}
    assert a.on_pulse(pulse(1500, 16, 1), 16 * MS, 0) == [] and a.missing_unlisted == 999  # a duplicate: nothing


def test_a_pulse_naming_half_a_permit_is_a_violation():
    """docs/protocol.md §4.2 (gap G11): permit_boot and permit_seq are judged alone; half a permit is never coverage."""
    import dataclasses

    a, sink = make()
    no_boot = dataclasses.replace(pulse(1, 15, 1), permit_boot=None)  # permit 1 is a valid grant at 15 ms
    no_seq = dataclasses.replace(pulse(2, 25, None), permit_boot=SB)
    assert [o.reason for o in a.on_pulse(no_boot, no_boot.t_ctrl_ns, 0)] == ["unknown_permit"]
    assert [o.reason for o in a.on_pulse(no_seq, no_seq.t_ctrl_ns, 0)] == ["no_permit"]
    assert sink.pulses == [] and a.accounted()


def test_a_controller_carried_over_from_an_earlier_session_starts_clean():
    """A controller linked across sessions: its earlier pulses are not this session's `missing` violations."""
    log, track = PermitLog(SB), TipTrack()
    a = PulseAttributor(log, track, PulseListSink())
    a.on_status(status(50), 0)  # first heard before this service boot granted anything: 1..50 are earlier
    assert a.earlier_session == 50
    old = dataclasses.replace(pulse(50, 1, 7), permit_boot="6666666666666666")  # a late report of one of them
    assert a.on_pulse(old, 1 * MS, 0) == [] and a.earlier_session_reports == 1
    assert a.flag_overdue(10**12) == [] and a.flag_all_announced() == [] and a.violations == []
    for i in (1, 2):
        p = permit(i, 10 * i)
        log.add(p)
        track.add(TipSample(p.t_capture_ns, p.tip_u, p.tip_v, p.zone, True))
    out = a.on_pulse(pulse(52, 15, 1), 15 * MS, 0)  # 51 was this session's and never reported
    assert [(o.reason, o.pulse_seq) for o in out] == [("missing", 51), ("ok", 52)]
    a.on_status(status(53, seq=2), 20 * MS)
    assert [(o.reason, o.pulse_seq) for o in a.flag_all_announced()] == [("missing", 53)]
    # a rogue pulse numbered inside the baseline that cites no permit is judged all the same
    rogue = a.on_pulse(pulse(3, 16, None), 16 * MS, 0)
    assert [(o.outcome, o.reason) for o in rogue] == [("violation", "no_permit")]


def test_no_baseline_once_this_service_boot_has_granted_a_permit():
    """After a grant, a first status's pulses may be this session's: unreported ones are all `missing`."""
    a, _ = make()  # permits granted already
    a.on_status(status(3), 0)
    assert a.earlier_session == 0
    assert [o.pulse_seq for o in a.flag_all_announced()] == [1, 2, 3]
