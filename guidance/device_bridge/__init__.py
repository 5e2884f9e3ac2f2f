"""The device bridge: permits out to the pulse controller, pulse reports back in.

Service side: `service.BridgeService` (publisher, receiver, heartbeat monitor,
clock-offset estimator, pulse attribution). Controller side:
`controller.ControllerGate` / `controller.ControllerLink`. The wire format is
in `protocol` and documented in docs/protocol.md.
"""
