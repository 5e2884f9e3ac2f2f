"""Who may use the console: loopback by default, a login beyond it; CSRF and Host checks always.

- Bound to 127.0.0.1 (the default) the console trusts the machine's own user, as
  `guidance run`'s window does. Bound to any other address it requires a login:
  users are added with `guidance console --add-user NAME`, passwords stored as
  scrypt hashes (`hashlib.scrypt`, n=2^14, r=8, p=1, 16-byte salt), login sessions
  are random 256-bit tokens in an HttpOnly, SameSite=Strict cookie, kept in memory
  (a restart logs everyone out). TLS belongs in front of it (docs/console.md).
- Every state-changing request carries the page's CSRF token (a form field or the
  `X-Guidance-Token` header), so another web page open in the same browser cannot
  arm a session; the Host header must name the console itself (no DNS rebinding).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

N, R, P, DKLEN = 2 ** 14, 8, 1, 32
SESSION_COOKIE = "guidance_console"
SESSION_TTL_S = 12 * 3600


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=DKLEN)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(key)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


class Logins:
    """Login sessions in memory: token → (user, expiry)."""

    def __init__(self) -> None:
        self._s: dict[str, tuple[str, float]] = {}

    def start(self, user: str) -> str:
        tok = secrets.token_urlsafe(32)
        self._s[tok] = (user, time.time() + SESSION_TTL_S)
        return tok

    def user(self, token: str | None) -> str | None:
        if not token or token not in self._s:
            return None
        user, exp = self._s[token]
        if time.time() > exp:
            self._s.pop(token, None)
            return None
        return user

    def end(self, token: str | None) -> None:
        if token:
            self._s.pop(token, None)


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, str(given))
