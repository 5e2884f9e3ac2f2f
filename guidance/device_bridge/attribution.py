"""Where did each reported pulse land, and was it allowed? Every pulse gets exactly one answer.

A pulse report carries the controller's clock, the permit it fired under and
(protocol 1.1) whether the handpiece was in skin contact. The service maps
the time onto its own clock (clock-offset estimate), checks the permit
against what it actually published, and interpolates the tip track at that
moment. The outcome answers the permit question: "coverage" (it fired under
a valid permit) or "violation" (kept here and shown); a gap in a
controller's pulse numbering becomes "missing" violations, so a lost report
is still counted. Contact is a separate answer (`AttributedPulse.contact`):
only a permitted pulse the controller reports *in contact* deposits coverage
(`AttributedPulse.deposits`); a lifted one is counted apart.
A lost *last* report leaves no gap behind it, so the controller's status
heartbeat (`pulses`, the count it delivered this boot) is the other witness:
pulses it announced that are still unreported a grace period later, or when
the session ends, become the same "missing" violations.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from dataclasses import dataclass, field
from typing import Protocol

from guidance.device_bridge.protocol import MIN_PULSE_INTERVAL_NS, Permit, Pulse, Status

# How long after a status announced a pulse its report may still be on its way
# before the pulse counts as missing. Reports and status share one DEALER
# connection, so a controller that sends each report before its next status
# never needs it; it is there for controllers that queue them separately.
ANNOUNCED_REPORT_GRACE_MS = 300.0
# Most `missing` placeholders one claim may create (one gap, or one status).
# A corrupt pulse_seq or pulses near 2**63 must not stall the receiver (and
# with it the permit hot path, which shares its lock); the rest are counted.
MAX_MISSING_RUN = 1000


@dataclass(frozen=True)
class TipSample:
    t_ns: int  # capture time of the frame (service clock)
    u: float | None
    v: float | None
    zone: str | None
    valid: bool


@dataclass
class TipTrack:
    """Time-stamped tip positions in chart coordinates, oldest dropped first."""

    max_samples: int = 2048
    max_gap_ms: float = 100.0  # do not interpolate across a hole longer than this
    _t: list[int] = field(default_factory=list)
    _s: list[TipSample] = field(default_factory=list)

    def add(self, s: TipSample) -> None:
        if self._t and s.t_ns < self._t[-1]:
            return  # out-of-order frames are not allowed to rewrite history
        self._t.append(s.t_ns)
        self._s.append(s)
        if len(self._t) > self.max_samples:
            drop = len(self._t) - self.max_samples
            del self._t[:drop], self._s[:drop]

    def at(self, t_ns: int) -> TipSample | None:
        """Tip at t_ns, linear between the two valid neighbours; None if unknown there."""
        i = bisect.bisect_left(self._t, t_ns)
        if i < len(self._t) and self._t[i] == t_ns:
            return self._s[i] if self._s[i].valid else None
        if i == 0 or i == len(self._t):
            return None
        a, b = self._s[i - 1], self._s[i]
        if not (a.valid and b.valid) or (b.t_ns - a.t_ns) / 1e6 > self.max_gap_ms:
            return None
        w = (t_ns - a.t_ns) / (b.t_ns - a.t_ns)
        u = a.u + w * (b.u - a.u) if a.u is not None and b.u is not None else None
        v = a.v + w * (b.v - a.v) if a.v is not None and b.v is not None else None
        zone = a.zone if w < 0.5 else b.zone
        return TipSample(t_ns, u, v, zone, True)


@dataclass(frozen=True)
class PublishedPermit:
    permit: Permit
    t_next_publish_ns: int | None = None  # when the following permit went out


@dataclass
class PermitLog:
    """What this service boot actually published, by sequence number."""

    boot: str
    max_entries: int = 4096
    granted: int = 0  # permits published with permit:true this boot (none yet: no pulse can be this boot's)
    _by_seq: "collections.OrderedDict[int, Permit]" = field(default_factory=collections.OrderedDict)

    def add(self, p: Permit) -> None:
        self._by_seq[p.seq] = p
        if p.permit:
            self.granted += 1
        while len(self._by_seq) > self.max_entries:
            self._by_seq.popitem(last=False)

    def get(self, boot: str | None, seq: int | None) -> Permit | None:
        return self._by_seq.get(seq) if boot == self.boot and seq is not None else None

    def next_after(self, seq: int) -> Permit | None:
        return self._by_seq.get(seq + 1)


@dataclass(frozen=True)
class AttributedPulse:
    """One pulse's answer. Two questions, answered apart:

    * `outcome` — the permit question: "coverage" (fired under a permit this
      service published with permit:true, inside its window, not after a
      revocation, not faster than the pulse-rate limit) or "violation" with
      `reason` the code (docs/protocol.md §6).
    * `contact` — the controller's own skin-contact sense when it fired
      (protocol 1.1): True in contact, False lifted (the tip was off the
      skin: nothing was delivered where the camera saw the tip), None unknown
      (a 1.0 controller, which has no contact field).

    The coverage rule (docs/protocol.md §6.2): a pulse deposits coverage iff
    `outcome == "coverage" and contact is True` (`deposits`). A lifted pulse
    never deposits and is counted apart (`lifted`); an unknown-contact pulse
    does not deposit either (only pulses the controller says were in contact
    do) and is counted apart (`contact_unknown`). Violations are violations
    whatever the contact.
    """

    controller: str
    controller_boot: str
    pulse_seq: int
    outcome: str  # "coverage" or "violation" (the permit question)
    reason: str  # "ok" or a violation code (docs/protocol.md)
    t_ctrl_ns: int | None
    t_service_ns: int | None
    time_source: str  # "clock_offset", "permit" (no offset yet), or "none"
    permit_seq: int | None
    zone: str | None
    tip_u: float | None  # chart mm
    tip_v: float | None
    duration_us: int | None
    intensity_pct: float | None
    energy_mj: float | None
    late: bool = False  # arrived after this very pulse_seq had been recorded "missing" (its placeholder is replaced)
    contact: bool | None = None  # skin contact when it fired: True, False (lifted), None (unknown: 1.0 or missing)

    @property
    def deposits(self) -> bool:
        """Does this pulse add coverage? Only a permitted pulse fired in skin contact does."""
        return self.outcome == "coverage" and self.contact is True

    @property
    def contact_state(self) -> str:
        """"contact", "lifted" or "unknown"."""
        return "contact" if self.contact is True else "lifted" if self.contact is False else "unknown"


class CoverageSink(Protocol):
    """Whatever accumulates treated area; the zones package plugs its rasters in here.

    It receives only pulses that deposit (`AttributedPulse.deposits`).
    """

    def add_pulse(self, pulse: AttributedPulse) -> None: ...


@dataclass
class PulseListSink:
    """The simplest real coverage sink: keeps every depositing pulse in order."""

    pulses: list[AttributedPulse] = field(default_factory=list)

    def add_pulse(self, pulse: AttributedPulse) -> None:
        self.pulses.append(pulse)


@dataclass
class AnnouncedPulses:
    """What one controller boot's status said it delivered, and when each claim falls due."""

    count: int = 0
    due: collections.deque = field(default_factory=collections.deque)  # (count, t_due_ns), oldest first


