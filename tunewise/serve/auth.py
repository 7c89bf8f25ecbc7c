"""Bearer API keys. Keys are 32 random bytes, shown once and stored only as a SHA-256 hash: with that much
entropy a fast hash is enough (a slow password hash like bcrypt protects guessable secrets, not random ones)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from tunewise.errors import ConfigError
from tunewise.registry.schema import api_keys

PREFIX = "tw-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Engine, name: str) -> str:
    """A new key for `name`; the only time the key itself exists outside the client."""
    key = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(api_keys).values(name=name, key_hash=hash_key(key), revoked=False))
    return key


def revoke_key(engine: Engine, name: str) -> int:
    with engine.begin() as conn:
        n = conn.execute(update(api_keys).where(api_keys.c.name == name, api_keys.c.revoked.is_(False))
                         .values(revoked=True)).rowcount
    if not n:
        raise ConfigError(f"no active API key named {name!r}")
    return n


def list_keys(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        q = select(api_keys.c.id, api_keys.c.name, api_keys.c.revoked, api_keys.c.created_at)
        return [dict(r) for r in conn.execute(q.order_by(api_keys.c.id)).mappings()]


def check_key(engine: Engine, key: str) -> int | None:
    """The key's id if it is valid and not revoked, else None."""
    with engine.connect() as conn:
        return conn.execute(select(api_keys.c.id).where(api_keys.c.key_hash == hash_key(key),
                                                        api_keys.c.revoked.is_(False))).scalar()
