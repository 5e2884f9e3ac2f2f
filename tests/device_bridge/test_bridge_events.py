"""What the bridge tells the run loop besides pulses: link events, rejects, identity, key files (issue 14 items 1, 2,
4, 5). Real ZeroMQ sockets with CURVE, controllers in this process; conditions are polled with deadlines, never timed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from guidance.device_bridge import keys as keyfiles
from guidance.device_bridge.controller.gate import ControllerLink, LinkKeys
from guidance.device_bridge.events import (EVENT_NAMES, KeyRefusedEvent, LinkEvent, RateLimitedCounter, RejectEvent,
                                           ServiceStallEvent)
from guidance.device_bridge.heartbeat import HeartbeatMonitor
from guidance.device_bridge.protocol import Status
from guidance.device_bridge.service import BridgeService
from guidance.errors import UserError

MS = 1_000_000
IDS = ("controller", "hp1", "hp2")


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("events") / "keys"
    keyfiles.generate(d, IDS)
    return d


class FakeClock:
    """time.monotonic_ns plus an offset the test can jump: the service's view of a stall."""

    def __init__(self):
        self.offset = 0

    def __call__(self) -> int:
        return time.monotonic_ns() + self.offset


@pytest.fixture
def make_service(keydir):
    made: list[BridgeService] = []

    def make(**kw) -> BridgeService:
        kw.setdefault("keys", keyfiles.load_service_keys(keydir))
        svc = BridgeService("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", ping_interval_ms=20, **kw)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


@pytest.fixture
def links():
    made: list[ControllerLink] = []
    yield made
    for link in made:
        link.close()


def connect(keydir, svc, key_name: str, controller_id: str | None = None, links=None, **kw) -> ControllerLink:
    pair = keyfiles.load_pair(keydir / f"{key_name}.key_secret")
    link = ControllerLink(svc.permit_endpoint, svc.report_endpoint, controller_id=controller_id or key_name,
                          keys=LinkKeys(keyfiles.load_public(keydir / "service.key"), pair.public, pair.secret), **kw)
    if links is not None:
        links.append(link)
    return link


def pump(svc, link_or_links, until, seconds=10.0, status_every_s=0.02, events=None, pulses=None, beat=True):
    """Statuses from the link(s), the service drained, until `until(events)` or the deadline; returns events."""
    events = [] if events is None else events
    pulses = [] if pulses is None else pulses
    group = link_or_links if isinstance(link_or_links, list) else [link_or_links]
    t_end = time.monotonic() + seconds
    next_status = 0.0
    while time.monotonic() < t_end:
        if beat and time.monotonic() >= next_status:
            for link in group:
                link.send_status(False)
            next_status = time.monotonic() + status_every_s
        for link in group:
            link.poll(0)
        p, e = svc.poll()
        events.extend(e)
        pulses.extend(p)
        if until(events):
            return events
        time.sleep(0.005)
    return events


def kinds(events, controller=None):
    return [e.kind for e in events if isinstance(e, LinkEvent) and (controller is None or e.controller == controller)]


# -- item 1: every link event reaches poll(); the service's own stall never blames a controller -----------------------

def test_every_link_event_reaches_poll(keydir, make_service, links):
    svc = make_service(heartbeat_timeout_ms=150)
    a = connect(keydir, svc, "hp1", links=links)
    events = pump(svc, a, lambda ev: "connected" in kinds(ev))
    pump(svc, a, lambda ev: "silent" in kinds(ev), beat=False, events=events)  # it stops talking
    pump(svc, a, lambda ev: "resumed" in kinds(ev), events=events)
    b = connect(keydir, svc, "hp1", links=links)  # the same controller, restarted: a new boot
    pump(svc, b, lambda ev: "restarted" in kinds(ev), events=events)
    seen = kinds(events, "hp1")
    assert seen[:3] == ["connected", "silent", "resumed"] and seen[-1] == "restarted"
    connected = events[0]
    assert connected.boot == a.boot and connected.protocol == "1.1" and connected.t_ns > 0
    assert connected.event == "link" and connected.record()["state"] == "connected"
    assert [e.boot for e in events if isinstance(e, LinkEvent)][-1] == b.boot
    assert svc.summary()["controllers"]["hp1"]["state"] == "restarted"


