"""CurveZMQ key files: make them, read them, and say which file is wrong when they are bad.

Layout written by `guidance keys generate DIR` (ZeroMQ's own certificate
format, so any libzmq/czmq tool can read them):

    DIR/service.key              service public key   -> give to every controller
    DIR/service.key_secret       service key pair     -> stays on the service host
    DIR/NAME.key                 public key of controller NAME (default NAME: "controller")
    DIR/NAME.key_secret          its key pair         -> stays on that controller
    DIR/authorized_controllers/NAME.key   the allow-list the service reads

The allow-list binds identity to key: the file name NAME (1–64 of
[A-Za-z0-9._-]) is the one controller id that key may report under; a pulse
or status naming another id is rejected (`identity_mismatch`). More
controllers: `guidance keys add-controller DIR NAME`, or copy the controller's
public `.key` file into authorized_controllers/ as NAME.key.

Loading checks what would otherwise fail silently at the handshake: a secret
key file must be readable by its owner only, and its secret must derive the
public key written next to it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85

from guidance.device_bridge.protocol import ID_PATTERN
from guidance.errors import UserError

ALLOWLIST_DIR = "authorized_controllers"
DEFAULT_CONTROLLER = "controller"


@dataclass(frozen=True)
class KeyPair:
    public: bytes
    secret: bytes


@dataclass(frozen=True)
class ServiceKeys:
    """What the service needs: its pair and the allow-listed controller public keys, by controller id."""

    pair: KeyPair
    allowlist_dir: Path
    allowed: tuple[bytes, ...]
    controllers: dict[str, bytes] = field(default_factory=dict)  # controller id (file stem) -> public key (Z85)

    def name_of(self, public_z85: bytes) -> str | None:
        for name, key in self.controllers.items():
            if key == public_z85:
                return name
        return None


def fingerprint(public: bytes) -> str:
    """A short, printable name for a public key: the first 8 characters of its Z85 form.

    Z85 is what the key files hold (`public-key = "..."`), so an operator can
    find the key a refusal names with `grep`. `public` may be Z85 (40 bytes)
    or raw (32 bytes, as a ZAP request carries it).
    """
    if len(public) == 32:
        public = zmq.utils.z85.encode(public)
    try:
        return public[:8].decode("ascii")
    except UnicodeDecodeError:
        return hashlib.sha256(public).hexdigest()[:8]


def _check_name(name: str, what: str) -> str:
    if not ID_PATTERN.match(name):
        raise UserError(f"controller id {name!r} must be 1-64 of [A-Za-z0-9._-]", field=what)
    return name


def generate(directory: str | Path, controllers: tuple[str, ...] | list[str] = (DEFAULT_CONTROLLER,)) -> dict[str, Path]:
    """Write the service pair, one pair per controller id and the allow-list; refuse to overwrite.

    Files are made in a temporary directory next to DIR and moved in only when
    all exist, so an interrupted run leaves either nothing or everything.
    Secret files are 0600, the directory 0700.
    """
    if not zmq.has("curve"):
        raise UserError("this libzmq was built without CURVE support")
    names = [_check_name(n, "controller") for n in controllers]
    if not names or len(set(names)) != len(names) or "service" in names:
        raise UserError("controller ids must be distinct, at least one, and not 'service'", field="controller")
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError("exists and is not an empty directory; refusing to overwrite keys", path=target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))  # mode 0700
    except OSError as exc:
        raise UserError(f"cannot create key directory: {exc.strerror}", path=target) from None
    old_umask = os.umask(0o077)  # secret files are never readable by others, not even for a moment
    try:
        zmq.auth.create_certificates(tmp, "service")
        (tmp / ALLOWLIST_DIR).mkdir()
        for name in names:
            zmq.auth.create_certificates(tmp, name)
            shutil.copyfile(tmp / f"{name}.key", tmp / ALLOWLIST_DIR / f"{name}.key")
        for secret in tmp.glob("*.key_secret"):
            os.chmod(secret, 0o600)
        for public in [*tmp.glob("*.key"), *(tmp / ALLOWLIST_DIR).glob("*.key")]:
            os.chmod(public, 0o644)
        os.chmod(tmp / ALLOWLIST_DIR, 0o755)
        os.chmod(tmp, 0o700)
        if target.exists():
            target.rmdir()
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.umask(old_umask)
    out = {
        "service_public": target / "service.key",
        "service_secret": target / "service.key_secret",
    }
    for name in names:
        out[f"{name}_public"] = target / f"{name}.key"
        out[f"{name}_secret"] = target / f"{name}.key_secret"
    out["allowlist"] = target / ALLOWLIST_DIR
    return out


def add_controller(directory: str | Path, name: str) -> dict[str, Path]:
    """One more controller in an existing key directory: NAME.key, NAME.key_secret, allow-list entry."""
    d = Path(directory)
    _check_name(name, "controller")
    allow = d / ALLOWLIST_DIR
    if not (d / "service.key").is_file() or not allow.is_dir():
        raise UserError("not a key directory from `guidance keys generate`", path=d)
    for p in (d / f"{name}.key", d / f"{name}.key_secret", allow / f"{name}.key"):
        if p.exists():
            raise UserError("exists; refusing to overwrite keys", path=p)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=d))
    old_umask = os.umask(0o077)
    try:
        zmq.auth.create_certificates(tmp, name)
        os.chmod(tmp / f"{name}.key_secret", 0o600)
        os.chmod(tmp / f"{name}.key", 0o644)
        shutil.copyfile(tmp / f"{name}.key", tmp / "allow.key")
        os.chmod(tmp / "allow.key", 0o644)
        os.rename(tmp / f"{name}.key_secret", d / f"{name}.key_secret")
        os.rename(tmp / f"{name}.key", d / f"{name}.key")
        os.rename(tmp / "allow.key", allow / f"{name}.key")  # last: the service admits it only when all exist
    finally:
        os.umask(old_umask)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"controller public": d / f"{name}.key", "controller secret": d / f"{name}.key_secret",
            "allowlist entry": allow / f"{name}.key"}


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


def check_private(path: str | Path) -> None:
    """A secret key file must be the owner's alone: refuse one that group or others can read or write."""
    p = Path(path)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", path=p) from None
    if mode & 0o044:
        raise UserError("readable by others (chmod 600)", path=p)
    if mode & 0o022:
        raise UserError("writable by others (chmod 600)", path=p)


