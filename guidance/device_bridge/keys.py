"""CurveZMQ key files: make them, read them, and say which file is wrong when they are bad.

Layout written by `guidance keys generate DIR` (ZeroMQ's own certificate
format, so any libzmq/czmq tool can read them):

    DIR/service.key              service public key   -> give to every controller
    DIR/service.key_secret       service key pair     -> stays on the service host
    DIR/controller.key           controller public key
    DIR/controller.key_secret    controller key pair  -> stays on the controller
    DIR/authorized_controllers/controller.key   allow-list the service reads

More controllers: put each one's public `.key` file into authorized_controllers/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from guidance.errors import UserError

ALLOWLIST_DIR = "authorized_controllers"


@dataclass(frozen=True)
class KeyPair:
    public: bytes
    secret: bytes


@dataclass(frozen=True)
class ServiceKeys:
    """What the service needs: its pair and the allow-listed controller public keys."""

    pair: KeyPair
    allowlist_dir: Path
    allowed: tuple[bytes, ...]


def generate(directory: str | Path) -> dict[str, Path]:
    """Write service and controller key pairs and the allow-list; refuse to overwrite.

    Files are made in a temporary directory next to DIR and moved in only when
    all exist, so an interrupted run leaves either nothing or everything.
    """
    if not zmq.has("curve"):
        raise UserError("this libzmq was built without CURVE support")
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError("exists and is not an empty directory; refusing to overwrite keys", path=target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    except OSError as exc:
        raise UserError(f"cannot create key directory: {exc.strerror}", path=target) from None
    try:
        zmq.auth.create_certificates(tmp, "service")
        zmq.auth.create_certificates(tmp, "controller")
        (tmp / ALLOWLIST_DIR).mkdir()
        shutil.copyfile(tmp / "controller.key", tmp / ALLOWLIST_DIR / "controller.key")
        for secret in tmp.glob("*.key_secret"):
            os.chmod(secret, 0o600)
        os.chmod(tmp, 0o700)
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "service_public": target / "service.key",
        "service_secret": target / "service.key_secret",
        "controller_public": target / "controller.key",
        "controller_secret": target / "controller.key_secret",
        "allowlist": target / ALLOWLIST_DIR,
    }


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    p = Path(path)
    if not p.is_file():
        raise UserError("key file not found", path=p)
    try:
        public, secret = zmq.auth.load_certificate(p)
    except Exception as exc:  # the loader raises several types for garbage files
        raise UserError(f"not a ZeroMQ CURVE certificate ({type(exc).__name__})", path=p) from None
    if not public or len(public) != 40:
        raise UserError("public-key is missing or not 40 Z85 characters", path=p, field="public-key")
    return public, secret


def load_public(path: str | Path) -> bytes:
    return _load(path)[0]


def load_pair(secret_path: str | Path) -> KeyPair:
    public, secret = _load(secret_path)
    if not secret or len(secret) != 40:
        raise UserError("secret-key is missing (is this the .key_secret file?)", path=secret_path, field="secret-key")
    return KeyPair(public, secret)


def load_service_keys(key_dir: str | Path) -> ServiceKeys:
    """Service side: DIR/service.key_secret and every DIR/authorized_controllers/*.key."""
    d = Path(key_dir)
    pair = load_pair(d / "service.key_secret")
    allow = d / ALLOWLIST_DIR
    if not allow.is_dir():
        raise UserError("allow-list directory missing", path=allow)
    allowed = tuple(load_public(p) for p in sorted(allow.glob("*.key")))
    if not allowed:
        raise UserError("allow-list is empty: no controller could connect", path=allow)
    return ServiceKeys(pair, allow, allowed)