def test_a_stall_of_the_service_itself_does_not_mark_a_healthy_controller_silent(keydir, make_service, links):
    clock = FakeClock()
    svc = make_service(heartbeat_timeout_ms=150, clock=clock)
    link = connect(keydir, svc, "hp2", links=links)
    events = pump(svc, link, lambda ev: "connected" in kinds(ev))
    # The service's receive loop is away for 1 s (SIGSTOP): from its clock's view time jumps, and the statuses
    # the controller sent meanwhile are still on their way (nothing arrives for a moment after it is back).
    clock.offset += 1_000_000_000
    pump(svc, link, lambda ev: False, seconds=0.06, beat=False, events=events)
    pump(svc, link, lambda ev: False, seconds=0.5, events=events)  # then the queued statuses arrive and it goes on
    assert "silent" not in kinds(events)
    stalls = [e for e in events if isinstance(e, ServiceStallEvent)]
    assert stalls and stalls[0].stalled_ms >= 1000 and stalls[0].event == "service_stall"
    assert svc.summary()["controllers"]["hp2"]["silent"] is False and svc.summary()["service_stalls"] >= 1
    # A controller that really stops is still caught.
    pump(svc, link, lambda ev: "silent" in kinds(ev), beat=False, events=events)
    assert kinds(events)[-1] == "silent"


def test_heartbeat_monitor_stall_rule():
    hb = HeartbeatMonitor(timeout_ms=300, stall_ms=100)
    st = Status("ctl", "c" * 16, 1, 0, False, "no_permit", False, None, 0, 0)
    hb.on_status(st, 0)
    for t in range(10, 290, 10):
        assert hb.check(t * MS) == []
    out = hb.check(900 * MS)  # the loop was away 610 ms: not the controller's fault
    assert [type(e) for e in out] == [ServiceStallEvent] and not hb.any_silent()
    for t in range(910, 1200, 10):
        assert hb.check(t * MS) == []  # a full timeout from the moment it was back
    assert [e.kind for e in hb.check(1210 * MS)] == ["silent"]
    assert [type(e).__name__ for e in hb.take()] == ["LinkEvent", "ServiceStallEvent", "LinkEvent"]
    assert hb.take() == []


# -- item 2: rejects are events, bounded, with totals ----------------------------------------------------------------

def test_rejected_frames_become_bounded_events_with_totals(keydir, make_service, links):
    svc = make_service(event_window_ms=200)
    link = connect(keydir, svc, "hp1", links=links)
    pump(svc, link, lambda ev: "connected" in kinds(ev))
    sent = {"malformed": 0, "wrong_version": 0, "unexpected_type": 0}
    t0 = time.monotonic()
    for i in range(600):
        if i % 3 == 0:
            link.dealer.send(b"\x00garbage %d" % i)
            sent["malformed"] += 1
        elif i % 3 == 1:
            link.dealer.send(b'{"v":7,"type":"pulse"}')
            sent["wrong_version"] += 1
        else:
            link.dealer.send(b'{"v":1,"type":"permit"}')
            sent["unexpected_type"] += 1
    events = pump(svc, link, lambda ev: svc.summary()["rejects"] == sent, beat=False)
    svc.end_session()  # releases what the once-per-window limit still held
    events += svc.poll().events
    elapsed = time.monotonic() - t0
    rejects = [e for e in events if isinstance(e, RejectEvent)]
    assert {e.code for e in rejects} == set(sent)
    assert all(e.source == "hp1" and e.event == "rejected" and e.t_first_ns <= e.t_last_ns for e in rejects)
    for code, n in sent.items():
        mine = [e for e in rejects if e.code == code]
        assert sum(e.count for e in mine) == n and mine[-1].total == n
        assert len(mine) <= elapsed / 0.2 + 2  # at most one per window (+ the first, + the end-of-session flush)
    assert svc.summary()["rejects"] == sent and svc.summary()["rejects_by_source"] == {"hp1": sent}
    assert svc.receiver.counters["malformed"] == sent["malformed"]


