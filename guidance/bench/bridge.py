"""Bridge benchmark: permit publish → controller receive over loopback, and the gate costs.

Measured here, never in timed tests. The receiving side is a real
`ControllerLink` (SUB with CONFLATE, CURVE client) on its own thread; permits
are paced so the number is latency, not queueing. Latency is the controller's
receive stamp minus the permit's `t_publish_ns` (one monotonic clock: same host).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence

import numpy as np
import zmq

from guidance.device_bridge import keys as keyfiles
from guidance.device_bridge.controller.gate import ControllerGate, ControllerLink, LinkKeys
from guidance.device_bridge.protocol import Permit
from guidance.device_bridge.service import BridgeService
from guidance.gate import GateDecision, GateInput, GatePolicy, Reason, ZoneKind, decide


def _stats(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(np.median(a)), float(np.percentile(a, 99))


def _decision(t: int) -> GateDecision:
    return GateDecision(True, Reason.OK, (), t, t, 50, "cheek_left", 8.0, 3.0, 10.0, 0.25, 0.5)


def run_bridge_bench(n: int = 2000, curve: bool = True, pace_us: float = 500.0) -> dict:
    """Returns latency_median_ms / latency_p99_ms, controller and service gate costs (µs), counts."""
    with tempfile.TemporaryDirectory() as tmp:
        if curve:
            keyfiles.generate(f"{tmp}/k")
            skeys = keyfiles.load_service_keys(f"{tmp}/k")
            pair = keyfiles.load_pair(f"{tmp}/k/controller.key_secret")
            lkeys = LinkKeys(skeys.pair.public, pair.public, pair.secret)
        svc = BridgeService("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", keys=skeys if curve else None,
                            insecure=not curve, ping_interval_ms=1000)
        link = ControllerLink(svc.permit_endpoint, svc.report_endpoint, controller_id="controller",
                              keys=lkeys if curve else None, insecure=not curve)
        lat_ns: list[int] = []
        stop = threading.Event()

        def receive() -> None:
            while not stop.is_set():
                if link.sub.poll(20) == 0:
                    continue
                try:
                    data = link.sub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                t = time.monotonic_ns()
                link.gate.offer(data, t, True)
                held = link.gate.held
                if held is not None and held.t_recv_ns == t:
                    lat_ns.append(t - held.permit.t_publish_ns)

        th = threading.Thread(target=receive, daemon=True)
        th.start()
        try:
            t_end = time.monotonic() + 5.0
            while not lat_ns and time.monotonic() < t_end:  # connect + CURVE handshake + boot confirm
                svc.publish(_decision(time.monotonic_ns()))
                time.sleep(0.005)
            lat_ns.clear()
            sent = 0
            for _ in range(n):
                svc.publish(_decision(time.monotonic_ns()))
                sent += 1
                time.sleep(pace_us / 1e6)
            time.sleep(0.05)
        finally:
            stop.set()
            th.join(timeout=2)
            link.close()
            svc.close(final_deny=False)
    result: dict = {"curve": curve, "sent": sent, "received": len(lat_ns)}
    if lat_ns:
        result["latency_median_ms"], result["latency_p99_ms"] = (x / 1e6 for x in _stats(lat_ns))
    result.update(_gate_costs(n))
    return result


def _gate_costs(n: int) -> dict:
    """Cost of the controller's offer+may_fire per permit, and of the service's `decide`."""
    boot = "abcdefabcdefabcd"
    frames = [Permit("guidance", boot, i + 1, i * 10_000_000, i * 10_000_000 + 1_000_000, 50, True, "ok",
                     "cheek_left", 0.25, 0.5, 8.0, 3.0, 10.0).encode() for i in range(n + 2)]
    gate = ControllerGate()
    costs = []
    for i, data in enumerate(frames):
        t = i * 10_000_000 + 2_000_000
        t0 = time.perf_counter_ns()
        gate.offer(data, t, True)
        ok = gate.may_fire(t + 1)
        costs.append(time.perf_counter_ns() - t0)
        assert ok or i == 0
    ctrl = _stats(costs[2:])
    policy = GatePolicy()
    dcosts = []
    for i in range(n):
        now = 1_000_000_000 + i * 10_000_000
        g = GateInput(armed=True, t_capture_ns=now - 5_000_000, face_found=True, t_face_ns=now - 5_000_000,
                      presence=0.9, tip_valid=True, tip_confidence=0.9, zone="cheek_left", zone_kind=ZoneKind.TREAT,
                      zone_planned=True, boundary_mm=8.0, speed_mm_s=10.0, pipeline_latency_ms=8.0)
        t0 = time.perf_counter_ns()
        decide(policy, g, now)
        dcosts.append(time.perf_counter_ns() - t0)
    svc = _stats(dcosts)
    return {
        "controller_gate_median_us": ctrl[0] / 1e3, "controller_gate_p99_us": ctrl[1] / 1e3,
        "service_gate_median_us": svc[0] / 1e3, "service_gate_p99_us": svc[1] / 1e3,
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run_bridge_bench(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