@dataclass
class PulseAttributor:
    permits: PermitLog
    track: TipTrack
    sink: CoverageSink
    revocation_grace_ms: float = 10.0  # time a controller has to see a deny before pulses count against it
    min_pulse_interval_ns: int = MIN_PULSE_INTERVAL_NS  # faster than the protocol's pulse-rate limit: rate_exceeded
    report_grace_ms: float = ANNOUNCED_REPORT_GRACE_MS  # announced pulse -> missing if unreported this long
    max_missing_run: int = MAX_MISSING_RUN
    violations: list[AttributedPulse] = field(default_factory=list)
    received: int = 0
    duplicates: int = 0
    permitted: int = 0  # outcome "coverage" (the permit question), whatever the contact
    covered: int = 0  # deposited: permitted and in contact (handed to the sink)
    lifted: int = 0  # reported without skin contact (any outcome): never coverage
    contact_unknown: int = 0  # no contact field (1.0 controller): never coverage
    late: int = 0  # reports that arrived after being recorded missing (placeholder replaced)
    missing_unlisted: int = 0  # missing pulses beyond max_missing_run in one claim: counted, not listed
    # Pulses a controller boot had delivered before this service boot could permit any (a controller that stays
    # linked from one session to the next): its first status says how many; they are an earlier session's.
    earlier_session: int = 0
    earlier_session_reports: int = 0  # reports of those pulses (under another service boot's permit): not judged
    _baseline: dict[tuple[str, str], int] = field(default_factory=dict)
    _seen: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    # Per controller boot: every pulse_seq up to this one was received or recorded missing.
    _high: dict[tuple[str, str], int] = field(default_factory=dict)
    _missing_listed: dict[tuple[str, str], set[int]] = field(default_factory=dict)  # placeholders in `violations`
    _unlisted: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)  # ranges in missing_unlisted
    _last_fired: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (pulse_seq, t_ctrl_ns)
    _announced: dict[tuple[str, str], AnnouncedPulses] = field(default_factory=dict)

    def on_pulse(self, p: Pulse, t_service_ns: int | None, uncertainty_ns: int | None) -> list[AttributedPulse]:
        """Attribute one report (t_service_ns: its time mapped to our clock, None if unsynced)."""
        key = (p.controller, p.boot)
        if p.pulse_seq < 1:  # the decoder refuses these; pulse_seq starts at 1
            raise ValueError(f"pulse_seq {p.pulse_seq} < 1")
        if (p.pulse_seq <= self._baseline.get(key, 0) and p.permit_boot is not None
                and p.permit_boot != self.permits.boot):
            self.earlier_session_reports += 1  # fired in an earlier session, under that service's permit
            return []
        seen = self._seen.setdefault(key, set())
        if p.pulse_seq in seen:
            self.duplicates += 1
            return []
        seen.add(p.pulse_seq)
        self.received += 1
        recorded_missing = self._recorded_missing(key, p.pulse_seq)  # before the gap this report reveals is flagged
        out = self._flag_missing(key, p.pulse_seq)  # reports before this one that never arrived
        judged = self._judge(p, t_service_ns, uncertainty_ns)
        out.append(self._replace_missing(key, judged, recorded_missing) if recorded_missing else judged)
        return self._record(out)

    def on_status(self, st: Status, t_rx_ns: int) -> None:
        """Note how many pulses this controller boot says it delivered (`status.pulses`).

        Only a gap *before* a received report is visible in the numbering; the
        status count is what reveals a lost last report. Pulses it announces
        that have not been received fall due `report_grace_ms` after this
        status arrived (see `flag_overdue`), so reports still in flight are
        not flagged. A new boot is a new key: its count starts fresh, and the
        old boot's claims still fall due.
        """
        key = (st.controller, st.boot)
        first = key not in self._announced and key not in self._seen and key not in self._high
        if first and self.permits.granted == 0 and st.pulses > 0:
            # A controller boot first heard before this service boot granted anything: whatever it delivered
            # so far was under an earlier session's permits (it stayed linked across sessions), not this one's.
            self._baseline[key] = self._high[key] = st.pulses
            self.earlier_session += st.pulses
        a = self._announced.setdefault(key, AnnouncedPulses())
        if st.pulses <= a.count:
            return  # nothing new (or a count that went backwards: the higher claim stands)
        a.count = st.pulses
        if st.pulses > self._high.get(key, 0):
            a.due.append((st.pulses, t_rx_ns + int(self.report_grace_ms * 1e6)))

    def flag_overdue(self, now_ns: int) -> list[AttributedPulse]:
        """Announced pulses whose grace has run out without a report become `missing` (once each)."""
        out: list[AttributedPulse] = []
        for key, a in self._announced.items():
            while a.due and a.due[0][1] <= now_ns:
                count, _ = a.due.popleft()
                out.extend(self._flag_missing(key, count))
        return self._record(out)

    def flag_all_announced(self) -> list[AttributedPulse]:
        """Session end: nothing more will arrive, so every announced, unreported pulse is `missing` now."""
        out: list[AttributedPulse] = []
        for key, a in self._announced.items():
            a.due.clear()
            out.extend(self._flag_missing(key, a.count))
        return self._record(out)

    def _flag_missing(self, key: tuple[str, str], upto: int) -> list[AttributedPulse]:
        """Account for every pulse_seq up to `upto`: each one neither received nor flagged yet becomes `missing`.

        The one path for both witnesses (a gap before a received report, a
        count in a status), so no pulse_seq is ever flagged twice. What is
        flagged is remembered exactly (listed placeholders, unlisted ranges),
        so only a report truly recorded missing can come back `late`.
        """
        high = self._high.get(key, 0)
        if upto <= high:
            return []
        seen = self._seen.setdefault(key, set())
        listed_upto = min(upto, high + self.max_missing_run)
        listed = [s for s in range(high + 1, listed_upto + 1) if s not in seen]
        self._missing_listed.setdefault(key, set()).update(listed)
        out = [self._violation_missing(key[0], key[1], s) for s in listed]
        if upto > listed_upto:
            self.missing_unlisted += (upto - listed_upto) - sum(1 for s in seen if listed_upto < s <= upto)
            self._unlisted.setdefault(key, []).append((listed_upto + 1, upto))
        self._high[key] = upto
        return out

    def _recorded_missing(self, key: tuple[str, str], seq: int) -> str | None:
        """Was this pulse_seq recorded missing before: "listed" (a placeholder), "unlisted" (only counted), or None."""
        if seq in self._missing_listed.get(key, ()):
            return "listed"
        if any(lo <= seq <= hi for lo, hi in self._unlisted.get(key, ())):
            return "unlisted"
        return None

    def _replace_missing(self, key: tuple[str, str], judged: AttributedPulse, how: str) -> AttributedPulse:
        """A report recorded missing arrived after all: its outcome replaces the placeholder, marked late."""
        if how == "listed":
            self._missing_listed[key].discard(judged.pulse_seq)
            self._remove_missing(key, judged.pulse_seq)
        else:
            self.missing_unlisted -= 1  # one of the counted, unlisted ones (`seen` keeps it from recurring)
        self.late += 1
        return dataclasses.replace(judged, late=True)

    def _record(self, out: list[AttributedPulse]) -> list[AttributedPulse]:
        """Coverage to the sink, violations kept: the one place an outcome is counted."""
        for a in out:
            if a.reason != "missing":
                self.lifted += a.contact is False
                self.contact_unknown += a.contact is None
            if a.outcome == "coverage":
                self.permitted += 1
                if a.deposits:
                    self.covered += 1
                    self.sink.add_pulse(a)
            else:
                self.violations.append(a)
        return out

    def _remove_missing(self, key: tuple[str, str], seq: int) -> bool:
        for i, v in enumerate(self.violations):
            if v.reason == "missing" and (v.controller, v.controller_boot, v.pulse_seq) == (*key, seq):
                del self.violations[i]
                return True
        return False

    def _violation_missing(self, controller: str, boot: str, seq: int) -> AttributedPulse:
        return AttributedPulse(controller, boot, seq, "violation", "missing", None, None, "none",
                               None, None, None, None, None, None, None, contact=None)

    def _judge(self, p: Pulse, t_service_ns: int | None, unc_ns: int | None) -> AttributedPulse:
        permit = self.permits.get(p.permit_boot, p.permit_seq)
        time_source = "clock_offset" if t_service_ns is not None else "permit"
        t = t_service_ns if t_service_ns is not None else (permit.t_publish_ns if permit else None)
        reason = "ok"
        if p.permit_seq is None:
            reason = "no_permit"
        elif permit is None:
            reason = "unknown_permit"
        elif not permit.permit:
            reason = "permit_denied"
        elif t_service_ns is not None:
            tol = unc_ns or 0
            if t_service_ns < permit.t_publish_ns - tol:
                reason = "before_permit"
            elif t_service_ns > permit.t_capture_ns + permit.ttl_ms * 1_000_000 + tol:
                reason = "expired_permit"
            else:
                nxt = self.permits.next_after(permit.seq)
                grace = int(self.revocation_grace_ms * 1e6) + tol
                if nxt is not None and not nxt.permit and t_service_ns > nxt.t_publish_ns + grace:
                    reason = "after_revocation"
        key = (p.controller, p.boot)
        prev = self._last_fired.get(key)
        if prev is not None and p.pulse_seq == prev[0] + 1 and p.t_ctrl_ns - prev[1] < self.min_pulse_interval_ns \
                and reason == "ok":
            reason = "rate_exceeded"  # the permit was fine; the controller fired faster than the protocol allows
        if prev is None or p.pulse_seq > prev[0]:
            self._last_fired[key] = (p.pulse_seq, p.t_ctrl_ns)
        tip = self.track.at(t) if t is not None else None
        if tip is None and permit is not None and permit.permit:
            tip = TipSample(permit.t_capture_ns, permit.tip_u, permit.tip_v, permit.zone, True)
            time_source = time_source if t_service_ns is not None else "permit"
        return AttributedPulse(
            p.controller, p.boot, p.pulse_seq, "coverage" if reason == "ok" else "violation", reason,
            p.t_ctrl_ns, t, time_source if t is not None else "none", p.permit_seq,
            tip.zone if tip else None, tip.u if tip else None, tip.v if tip else None,
            p.duration_us, p.intensity_pct, p.energy_mj, contact=p.contact,
        )

    def accounted(self) -> bool:
        """Every unique report is permitted or in violations (the 'none lost' invariant)."""
        reported = sum(1 for v in self.violations if v.reason != "missing")
        return self.received == self.permitted + reported and self.covered <= self.permitted