def test_rate_limited_counter_releases_the_first_at_once_then_one_per_window():
    c = RateLimitedCounter(window_ns=1000)
    c.add(("x",), 0, "a")
    assert [(k, n, tot) for k, n, tot, *_ in c.due(0)] == [(("x",), 1, 1)]
    for t in range(1, 500):
        c.add(("x",), t, "b")
    assert c.due(500) == []  # within the window: held
    [(k, n, tot, t_first, t_last, detail)] = c.due(1000)
    assert (n, tot, t_first, t_last, detail) == (499, 500, 1, 499, "b")
    assert c.due(5000) == [] and c.flush(5000) == []


# -- item 4: identity bound to the key --------------------------------------------------------------------------------

def test_a_key_cannot_report_under_another_controllers_id(keydir, make_service, links):
    svc = make_service()
    impostor = connect(keydir, svc, "hp1", controller_id="hp2", links=links)  # hp1's key, claiming to be hp2
    honest = connect(keydir, svc, "hp2", links=links)
    pulses: list = []
    events = pump(svc, [impostor, honest], lambda ev: "connected" in kinds(ev, "hp2")
                  and any(isinstance(e, RejectEvent) for e in ev), pulses=pulses)
    time.sleep(0.006)
    impostor.report_pulse(time.monotonic_ns(), None, duration_us=1, intensity_pct=1.0, contact=True)
    pump(svc, [impostor, honest], lambda ev: svc.summary()["rejects"].get("identity_mismatch", 0) >= 3,
         events=events, pulses=pulses)
    svc.end_session()
    events += svc.poll().events
    mismatch = [e for e in events if isinstance(e, RejectEvent) and e.code == "identity_mismatch"]
    assert mismatch and {e.source for e in mismatch} == {"hp1"} and "hp2" in mismatch[0].detail
    with svc.lock:
        h = svc.heartbeat.controllers["hp2"]
        assert h.boot == honest.boot and h.key == "hp2"  # only the honest one's statuses count as hp2's
    assert svc.attributor.received == 0 and pulses == []  # the impostor's pulse was not attributed to hp2


def test_insecure_mode_has_no_binding(make_service, links):
    svc = make_service(keys=None, insecure=True)
    link = ControllerLink(svc.permit_endpoint, svc.report_endpoint, controller_id="anyone", keys=None, insecure=True)
    links.append(link)
    events = pump(svc, link, lambda ev: "connected" in kinds(ev, "anyone"))
    assert [e for e in events if isinstance(e, RejectEvent)] == []
    assert svc.summary()["authenticated"] is False


def test_controller_ids_are_checked_where_they_are_made(keydir, tmp_path):
    with pytest.raises(UserError):
        ControllerLink("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", controller_id="bad\x07id", keys=None, insecure=True)
    with pytest.raises(UserError):
        keyfiles.generate(tmp_path / "k", ("ok", "not ok"))
    d = tmp_path / "k2"
    keyfiles.generate(d)
    (d / "authorized_controllers" / "two words.key").write_bytes((d / "controller.key").read_bytes())
    with pytest.raises(UserError, match="file name is the controller id"):
        keyfiles.load_service_keys(d)
    (d / "authorized_controllers" / "two words.key").rename(d / "authorized_controllers" / "again.key")
    with pytest.raises(UserError, match="same public key as"):  # one key, one id
        keyfiles.load_service_keys(d)


# -- item 5: key files checked at load; refusals visible ---------------------------------------------------------------

