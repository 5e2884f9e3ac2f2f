"""The service's ZAP handler: admit allow-listed controller keys, bind each to its controller id, note refusals.

ZAP (ZeroMQ RFC 27) is how libzmq asks "may this peer in?" during a CURVE
handshake: it sends the peer's public key to whatever REP socket is bound at
`inproc://zeromq.zap.01` in the socket's context and waits for the answer.
This handler answers

* 200 with `User-Id` = the controller id (the allow-list file name) for a
  key on the allow-list; libzmq then attaches that User-Id to every message
  of the connection, which the receiver compares with the message's
  `controller` field (identity binding);
* 400 for any other key, and records the refusal (time, the offered key's
  fingerprint, the peer address) for the bridge to report.

libzmq does not reconnect after a 400 on that connection, so a refused
controller shows up once per socket it tried (SUB and DEALER), not in a storm.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable

import zmq
import zmq.utils.z85

from guidance.device_bridge.keys import fingerprint

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


@dataclass(frozen=True)
class Refusal:
    t_ns: int
    fingerprint: str
    address: str
    mechanism: str


class ZapHandler:
    def __init__(self, ctx: zmq.Context, controllers: dict[str, bytes], clock: Callable[[], int] = time.monotonic_ns):
        self._by_key = {key: name for name, key in controllers.items()}  # Z85 public -> controller id
        self.clock = clock
        self.refused: collections.deque[Refusal] = collections.deque(maxlen=100_000)  # taken by the bridge thread
        self.admitted = 0
        self.errors = 0
        self._stop = threading.Event()
        self._sock = ctx.socket(zmq.REP)
        self._sock.linger = 0
        self._sock.bind(ZAP_ENDPOINT)  # before any CURVE server socket binds: no handshake goes unanswered
        self._thread = threading.Thread(target=self._run, name="bridge-zap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                try:
                    if not sock.poll(50):
                        continue
                    request = sock.recv_multipart()
                except zmq.ZMQError:
                    return
                try:
                    reply = self._answer(request)
                except Exception:  # never leave a handshake unanswered (libzmq would wait): refuse it
                    self.errors += 1
                    reply = [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"ZAP handler error", b"", b""]
                try:
                    sock.send_multipart(reply)
                except zmq.ZMQError:
                    return
        finally:
            sock.close(0)

    def _answer(self, req: list[bytes]) -> list[bytes]:
        if len(req) < 6 or req[0] != b"1.0":
            self.errors += 1
            return [b"1.0", req[1] if len(req) > 1 else b"", b"500", b"bad ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = req[:6]
        credentials = req[6:]
        name = None
        key_z85 = b""
        if mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
            key_z85 = zmq.utils.z85.encode(credentials[0])
            name = self._by_key.get(key_z85)
        if name is not None:
            self.admitted += 1
            return [version, request_id, b"200", b"OK", name.encode("ascii"), b""]
        self.refused.append(Refusal(self.clock(), fingerprint(key_z85) if key_z85 else "-",
                                    address.decode("ascii", "replace"), mechanism.decode("ascii", "replace")))
        return [version, request_id, b"400", b"key not on the allow-list", b"", b""]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
