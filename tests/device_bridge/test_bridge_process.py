"""Fault injection with real ZeroMQ sockets (CURVE on) and a real `guidance controller-sim` process.

Each fault must end in "deny" within ttl + one frame. The controller-sim logs
every pulse with the controller time it checked `may_fire` at; on one host
that is the same CLOCK_MONOTONIC the test reads, so "no pulse after the
deadline" is checked against the controller's own record.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from guidance.device_bridge import keys as keyfiles
from guidance.device_bridge.attribution import ANNOUNCED_REPORT_GRACE_MS, AttributedPulse
from guidance.device_bridge.controller.gate import ControllerLink, LinkKeys
from guidance.device_bridge.protocol import Permit, Pulse
from guidance.device_bridge.service import BridgeService
from guidance.errors import UserError
from guidance.gate import GateDecision, GatePolicy, Reason

MS = 1_000_000
FRAME_MS = 10
TTL_MS = 50
DEADLINE_NS = (TTL_MS + FRAME_MS) * MS
POLICY = GatePolicy(ttl_ms=TTL_MS)


# Every controller id these tests use has its own key, allow-listed under that id (identity binding).
CONTROLLER_IDS = ("controller", "hp1", "hpj", "m", "big", "good", "last", "slow", "later", "end", "hpr", "kept")


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bridge") / "keys"
    keyfiles.generate(d, CONTROLLER_IDS)
    return d


@pytest.fixture
def service(keydir):
    svc = BridgeService("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", keys=keyfiles.load_service_keys(keydir),
                        policy=POLICY, ping_interval_ms=20, heartbeat_timeout_ms=150)
    yield svc
    svc.close()


class Sim:
    """A controller-sim child process, always killed at the end."""

    def __init__(self, tmp: Path, permit_ep: str, report_ep: str, *extra: str, name: str = "sim"):
        self.log = tmp / f"{name}.jsonl"
        cmd = [sys.executable, "-m", "guidance.cli", "controller-sim", "--connect", permit_ep, "--report", report_ep,
               "--rate-hz", "200", "--status-ms", "20", "--log", str(self.log), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def events(self, kind: str | None = None) -> list[dict]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed process may be cut
            if kind is None or e["event"] == kind:
                out.append(e)
        return out

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def sims():
    started: list[Sim] = []
    yield started
    for s in started:
        s.stop(signal.SIGKILL)
        if s.proc.stdout:
            s.proc.stdout.close()
            s.proc.stderr.close()


def decision(t_cap: int, permit: bool = True, reason: Reason = Reason.OK) -> GateDecision:
    return GateDecision(permit=permit, reason=reason, reasons=() if permit else (reason,), t_capture_ns=t_cap,
                        t_decided_ns=t_cap, ttl_ms=TTL_MS, zone="cheek_left", boundary_mm=8.0, required_mm=3.0,
                        speed_mm_s=10.0, tip_u=0.25, tip_v=0.5)


def run_frames(svc: BridgeService, seconds: float, frame=None, events: list | None = None,
               pulses: list | None = None) -> list[Permit | None]:
    """Publish at frame rate for `seconds`; `frame(i, t)` may return 'skip', 'deny', or raw bytes to send.

    What `poll()` returns goes into `events` and `pulses` when given.
    """
    out = []
    t_end = time.monotonic_ns() + int(seconds * 1e9)
    i = 0
    while (now := time.monotonic_ns()) < t_end:
        action = frame(i, now) if frame else None
        if action == "skip":
            out.append(None)
        elif isinstance(action, bytes):
            svc.pub.send(action)
            out.append(None)
        else:
            out.append(svc.publish(decision(now, permit=action != "deny",
                                            reason=Reason.OK if action != "deny" else Reason.TIP_LOST)))
        ps, evs = svc.poll()
        if events is not None:
            events.extend(evs)
        if pulses is not None:
            pulses.extend(ps)
        i += 1
        time.sleep(max(0.0, (now + FRAME_MS * MS - time.monotonic_ns()) / 1e9))
    return out


def start_sim(tmp_path, svc, keydir, sims, *extra, name="sim") -> Sim:
    s = Sim(tmp_path, svc.permit_endpoint, svc.report_endpoint, "--keys", str(keydir), *extra, name=name)
    sims.append(s)
    return s


def warm_up(svc: BridgeService, sim: Sim, min_pulses: int = 5, limit_s: float = 10.0) -> None:
    """Publish permits until the controller is connected, synced and firing."""
    t_end = time.monotonic() + limit_s
    while time.monotonic() < t_end:
        run_frames(svc, 0.1)
        if len(sim.events("pulse")) >= min_pulses and svc.heartbeat.controllers:
            return
        assert sim.proc.poll() is None, sim.proc.stderr.read()
    pytest.fail("controller-sim never started firing")


def pulses_after(sim: Sim, t_ns: int) -> list[dict]:
    return [e for e in sim.events("pulse") if e["t_ctrl_ns"] >= t_ns]


def assert_denies_after(svc, sim, t_last_good_capture: int, fault, seconds=0.3):
    run_frames(svc, seconds, fault)
    late = pulses_after(sim, t_last_good_capture + DEADLINE_NS)
    assert late == [], f"pulses after ttl + one frame: {late[:3]}"


@pytest.mark.parametrize("fault", ["dropped", "replayed", "seq_regression", "wrong_version", "camera_stalled"])
def test_fault_ends_in_deny_within_ttl_plus_a_frame(fault, tmp_path, service, keydir, sims):
    sim = start_sim(tmp_path, service, keydir, sims)
    warm_up(service, sim)
    sent = run_frames(service, 0.1)
    last = [p for p in sent if p is not None][-1]
    old = [p for p in sent if p is not None][0]
    n = {"i": 0}

    def frame(i, now):
        n["i"] += 1
        if fault == "dropped":
            return "skip"
        if fault == "replayed":  # the same old permit, over and over
            return old.encode()
        if fault == "seq_regression":
            p = Permit(**{**old.__dict__, "seq": old.seq + n["i"] % 5, "t_capture_ns": now, "t_publish_ns": now})
            return p.encode()
        if fault == "wrong_version":
            p = Permit(**{**last.__dict__, "seq": last.seq + n["i"], "t_capture_ns": now, "t_publish_ns": now})
            return p.encode().replace(b'"v":1', b'"v":2', 1)
        if fault == "camera_stalled":  # frames stop arriving: the service keeps stating the last frame
            p = Permit(**{**last.__dict__, "seq": last.seq + n["i"], "t_publish_ns": now})
            return p.encode()
        raise AssertionError(fault)

    assert_denies_after(service, sim, last.t_capture_ns, frame)
    assert len(pulses_after(sim, last.t_capture_ns - 50 * MS)) > 0  # it was firing right up to the fault
    # And it recovers on fresh permits (fail closed, not dead).
    n_before = len(sim.events("pulse"))
    run_frames(service, 0.3)
    assert len(sim.events("pulse")) > n_before


def test_service_killed(tmp_path, keydir, sims):
    code = (
        "import sys, time\n"
        "from guidance.device_bridge import keys\n"
        "from guidance.device_bridge.service import BridgeService\n"
        "from guidance.gate import GateDecision, Reason\n"
        f"svc = BridgeService('tcp://127.0.0.1:*', 'tcp://127.0.0.1:*', keys=keys.load_service_keys({str(keydir)!r}),"
        " ping_interval_ms=20)\n"
        "print(svc.permit_endpoint, svc.report_endpoint, flush=True)\n"
        "while True:\n"
        "    t = time.monotonic_ns()\n"
        f"    svc.publish(GateDecision(True, Reason.OK, (), t, t, {TTL_MS}, 'z', 9.0, 3.0, 1.0, 0.5, 0.5))\n"
        "    svc.poll()\n"
        f"    time.sleep({FRAME_MS / 1000})\n"
    )
    svc_proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        permit_ep, report_ep = svc_proc.stdout.readline().split()
        sim = Sim(tmp_path, permit_ep, report_ep, "--keys", str(keydir))
        sims.append(sim)
        t_end = time.monotonic() + 10
        while len(sim.events("pulse")) < 20 and time.monotonic() < t_end:
            time.sleep(0.05)
        assert len(sim.events("pulse")) >= 20
        t_kill = time.monotonic_ns()
        svc_proc.send_signal(signal.SIGKILL)
        svc_proc.wait(timeout=5)
        time.sleep(0.3)
        assert pulses_after(sim, t_kill + DEADLINE_NS) == []
        assert pulses_after(sim, t_kill - 100 * MS)  # it was firing until the kill
        assert sim.events("state")[-1]["state"] in ("expired", "revoked")
    finally:
        svc_proc.kill()
        svc_proc.wait(timeout=5)
        svc_proc.stdout.close()


def test_controller_restarted(tmp_path, service, keydir, sims):
    a = start_sim(tmp_path, service, keydir, sims, "--id", "hp1", name="a")
    warm_up(service, a)
    a.stop(signal.SIGKILL)
    t_restart = time.monotonic_ns()
    b = start_sim(tmp_path, service, keydir, sims, "--id", "hp1", name="b")
    warm_up(service, b)
    first = b.events("pulse")[0]
    ok_states = [e for e in b.events("state") if e["state"] == "ok"]
    assert ok_states and ok_states[0]["t_ctrl_ns"] <= first["t_ctrl_ns"]
    published = {p.seq: p for p in [service.publisher.log.get(service.boot, s) for s in range(1, service.publisher.seq + 1)] if p}
    assert all(published[e["permit_seq"]].t_capture_ns > t_restart for e in b.events("pulse"))
    assert "restarted" in [e.kind for e in service.heartbeat.events]
    run_frames(service, 0.2)
    assert "silent" not in [e.kind for e in service.heartbeat.events if e.t_ns > t_restart + 300 * MS]


def test_every_reported_pulse_is_in_coverage_or_violations(tmp_path, service, keydir, sims):
    sim = start_sim(tmp_path, service, keydir, sims, "--trigger", "schedule", "--schedule", "60,30",
                    "--rogue-pulse-at-s", "1.0")
    warm_up(service, sim)
    run_frames(service, 1.0, lambda i, t: "deny" if (i // 7) % 3 == 2 else None)
    sim.stop(signal.SIGTERM)
    assert sim.proc.returncode == 0
    run_frames(service, 0.3)
    fired = {e["pulse_seq"]: e for e in sim.events("pulse")}
    a = service.attributor
    covered = {p.pulse_seq for p in service.sink.pulses}
    violated = {p.pulse_seq for p in a.violations}
    assert covered | violated == set(fired) and not covered & violated
    assert a.accounted() and a.received == len(fired)
    rogue = [s for s, e in fired.items() if e.get("rogue")]
    assert len(rogue) == 1 and [v.reason for v in a.violations if v.pulse_seq == rogue[0]] == ["no_permit"]
    # On one host the offset is ~0, so attributed times must match the controller's own to a couple of ms.
    errs = [abs(p.t_service_ns - fired[p.pulse_seq]["t_ctrl_ns"]) for p in service.sink.pulses
            if p.time_source == "clock_offset"]
    assert errs and max(errs) < 2 * MS


def test_clock_offset_and_jump_are_followed(tmp_path, service, keydir, sims):
    sim = start_sim(tmp_path, service, keydir, sims, "--id", "hpj", "--clock-offset-ms", "5000",
                    "--clock-jump-at-s", "1.2", "--clock-jump-ms", "700")
    warm_up(service, sim)
    run_frames(service, 0.3)
    assert abs(service.clock_offset_ns("hpj") - 5000 * MS) < 2 * MS
    run_frames(service, 1.5)
    assert abs(service.clock_offset_ns("hpj") - 5700 * MS) < 2 * MS
    assert service.receiver.peers["hpj"].clock.steps >= 1
    start = sim.events("start")[0]["t_mono_ns"]
    jump_mono = start + int(1.2e9)
    by_seq = {e["pulse_seq"]: e for e in sim.events("pulse")}
    settled = [p for p in service.sink.pulses if by_seq[p.pulse_seq]["t_mono_ns"] > jump_mono + 400 * MS]
    assert len(settled) > 10
    for p in settled:  # pulses land on the service timeline within 2 ms after the re-sync
        e = by_seq[p.pulse_seq]
        assert abs(p.t_service_ns - (e["t_ctrl_ns"] - 5700 * MS)) < 2 * MS
    late_viol = [v for v in service.violations if v.t_ctrl_ns and by_seq[v.pulse_seq]["t_mono_ns"] > jump_mono + 400 * MS]
    assert late_viol == []


def test_wrong_keys_get_nothing_and_inject_nothing_and_are_named(tmp_path, service, keydir, sims):
    other = tmp_path / "other"
    keyfiles.generate(other)
    # A controller whose key is not allow-listed (it knows the right service key).
    rogue = start_sim(tmp_path, service, keydir, sims, "--key", str(other / "controller.key_secret"), name="rogue")
    # A controller trusting the wrong service key.
    fooled = Sim(tmp_path, service.permit_endpoint, service.report_endpoint, "--server-key",
                 str(other / "service.key"), "--key", str(keydir / "controller.key_secret"), name="fooled")
    sims.append(fooled)
    # A plain, unencrypted peer.
    ctx = zmq.Context()
    plain_sub, plain_dealer = ctx.socket(zmq.SUB), ctx.socket(zmq.DEALER)
    events: list = []
    try:
        plain_sub.subscribe(b"")
        plain_sub.connect(service.permit_endpoint)
        plain_dealer.connect(service.report_endpoint)
        plain_dealer.send(Pulse("x", "0" * 16, 1, 1, 1, 1.0, None, None, None, True).encode())
        run_frames(service, 1.5, events=events)
        t_end = time.monotonic() + 15  # on a loaded machine a sim process may take a while to start
        while time.monotonic() < t_end and not (rogue.events("link") and fooled.events("link")
                                                and any(e.event == "key_refused" for e in events)):
            run_frames(service, 0.2, events=events)
        run_frames(service, 0.3, events=events)
        assert plain_sub.poll(0) == 0
        assert rogue.events("pulse") == [] and fooled.events("pulse") == []
        assert rogue.proc.poll() is None and fooled.proc.poll() is None  # alive, just denied
        assert service.attributor.received == 0 and service.heartbeat.controllers == {}
        # ... and both sides say why (issue 14 item 5): the service names the refused key by its fingerprint,
        refused = [e for e in events if e.event == "key_refused"]
        fp = keyfiles.fingerprint(keyfiles.load_public(other / "controller.key"))
        assert refused and {e.fingerprint for e in refused} == {fp} and refused[0].address == "127.0.0.1"
        assert service.summary()["refused_keys"][fp]["count"] >= sum(e.count for e in refused)
        assert any(e.event == "handshake_failed" and e.error == "protocol" for e in events)  # the fooled one
        # and each controller knows its link state.
        assert [e["state"] for e in rogue.events("link")][-1] == "key refused"
        assert [e["state"] for e in fooled.events("link")][-1] == "handshake failed"
    finally:
        plain_sub.close(0)
        plain_dealer.close(0)
        ctx.term()
    rogue.stop()
    fooled.stop()
    assert "key refused by the service" in rogue.proc.stderr.read()
    assert "CURVE handshake with the service failed" in fooled.proc.stderr.read()


def test_malformed_reports_are_counted_and_dropped(keydir, service):
    pair = keyfiles.load_pair(keydir / "m.key_secret")
    link = ControllerLink(service.permit_endpoint, service.report_endpoint, controller_id="m",
                          keys=LinkKeys(keyfiles.load_public(keydir / "service.key"), pair.public, pair.secret))
    try:
        for junk in (b"", b"{", b'{"v":9,"type":"pulse"}', b"\xff" * 100):
            link.dealer.send(junk)
        link.dealer.send_multipart([b"a", b"b"])
        link.send_status(False)
        link.report_pulse(time.monotonic_ns(), None, duration_us=1, intensity_pct=1.0, contact=True)
        t_end = time.monotonic() + 5
        while service.attributor.received < 1 and time.monotonic() < t_end:
            service.poll()
            link.poll(5)
        c = service.receiver.counters
        assert c["malformed"] == 4 and c["wrong_version"] == 1 and c["status"] >= 1
        assert service.attributor.received == 1 and service.violations[0].reason == "no_permit"
    finally:
        link.close()


def test_no_keys_means_no_start_unless_insecure(tmp_path):
    with pytest.raises(UserError):
        BridgeService("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", keys=None)
    with pytest.raises(UserError):
        ControllerLink("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", controller_id="c", keys=None)
    svc = BridgeService("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", keys=None, insecure=True)
    try:
        with pytest.raises(UserError, match="busy"):
            BridgeService(svc.permit_endpoint, "tcp://127.0.0.1:*", keys=None, insecure=True)
    finally:
        svc.close()


def test_oversized_report_is_refused_and_service_keeps_working(keydir, service):
    big = connect(keydir, service, "big")
    good = connect(keydir, service, "good")
    try:
        big.dealer.send(b"{" + b" " * 20_000 + b"}")
        good.report_pulse(time.monotonic_ns(), None, duration_us=1, intensity_pct=1.0, contact=True)
        t_end = time.monotonic() + 5
        while service.attributor.received < 1 and time.monotonic() < t_end:
            time.sleep(0.01)
        time.sleep(0.2)
        assert service.attributor.received == 1 and service.violations[0].controller == "good"
        assert sum(service.receiver.counters.values()) == 1  # the big frame never reached the decoder
        assert service.receiver_errors == 0
    finally:
        big.close()
        good.close()


# -- a lost *last* report: the status count (`pulses`) is the witness --------------------------------------------------

GRACE_NS = int(ANNOUNCED_REPORT_GRACE_MS * MS)
STATUS_S = 0.1


@pytest.fixture
def services(keydir):
    """Extra services with their own settings, always closed at the end."""
    made: list[BridgeService] = []

    def make(**kw) -> BridgeService:
        svc = BridgeService("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", keys=keyfiles.load_service_keys(keydir),
                            policy=POLICY, ping_interval_ms=20, **kw)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


def connect(keydir: Path, svc: BridgeService, controller_id: str) -> ControllerLink:
    """A controller in this process: a new boot each time, reporting only what the test tells it to."""
    pair = keyfiles.load_pair(keydir / f"{controller_id}.key_secret")
    return ControllerLink(svc.permit_endpoint, svc.report_endpoint, controller_id=controller_id,
                          keys=LinkKeys(keyfiles.load_public(keydir / "service.key"), pair.public, pair.secret))


def fire(link: ControllerLink, svc: BridgeService, report: bool = True) -> Pulse:
    """Deliver one pulse under a fresh permit; report=False counts it (status says so) but its report is lost.

    Pulses are spaced beyond the protocol's pulse-rate limit (5 ms).
    """
    time.sleep(0.006)
    now = time.monotonic_ns()
    permit = svc.publish(decision(now))
    if report:
        return link.report_pulse(now, permit, duration_us=2000, intensity_pct=60.0, contact=True)
    link.pulse_seq += 1
    link.pulses += 1
    return Pulse(link.controller_id, link.boot, link.pulse_seq, now, 2000, 60.0, None, permit.boot, permit.seq, True)


def beat(link: ControllerLink, svc: BridgeService, seconds: float, until=None) -> list[tuple[int, AttributedPulse]]:
    """Be the controller's heartbeat (a status every 100 ms) for `seconds`, or until `until(seen)`.

    Drains the service meanwhile; returns (time first seen, outcome) for everything it attributed.
    """
    seen: list[tuple[int, AttributedPulse]] = []
    t_end = time.monotonic() + seconds
    next_status = 0.0
    while time.monotonic() < t_end and not (until and until(seen)):
        if time.monotonic() >= next_status:
            link.send_status(True)
            next_status = time.monotonic() + STATUS_S
        pulses, _ = svc.poll()
        now = time.monotonic_ns()
        seen.extend((now, p) for p in pulses)
        time.sleep(0.005)
    return seen


def missing(svc: BridgeService) -> list[tuple[str, int]]:
    with svc.lock:
        return sorted((v.controller_boot, v.pulse_seq) for v in svc.violations if v.reason == "missing")


def status_received(svc: BridgeService, link: ControllerLink, pulses: int) -> bool:
    with svc.lock:
        h = svc.heartbeat.controllers.get(link.controller_id)
        return h is not None and h.boot == link.boot and h.last.pulses == pulses


def test_lost_last_report_is_missing_once_after_the_grace(keydir, service):
    link = connect(keydir, service, "last")
    try:
        fire(link, service)
        fire(link, service)
        fire(link, service, report=False)  # pulse 3 delivered, its report lost: no later report shows a gap
        t_status = time.monotonic_ns()
        seen = beat(link, service, 0.2)  # every status says pulses=3
        assert service.attributor.received == 2 and status_received(service, link, 3)
        assert missing(service) == [] and [p for _, p in seen if p.reason == "missing"] == []  # in flight, maybe
        seen += beat(link, service, 5.0, until=lambda s: any(p.reason == "missing" for _, p in s))
        seen += beat(link, service, 0.4)  # more statuses repeating the same count flag nothing more
        flagged = [(t, p) for t, p in seen if p.reason == "missing"]
        assert [(p.controller, p.controller_boot, p.pulse_seq) for _, p in flagged] == [("last", link.boot, 3)]
        assert flagged[0][0] >= t_status + GRACE_NS
        assert missing(service) == [(link.boot, 3)]
        assert service.attributor.covered == 2 and service.attributor.accounted()
    finally:
        link.close()


def test_last_report_late_within_the_grace_is_no_violation(keydir, service):
    link = connect(keydir, service, "slow")
    try:
        fire(link, service)
        fire(link, service)
        third = fire(link, service, report=False)
        seen = beat(link, service, 0.1)  # statuses say 3 before report 3 is sent
        link.dealer.send(third.encode())
        seen += beat(link, service, 0.3 + ANNOUNCED_REPORT_GRACE_MS / 1000)
        assert status_received(service, link, 3)
        assert [p.pulse_seq for _, p in seen] == [1, 2, 3] and all(p.outcome == "coverage" and not p.late
                                                                  for _, p in seen)
        assert service.violations == [] and service.attributor.covered == 3
    finally:
        link.close()


def test_report_after_its_missing_flag_replaces_it_marked_late(keydir, service):
    link = connect(keydir, service, "later")
    try:
        fire(link, service)
        second = fire(link, service, report=False)
        beat(link, service, 5.0, until=lambda s: any(p.reason == "missing" for _, p in s))
        assert missing(service) == [(link.boot, 2)]
        link.dealer.send(second.encode())
        seen = beat(link, service, 5.0, until=lambda s: any(p.pulse_seq == 2 for _, p in s))
        late = [p for _, p in seen if p.pulse_seq == 2]
        assert len(late) == 1 and late[0].outcome == "coverage" and late[0].late
        assert missing(service) == [] and service.violations == []  # replaced, not counted twice
        assert service.attributor.covered == 2 and service.attributor.late == 1 and service.attributor.accounted()
    finally:
        link.close()


@pytest.mark.parametrize("how", ["end_session", "close"])
def test_session_end_records_announced_unreported_pulses_as_missing(how, keydir, services):
    svc = services(report_grace_ms=60_000.0)  # the grace cannot run out here: only the session end can flag
    link = connect(keydir, svc, "end")
    try:
        fire(link, svc)
        fire(link, svc, report=False)
        seen = beat(link, svc, 5.0, until=lambda s: status_received(svc, link, 2) and svc.attributor.received == 1)
        assert status_received(svc, link, 2) and missing(svc) == []
        if how == "end_session":
            svc.end_session()
            pulses, _ = svc.poll()  # what a session recorder takes in before it closes
            got = [(p.reason, p.pulse_seq) for p in [p for _, p in seen] + pulses]
            assert got == [("ok", 1), ("missing", 2)]
            svc.end_session()  # idempotent
        svc.close()
        assert missing(svc) == [(link.boot, 2)] and svc.attributor.covered == 1
    finally:
        link.close()


def test_controller_restart_flags_the_old_boots_lost_reports_and_counts_the_new_boot_fresh(keydir, service):
    old = connect(keydir, service, "hpr")
    try:
        fire(old, service)
        fire(old, service)
        fire(old, service, report=False)  # old boot: 3 delivered, report 3 lost
        seen = beat(old, service, 5.0,
                    until=lambda s: status_received(service, old, 3) and service.attributor.received == 2)
        assert status_received(service, old, 3)
    finally:
        old.close()  # the old process is gone: report 3 will never come
    new = connect(keydir, service, "hpr")
    try:
        assert new.boot != old.boot
        fire(new, service)
        fire(new, service, report=False)  # new boot: 1, 2 lost (≤ the old boot's 3: a shared count would hide it)
        seen += beat(new, service, 5.0, until=lambda s: sum(p.reason == "missing" for _, p in s) >= 2)
        seen += beat(new, service, 0.4)
        assert missing(service) == sorted([(old.boot, 3), (new.boot, 2)])
        assert sorted((p.controller_boot, p.pulse_seq, p.reason) for _, p in seen) == sorted([
            (old.boot, 1, "ok"), (old.boot, 2, "ok"), (old.boot, 3, "missing"),
            (new.boot, 1, "ok"), (new.boot, 2, "missing")])
        assert "restarted" in [e.kind for e in service.heartbeat.events]
        assert service.attributor.covered == 3 and service.attributor.accounted()
    finally:
        new.close()


# -- contact: the controller knows what the camera cannot (issue 14 item 7) --------------------------------------------

def write_contact_truth(d: Path, fps: float, contact: list[bool]) -> Path:
    """A minimal `guidance simulate` folder: info.json (fps) and ground_truth.csv with the contact column."""
    from guidance.sim.ground_truth import GTFrame, write_ground_truth

    d.mkdir()
    nan = float("nan")
    rows = [GTFrame(i, int(round(i * 1e9 / fps)), i, True, 0, "sweep", c, 0.0 if c else 15.0, 10.0, 20.0,
                    "cheek_left", "treat", 5.0, True, 5.0, nan, nan, nan, nan, nan, nan, nan, 10.0, 10.0, True, "")
            for i, c in enumerate(contact)]
    write_ground_truth(d / "ground_truth.csv", rows)
    (d / "info.json").write_text(json.dumps({"fps": fps, "frames": len(rows)}))
    return d


def test_controller_sim_fires_only_in_contact_and_the_service_tells_lifted_and_1_0_pulses_apart(tmp_path, service,
                                                                                                  keydir, sims):
    fps = 10.0
    contact = [True] * 10 + [False] * 10 + [True] * 10 + [False] * 5
    truth = write_contact_truth(tmp_path / "sim", fps, contact)
    t0 = time.monotonic_ns() + 3_000_000_000  # frame 0 of the "video" is captured 3 s from now
    frame_of = lambda t: int((t - t0) * fps // 1_000_000_000)  # noqa: E731
    common = ("--rate-hz", "40", "--contact-truth", str(truth), "--t0-ns", str(t0))
    honest = start_sim(tmp_path, service, keydir, sims, "--id", "hp1", *common, name="honest")
    lifted = start_sim(tmp_path, service, keydir, sims, "--id", "hpj", *common, "--misbehave", "lifted", name="lifted")
    old = start_sim(tmp_path, service, keydir, sims, "--id", "m", "--rate-hz", "40", "--protocol", "1.0", name="old")
    events: list = []
    pulses: list = []
    t_end_ns = t0 + int(len(contact) / fps * 1e9) + 300_000_000
    run_frames(service, max(0.5, (t_end_ns - time.monotonic_ns()) / 1e9), events=events, pulses=pulses)
    for s in (honest, lifted, old):
        s.stop()
        assert s.proc.returncode == 0, s.proc.stderr.read()
    run_frames(service, 0.3, events=events, pulses=pulses)
    service.end_session()
    pulses += service.poll().pulses

    fired = honest.events("pulse")
    frames = [frame_of(e["t_ctrl_ns"]) for e in fired]
    assert fired and all(0 <= f < len(contact) and contact[f] for f in frames), frames
    assert any(20 <= f < 30 for f in frames)  # it fired again once the tip was back on the skin
    assert all(e["contact"] is True for e in fired)
    changes = honest.events("contact")
    assert len(changes) >= 3 and all(e["contact"] == (0 <= e["frame"] < len(contact) and contact[e["frame"]])
                                     for e in changes)  # before frame 0 and after the last: no contact
    assert "ground truth" in honest.events("start")[0]["contact"]

    off = [e for e in lifted.events("pulse") if not e["contact"]]
    assert off and all(not contact[f] if 0 <= f < len(contact) else True for f in
                       (frame_of(e["t_ctrl_ns"]) for e in off))
    a = service.attributor
    by = {(p.controller, p.pulse_seq): p for p in pulses}
    got_lifted = [by[("hpj", e["pulse_seq"])] for e in off if ("hpj", e["pulse_seq"]) in by]
    assert got_lifted and all(p.contact is False and not p.deposits for p in got_lifted)
    assert all(p.contact is True for p in service.sink.pulses)  # nothing lifted, nothing unknown deposited
    assert a.lifted >= len(got_lifted)

    assert "assumed" in old.events("start")[0]["contact"] or "not reported" in old.events("start")[0]["contact"]
    connected = [e for e in events if e.event == "link" and e.kind == "connected" and e.controller == "m"]
    assert connected and connected[0].protocol == "1.0" and "no contact sense" in connected[0].detail
    from_old = [p for p in pulses if p.controller == "m"]
    assert from_old and all(p.contact is None and not p.deposits for p in from_old)
    assert service.summary()["controllers"]["m"]["protocol"] == "1.0"
    assert a.contact_unknown >= len(from_old) and a.accounted()


def test_service_stopped_and_continued_does_not_blame_the_controller(tmp_path, keydir, sims):
    """Issue 14 item 1, the real thing: SIGSTOP the service process for 0.8 s; the healthy controller is not silent."""
    code = (
        "import json, sys, time\n"
        "from guidance.device_bridge import keys\n"
        "from guidance.device_bridge.service import BridgeService\n"
        "from guidance.gate import GateDecision, Reason\n"
        f"svc = BridgeService('tcp://127.0.0.1:*', 'tcp://127.0.0.1:*', keys=keys.load_service_keys({str(keydir)!r}),"
        " ping_interval_ms=20)\n"
        "print(svc.permit_endpoint, svc.report_endpoint, flush=True)\n"
        "while True:\n"
        "    t = time.monotonic_ns()\n"
        f"    svc.publish(GateDecision(True, Reason.OK, (), t, t, {TTL_MS}, 'z', 9.0, 3.0, 1.0, 0.5, 0.5))\n"
        "    for e in svc.poll().events:\n"
        "        print(json.dumps({'event': e.event, 'kind': e.kind, 'controller': e.controller}), flush=True)\n"
        f"    time.sleep({FRAME_MS / 1000})\n"
    )
    svc_proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    lines: list[dict] = []

    def read() -> None:
        for line in svc_proc.stdout:
            lines.append(json.loads(line))

    try:
        permit_ep, report_ep = svc_proc.stdout.readline().split()
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        sim = Sim(tmp_path, permit_ep, report_ep, "--keys", str(keydir), "--status-ms", "100")
        sims.append(sim)
        t_end = time.monotonic() + 15
        while not any(e["kind"] == "connected" for e in lines) and time.monotonic() < t_end:
            time.sleep(0.05)
        assert any(e["kind"] == "connected" for e in lines)
        time.sleep(0.3)
        svc_proc.send_signal(signal.SIGSTOP)
        time.sleep(0.8)
        svc_proc.send_signal(signal.SIGCONT)
        time.sleep(1.0)
        assert sim.proc.poll() is None
    finally:
        svc_proc.kill()
        svc_proc.wait(timeout=5)
    reader.join(timeout=5)
    svc_proc.stdout.close()
    kinds = [e["kind"] for e in lines]
    assert "service_stall" in kinds and "silent" not in kinds, kinds


def test_a_controller_linked_across_two_sessions_brings_no_missing_into_the_second(keydir):
    """The same controller boot stays connected while one service session ends and the next starts on the
    same endpoints (the console's flow): the first session's pulses are not the second's `missing`."""
    from guidance.sim.demo import free_port_pair

    port = free_port_pair()
    eps = (f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}")
    keys = keyfiles.load_service_keys(keydir)
    first = BridgeService(*eps, keys=keys, policy=POLICY, ping_interval_ms=20)
    pair = keyfiles.load_pair(keydir / "kept.key_secret")
    link = ControllerLink(*eps, controller_id="kept",
                          keys=LinkKeys(keyfiles.load_public(keydir / "service.key"), pair.public, pair.secret))
    try:
        for _ in range(4):
            fire(link, first)
        fire(link, first, report=False)  # the first session's last report is lost: ITS missing, not the next's
        beat(link, first, 5.0, until=lambda s: any(p.reason == "missing" for _, p in s))
        assert missing(first) == [(link.boot, 5)]
        first.close()
        second = BridgeService(*eps, keys=keys, policy=POLICY, ping_interval_ms=20)
        try:
            beat(link, second, 5.0, until=lambda s: status_received(second, link, 5))
            assert status_received(second, link, 5) and second.attributor.earlier_session == 5
            fire(link, second)
            fire(link, second)
            seen = beat(link, second, 0.2 + ANNOUNCED_REPORT_GRACE_MS / 1000)
            assert [(p.pulse_seq, p.outcome) for _, p in seen] == [(6, "coverage"), (7, "coverage")]
            assert missing(second) == [] and second.violations == []
            assert second.summary()["pulses"]["earlier_session"] == 5
        finally:
            second.close()
    finally:
        link.close()
        first.close()