def _edit_secret(path: Path) -> None:
    text = path.read_text().splitlines()
    for i, line in enumerate(text):
        if line.strip().startswith("secret-key"):
            head, key = line.split('"', 1)[0], line.split('"')[1]
            swapped = ("a" if key[5] != "a" else "b")
            text[i] = f'{head}"{key[:5]}{swapped}{key[6:]}"'
    path.write_text("\n".join(text) + "\n")


def test_a_secret_key_with_one_character_changed_is_refused_at_load_naming_file_and_field(tmp_path):
    d = tmp_path / "k"
    keyfiles.generate(d)
    _edit_secret(d / "service.key_secret")
    with pytest.raises(UserError) as exc:
        keyfiles.load_service_keys(d)
    msg = str(exc.value)
    assert "service.key_secret" in msg and "secret-key" in msg and "\n" not in msg
    _edit_secret(d / "controller.key_secret")
    with pytest.raises(UserError, match="controller.key_secret: secret-key"):
        keyfiles.load_pair(d / "controller.key_secret")


def test_secret_key_files_readable_by_others_are_refused(tmp_path):
    d = tmp_path / "k"
    keyfiles.generate(d, ("controller", "hp9"))
    for f in d.glob("*.key_secret"):
        assert f.stat().st_mode & 0o077 == 0  # generate writes them 0600
    os.chmod(d / "service.key_secret", 0o640)
    with pytest.raises(UserError, match=r"service.key_secret: readable by others \(chmod 600\)"):
        keyfiles.load_service_keys(d)
    os.chmod(d / "hp9.key_secret", 0o604)
    with pytest.raises(UserError, match=r"hp9.key_secret: readable by others \(chmod 600\)"):
        keyfiles.load_pair(d / "hp9.key_secret")
    os.chmod(d / "hp9.key_secret", 0o620)
    with pytest.raises(UserError, match=r"writable by others"):
        keyfiles.load_pair(d / "hp9.key_secret")
    os.chmod(d / "hp9.key_secret", 0o600)
    assert keyfiles.load_pair(d / "hp9.key_secret").public == keyfiles.load_public(d / "hp9.key")


def test_add_controller_makes_a_bound_pair(tmp_path):
    d = tmp_path / "k"
    keyfiles.generate(d)
    keyfiles.add_controller(d, "hp-7")
    keys = keyfiles.load_service_keys(d)
    assert keys.controllers["hp-7"] == keyfiles.load_pair(d / "hp-7.key_secret").public
    assert keys.name_of(keys.controllers["controller"]) == "controller"
    with pytest.raises(UserError, match="exists"):
        keyfiles.add_controller(d, "hp-7")


def test_refused_key_is_an_event_with_its_fingerprint(keydir, tmp_path, make_service, links):
    svc = make_service()
    other = tmp_path / "other"
    keyfiles.generate(other)
    pair = keyfiles.load_pair(other / "controller.key_secret")
    stranger = ControllerLink(svc.permit_endpoint, svc.report_endpoint, controller_id="controller",
                              keys=LinkKeys(keyfiles.load_public(keydir / "service.key"), pair.public, pair.secret))
    links.append(stranger)
    events = pump(svc, stranger, lambda ev: any(isinstance(e, KeyRefusedEvent) for e in ev)
                  and stranger.link_state == "key refused", beat=False)
    refused = [e for e in events if isinstance(e, KeyRefusedEvent)]
    assert refused[0].fingerprint == keyfiles.fingerprint(pair.public) == pair.public[:8].decode()
    assert refused[0].record()["fingerprint"] == refused[0].fingerprint and refused[0].kind == "key_refused"
    assert stranger.link_state == "key refused" and stranger.link_changes()[-1][0] == "key refused"
    assert svc.summary()["refused_keys"][refused[0].fingerprint]["count"] >= 1


