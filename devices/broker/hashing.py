"""Device secrets and Mosquitto 2 password-file hashes (``$7$`` PBKDF2-SHA512).

The hash text is exactly what ``mosquitto_passwd`` writes, so the broker reads the
password file Pharos renders without any plugin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

# Mosquitto 2's "$7$" scheme: PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte key.
_SCHEME = "7"
_DIGEST = "sha512"
SALT_BYTES = 12
KEY_BYTES = 64
DEFAULT_ITERATIONS = 101  # mosquitto_passwd's default in 2.0


def new_secret() -> str:
    """A fresh device secret: 24 random bytes, URL-safe text (32 characters)."""
    return secrets.token_urlsafe(24)


def _derive(secret: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(_DIGEST, secret.encode("utf-8"), salt, iterations, KEY_BYTES)


def _b64(data: bytes) -> str:
    # Standard alphabet with padding, as mosquitto_passwd's OpenSSL BIO writes it.
    return base64.b64encode(data).decode("ascii")


def hash_password(
    secret: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """``$7$<iterations>$<base64 salt>$<base64 key>`` for ``secret``."""
    if iterations < 1:
        raise ValueError(f"iterations must be positive, not {iterations}")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(secret, salt, iterations)
    return f"${_SCHEME}${iterations}${_b64(salt)}${_b64(key)}"


def _parse(hashed: str) -> tuple[int, bytes, bytes] | None:
    """Iterations, salt and key of a ``$7$`` hash; ``None`` when it is not one."""
    parts = hashed.split("$")
    # "$7$101$salt$key".split("$") == ["", "7", "101", "salt", "key"]
    if len(parts) != 5 or parts[0] or parts[1] != _SCHEME or not parts[2].isdigit():
        return None
    try:
        salt = base64.b64decode(parts[3], validate=True)
        key = base64.b64decode(parts[4], validate=True)
    except (binascii.Error, ValueError):
        return None
    iterations = int(parts[2])
    return (iterations, salt, key) if iterations > 0 else None


def verify_password(secret: str, hashed: str) -> bool:
    """Whether ``secret`` matches ``hashed``; a malformed hash never matches."""
    parsed = _parse(hashed)
    if parsed is None:
        return False
    iterations, salt, key = parsed
    # Constant-time so the comparison leaks nothing about how much of the key matched.
    return hmac.compare_digest(_derive(secret, salt, iterations), key)
