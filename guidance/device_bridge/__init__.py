"""The device bridge: permits out to the pulse controller, pulse reports back in (protocol 1.1).

Service side: `service.BridgeService` (publisher, receiver, heartbeat monitor,
clock-offset estimator, pulse attribution, the ZAP handler in `zap` that
binds controller ids to keys); `poll()` hands the run loop attributed pulses
and the typed records of `events`, `summary()` the session totals.
Controller side: `controller.ControllerGate` / `controller.ControllerLink`.
The wire format is in `protocol`, documented in docs/protocol.md, with test
vectors in docs/protocol_vectors.json.
"""