def test_every_event_type_is_recordable():
    names = set()
    for e in (LinkEvent(1, "c", "connected", "d", "b" * 16, "1.1"),
              RejectEvent(1, "malformed", 3, 9, "c", 0, 1, "x"),
              KeyRefusedEvent(1, "abcdefgh", "127.0.0.1", 1, 1, 0, 1),
              ServiceStallEvent(1, 500.0)):
        rec = e.record()
        assert "t_ns" not in rec and e.t_ns == 1 and isinstance(e.kind, str) and isinstance(e.detail, str)
        names.add(e.event)
    assert names <= set(EVENT_NAMES)


# -- docs/protocol.md §7.3 (gap G16): the first reject is a record of its own, count 1 ---------------------------------

def test_the_first_reject_is_recorded_at_once_with_count_one_even_in_a_batch():
    c = RateLimitedCounter(window_ns=1000)
    for t in (10, 11, 12):  # three in one receive turn, before anything is released
        c.add(("malformed", "hp1"), t, f"d{t}")
    c.add(("wrong_version", "hp1"), 12, "w")
    first = c.due(13)
    assert [(k[0], n, tot, t0, t1) for k, n, tot, t0, t1, _ in first] == [
        ("malformed", 1, 1, 10, 10), ("wrong_version", 1, 1, 12, 12)]
    assert c.due(500) == []  # the rest waits for the window, counted from the first
    [(k, n, tot, t0, t1, detail)] = c.due(1010)
    assert (k[0], n, tot, t0, t1, detail) == ("malformed", 2, 3, 11, 12, "d12")
    c.add(("malformed", "hp1"), 5000, "later")  # a quiet window later: again a record of its own, at once
    assert [(n, tot) for _, n, tot, *_ in c.flush(5000)] == [(1, 4)]


def test_first_reject_record_of_a_burst_says_one(keydir, make_service, links):
    svc = make_service()
    link = connect(keydir, svc, "hp1", links=links)
    pump(svc, link, lambda ev: "connected" in kinds(ev))
    for _ in range(20):  # one burst: most of it lands in one receive turn
        link.dealer.send(b"garbage")
    events = pump(svc, link, lambda ev: svc.summary()["rejects"].get("malformed") == 20)
    svc.end_session()
    events += svc.poll().events
    rejects = [e for e in events if isinstance(e, RejectEvent)]
    assert rejects[0].count == 1 and rejects[0].total == 1
    assert sum(e.count for e in rejects) == 20 and rejects[-1].total == 20


# -- docs/protocol.md §4.3 "End of a session" (gaps G15, G17) ---------------------------------------------------------

def _grant(svc, ttl_ms=60):
    from guidance.gate import GateDecision, Reason

    now = time.monotonic_ns()
    return svc.publish(GateDecision(True, Reason.OK, (), now, now, ttl_ms, "cheek_left", 8.0, 3.0, 10.0, 25.0, 50.0))


def test_end_of_session_denies_first_then_takes_in_pulses_fired_under_the_last_permit(keydir, make_service, links):
    import threading

    svc = make_service()
    link = connect(keydir, svc, "hp1", links=links)
    t_end = time.monotonic() + 10
    while time.monotonic() < t_end and not link.gate.may_fire(time.monotonic_ns()):
        _grant(svc)
        pump(svc, link, lambda ev: True, seconds=0.02)
    permit = link.gate.fire(time.monotonic_ns())
    assert permit is not None, "no permit accepted"
    ender = threading.Thread(target=svc.end_session)
    ender.start()
    time.sleep(0.05)  # the service is ending the session: the pulse and its report come after that began
    assert svc.stopping and not svc.session_ended
    link.report_pulse(time.monotonic_ns(), permit, duration_us=2000, intensity_pct=60.0, contact=True)
    ender.join(timeout=10)
    pulses = svc.poll().pulses
    assert [(p.pulse_seq, p.permit_seq) for p in pulses] == [(1, permit.seq)]  # recorded, not lost
    final = svc.final_deny
    assert final is not None and (final.permit, final.reason, final.ttl_ms) == (False, "service_stopping", 60)
    assert _grant(svc).permit is False  # after end_session began, nothing is granted any more