def load_pair(secret_path: str | Path) -> KeyPair:
    """A .key_secret file: private to its owner, and its secret must derive its public key."""
    public, secret = _load(secret_path)
    if not secret or len(secret) != 40:
        raise UserError("secret-key is missing (is this the .key_secret file?)", path=secret_path, field="secret-key")
    check_private(secret_path)
    try:
        derived = zmq.curve_public(secret)
    except Exception:  # not Z85 at all
        derived = None
    if derived != public:
        raise UserError("does not derive public-key (edited or mixed-up pair)", path=secret_path,
                        field="secret-key")
    return KeyPair(public, secret)


def load_service_keys(key_dir: str | Path) -> ServiceKeys:
    """Service side: DIR/service.key_secret and every DIR/authorized_controllers/NAME.key (NAME = controller id)."""
    d = Path(key_dir)
    pair = load_pair(d / "service.key_secret")
    allow = d / ALLOWLIST_DIR
    if not allow.is_dir():
        raise UserError("allow-list directory missing", path=allow)
    controllers: dict[str, bytes] = {}
    owner: dict[bytes, Path] = {}
    for p in sorted(allow.glob("*.key")):
        if not ID_PATTERN.match(p.stem):
            raise UserError("file name is the controller id: 1-64 of [A-Za-z0-9._-] before .key", path=p)
        key = load_public(p)
        if key in owner:
            raise UserError(f"same public key as {owner[key].name}: one key, one controller id", path=p,
                            field="public-key")
        owner[key] = p
        controllers[p.stem] = key
    if not controllers:
        raise UserError("allow-list is empty: no controller could connect", path=allow)
    return ServiceKeys(pair, allow, tuple(controllers.values()), controllers)