@dataclass
class OutcomeLedger:
    """Running counts of pulse outcomes as they are emitted (live totals, a recording's events, a re-run).

    The attributor emits a `missing` violation for a report that has not come, and,
    if the report comes after all, its real outcome marked `late`. Counting both
    would count one pulse twice; here the late outcome replaces its placeholder,
    as it does in the attributor. `add` returns the placeholder's token (whatever
    the caller passed with it: a list entry to remove) so the caller can drop it.

    Contact (protocol 1.1): `pulses` counts permitted pulses that deposit
    coverage (in contact); a permitted pulse with `contact=False` counts in
    `lifted` and one with `contact=None` (1.0 controller) in
    `contact_unknown` instead. `lifted` and `contact_unknown` count
    violations too (a violation stays a violation). `add` defaults to
    `contact=True`, what callers written before 1.1 meant; pass the pulse's
    contact, or use `add_pulse(p)`.
    """

    pulses: int = 0
    violations: int = 0
    violation_reasons: dict[str, int] = field(default_factory=dict)
    late: int = 0
    lifted: int = 0
    contact_unknown: int = 0
    _missing: dict[tuple, object] = field(default_factory=dict)

    def add_pulse(self, p: AttributedPulse, token: object = None) -> object | None:
        """`add` for an AttributedPulse as `BridgeService.poll()` returns it."""
        return self.add(p.outcome, p.reason, (p.controller, p.controller_boot, p.pulse_seq), p.late, token=token,
                        contact=p.contact)

    def add(self, outcome: str, reason: str | None, key: tuple, late: bool = False, token: object = None,
            contact: bool | None = True) -> object | None:
        """Count one outcome for pulse `key` (controller, boot, pulse_seq); returns the replaced placeholder's token."""
        replaced = None
        if late and key in self._missing:
            replaced = self._missing.pop(key)
            self.violations -= 1
            self.violation_reasons["missing"] -= 1
            if not self.violation_reasons["missing"]:
                del self.violation_reasons["missing"]
            self.late += 1
        is_placeholder = outcome != "coverage" and reason == "missing"
        if not is_placeholder:
            self.lifted += contact is False
            self.contact_unknown += contact is None
        if outcome == "coverage":
            if contact is True:
                self.pulses += 1
        else:
            reason = reason or "unknown"
            self.violations += 1
            self.violation_reasons[reason] = self.violation_reasons.get(reason, 0) + 1
            if reason == "missing":
                self._missing[key] = token
        return replaced
