"""Wire fuzz (issue 14 item 8): 31,500 malformed frames from an allow-listed peer, over real CURVE sockets.

The service must not crash, must count every reject under the code it expects, must keep the reject records
bounded, and permits must keep reaching a controller before, during and after the flood. Counts are asserted,
never timings; the permit rates are printed (run with -s) for the record.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import zmq

from guidance.device_bridge import keys as keyfiles
from guidance.device_bridge import protocol
from guidance.device_bridge.controller.gate import ControllerLink, LinkKeys, Verdict
from guidance.device_bridge.events import RejectEvent
from guidance.device_bridge.protocol import Pong, ProtocolError, Pulse, Status
from guidance.device_bridge.service import BridgeService
from guidance.gate import GateDecision, GatePolicy, Reason

MS = 1_000_000
FRAME_MS = 10
N_FRAMES = 10_500
ROUNDS = 3  # the same flood sent three times over: 31,500 frames
FUZZER = "fuzzer"


def valid_messages(rng: random.Random) -> list[bytes]:
    boot = "%016x" % rng.getrandbits(64)
    out = []
    for who in (FUZZER, "ctl"):
        for i in range(1, 6):
            out.append(Pulse(who, boot, i, 10**12 + i, 2000, 60.0, 1.25, "9f2c4e1a7b3d5c60", 40 + i, True).encode())
            out.append(Status(who, boot, i, 10**12, True, "ok", True, 7, i, 0).encode())
            out.append(Pong(who, boot, i, 5, 10**12, 10**12 + 9).encode())
    return out


def expected_code(frames: list[bytes]) -> str | None:
    """What the service must say about this message from a connection whose key is bound to FUZZER (None: valid)."""
    if len(frames) != 1:
        return "malformed"
    try:
        msg = protocol.decode(frames[0], expect=("pulse", "status", "pong"))
    except ProtocolError as exc:
        return exc.code
    if msg.controller != FUZZER:
        return "identity_mismatch"
    if isinstance(msg, Pong):
        return "pong_unmatched"  # it never sent a valid status, so it is never pinged
    return None


def make_flood(n: int, seed: int = 14) -> tuple[list[list[bytes]], Counter]:
    rng = random.Random(seed)
    base = valid_messages(rng)
    flood: list[list[bytes]] = []
    expect: Counter = Counter()
    while len(flood) < n:
        r = rng.random()
        if r < 0.45:  # mutations of valid messages: flipped, dropped, inserted bytes
            b = bytearray(rng.choice(base))
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(len(b))
                op = rng.random()
                if op < 0.4:
                    b[pos] = rng.randrange(256)
                elif op < 0.7:
                    del b[pos]
                else:
                    b.insert(pos, rng.randrange(256))
            frames = [bytes(b)]
        elif r < 0.6:
            frames = [rng.randbytes(rng.randint(0, 300))]
        elif r < 0.7:
            frames = [rng.choice(base).replace(b'"v":1', b'"v":%d' % rng.randint(2, 9), 1)]
        elif r < 0.8:
            frames = [rng.choice([b'{"v":1,"type":"permit"}', b'{"v":1,"type":"ping","minor":1}'])]
        elif r < 0.9:  # perfectly valid, but under another controller's id
            frames = [rng.choice([m for m in base if b'"ctl"' in m])]
        else:
            frames = [rng.choice(base), rng.choice(base)]  # multipart
        code = expected_code(frames)
        if code is None:
            continue  # a mutation that happens to be valid for the fuzzer's own id is not a reject
        flood.append(frames)
        expect[code] += 1
    return flood, expect


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz") / "keys"
    keyfiles.generate(d, ("ctl", FUZZER))
    return d


def curve_keys(keydir: Path, name: str) -> LinkKeys:
    pair = keyfiles.load_pair(keydir / f"{name}.key_secret")
    return LinkKeys(keyfiles.load_public(keydir / "service.key"), pair.public, pair.secret)


def test_ten_thousand_malformed_frames_are_counted_and_permits_keep_flowing(keydir):
    flood, expect = make_flood(N_FRAMES)
    assert sum(expect.values()) == len(flood) >= 10_000
    assert set(expect) >= {"malformed", "wrong_version", "unexpected_type", "identity_mismatch", "pong_unmatched"}

    svc = BridgeService("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", keys=keyfiles.load_service_keys(keydir),
                        policy=GatePolicy(ttl_ms=50))
    ctl = ControllerLink(svc.permit_endpoint, svc.report_endpoint, controller_id="ctl", keys=curve_keys(keydir, "ctl"))
    phase = {"name": "warmup"}
    accepted: Counter = Counter()  # permits the controller's gate accepted, by phase
    stop = threading.Event()

    def controller() -> None:
        next_status = 0.0
        while not stop.is_set():
            for v in ctl.poll(5):
                if v == Verdict.ACCEPTED:
                    accepted[phase["name"]] += 1
            if time.monotonic() >= next_status:
                ctl.send_status(False)
                next_status = time.monotonic() + 0.1

    fz = ctl.ctx.socket(zmq.DEALER)  # the fuzzer: an allow-listed key, its own connection
    k = curve_keys(keydir, FUZZER)
    fz.curve_serverkey, fz.curve_publickey, fz.curve_secretkey = k.server_public, k.client_public, k.client_secret
    fz.setsockopt(zmq.SNDHWM, 0)
    fz.linger = 0
    fz.connect(svc.report_endpoint)
    sent = {"n": 0}

    def fuzz() -> None:
        for _ in range(ROUNDS):
            for frames in flood:
                fz.send_multipart(frames)
                sent["n"] += 1

    published: Counter = Counter()
    seconds: Counter = Counter()
    events: list = []

    def frames_for(name: str, until) -> None:
        phase["name"] = name
        t0 = time.monotonic()
        while not until():
            now = time.monotonic_ns()
            svc.publish(GateDecision(True, Reason.OK, (), now, now, 50, "cheek_left", 8.0, 3.0, 10.0, 25.0, 50.0))
            published[name] += 1
            events.extend(svc.poll().events)
            time.sleep(max(0.0, (now + FRAME_MS * MS - time.monotonic_ns()) / 1e9))
        seconds[name] += time.monotonic() - t0

    th = threading.Thread(target=controller, daemon=True)
    th.start()
    fuzzer = threading.Thread(target=fuzz, daemon=True)
    try:
        t_end = time.monotonic() + 10
        frames_for("warmup", lambda: accepted["warmup"] >= 5 or time.monotonic() > t_end)
        assert accepted["warmup"] >= 5, "the controller never started accepting permits"
        t_before = time.monotonic() + 1.0
        frames_for("before", lambda: time.monotonic() > t_before)
        fuzzer.start()
        t_end = time.monotonic() + 60
        frames_for("during", lambda: sum(svc.receiver.reject_totals().values()) >= ROUNDS * len(flood)
                   or time.monotonic() > t_end)
        t_after = time.monotonic() + 1.0
        frames_for("after", lambda: time.monotonic() > t_after)
    finally:
        fuzzer.join(timeout=30)
        fz.close(0)
        # end the session while the controller still reports: end_session() keeps listening until the last permit's
        # window and the report grace have passed (docs/protocol.md §4.3), and a controller stopped first is silent then
        svc.end_session()
        stop.set()
        th.join(timeout=5)
        events.extend(svc.poll().events)
        summary = svc.summary()
        svc.close()
        ctl.close()

    rates = {p: (published[p] / seconds[p], accepted[p] / seconds[p]) for p in ("before", "during", "after")}
    print("\nfuzz: %d frames sent; permits/s published/accepted: %s; flood lasted %.2f s" % (
        sent["n"], ", ".join(f"{p} {a:.0f}/{b:.0f}" for p, (a, b) in rates.items()), seconds["during"]))
    assert sent["n"] == ROUNDS * len(flood) >= 30_000
    assert svc.receiver_errors == 0
    expect = Counter({code: ROUNDS * n for code, n in expect.items()})
    assert summary["rejects"] == dict(expect)  # every reject counted, under the code it deserved
    assert summary["rejects_by_source"] == {FUZZER: dict(expect)}
    assert summary["controllers"]["ctl"]["state"] == "connected"  # the honest controller was never silent
    assert summary["pulses"]["received"] == 0
    rejects = [e for e in events if isinstance(e, RejectEvent)]
    assert sum(e.count for e in rejects) == sent["n"]
    elapsed = seconds["during"] + seconds["after"] + 2
    assert len(rejects) <= len(expect) * (elapsed + 2)  # one per code per second, not one per frame
    for p in ("before", "during", "after"):  # permits kept flowing and kept being accepted
        assert published[p] > 0 and accepted[p] > 0, p
    assert accepted["during"] >= 0.5 * published["during"]
