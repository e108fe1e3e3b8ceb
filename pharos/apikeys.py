"""API keys: created with a role, shown once, stored as a SHA-256 of the key.

Keys are 32 random bytes, so a plain SHA-256 is enough (no slow hash needed: there is
nothing to brute-force). The first characters are kept as a prefix to name a key in
lists without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from devices.registry.db import utcnow
from devices.registry.models import ApiKeyRow

KEY_PREFIX = "phk_"


class Role(StrEnum):
    VIEWER = "viewer"
    TECHNICIAN = "technician"
    ENERGY_MANAGER = "energy_manager"
    OPERATOR = "operator"
    ADMIN = "admin"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, name: str, role: Role) -> str:
    """Store a new key for ``name`` and return it; it cannot be shown again."""
    if session.scalar(select(ApiKeyRow).where(ApiKeyRow.name == name)) is not None:
        raise ValueError(f"an API key named {name!r} already exists")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKeyRow(name=name, prefix=key[:12], key_hash=_digest(key), role=role.value))
    session.flush()
    return key


def authenticate(session: Session, key: str) -> ApiKeyRow | None:
    """The live key row for ``key``, or ``None``."""
    digest = _digest(key)
    row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == key[:12]))
    if row is None or row.revoked_at is not None:
        return None
    return row if hmac.compare_digest(row.key_hash, digest) else None


def revoke_api_key(session: Session, name: str) -> bool:
    row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.name == name))
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def list_api_keys(session: Session) -> list[ApiKeyRow]:
    return list(session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.name)))
