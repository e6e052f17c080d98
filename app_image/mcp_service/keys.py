"""API keys: generation, HMAC hashing, rotation with a grace period, env provisioning.

A key is 32 random bytes (64 hex characters). The database keeps only
HMAC-SHA256(SECRET_KEY_BASE, key), so neither a dump nor a log line reveals a usable key.
Verification compares the presented key's HMAC with every active hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

ENV_CURRENT = "env:current"
ENV_PREVIOUS = "env:previous"


@dataclass(frozen=True)
class ActiveKey:
    """A key that verified requests may match: its name, prefix, hash and expiry."""

    id: int
    name: str
    prefix: str
    key_hash: bytes
    expires_at: datetime | None


def generate_key() -> str:
    """A new API key: 32 random bytes as hex."""
    return secrets.token_hex(32)


def hash_key(secret_key_base: str, key: str) -> str:
    """HMAC-SHA256 of the key under SECRET_KEY_BASE, hex."""
    return hmac.new(secret_key_base.encode(), key.encode(), hashlib.sha256).hexdigest()


def match_key(
    secret_key_base: str, presented: str, keys: list[ActiveKey], now: datetime
) -> ActiveKey | None:
    """The active, unexpired key matching `presented`, compared in constant time.

    Every candidate is compared (no early exit) so timing reveals nothing about which
    or how many keys exist.
    """
    digest = bytes.fromhex(hash_key(secret_key_base, presented))
    found: ActiveKey | None = None
    for key in keys:
        if hmac.compare_digest(digest, key.key_hash) and (
            key.expires_at is None or key.expires_at > now
        ):
            found = key
    return found


_ACTIVE_KEYS = (
    "SELECT id, name, key_prefix, key_hash, expires_at FROM api_keys"
    " WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
)


def _active_key(row: dict[str, Any]) -> ActiveKey:
    return ActiveKey(
        row["id"], row["name"], row["key_prefix"], bytes.fromhex(row["key_hash"]), row["expires_at"]
    )


async def lookup_key(
    pool: AsyncConnectionPool, secret_key_base: str, presented: str, timeout: float
) -> ActiveKey | None:
    """Find one active key by its hash (a key created since the last cache refresh)."""
    async with pool.connection(timeout=timeout) as conn:
        cursor = await conn.execute(
            _ACTIVE_KEYS + " AND key_hash = %s", (hash_key(secret_key_base, presented),)
        )
        row = await cursor.fetchone()
    return _active_key(row) if row else None


async def load_active_keys(pool: AsyncConnectionPool, timeout: float) -> list[ActiveKey]:
    """Keys not revoked and not yet expired."""
    async with pool.connection(timeout=timeout) as conn:
        cursor = await conn.execute(_ACTIVE_KEYS)
        return [_active_key(row) for row in await cursor.fetchall()]


def create_key(
    conn: psycopg.Connection[Any],
    secret_key_base: str,
    name: str,
    key: str | None = None,
    expires_at: datetime | None = None,
) -> str:
    """Store a key (generated unless given) under a name; return the plaintext key."""
    key = key or generate_key()
    conn.execute(
        "INSERT INTO api_keys (name, key_hash, key_prefix, expires_at) VALUES (%s, %s, %s, %s)",
        (name, hash_key(secret_key_base, key), key[:8], expires_at),
    )
    return key


def rotate_key(
    conn: psycopg.Connection[Any], secret_key_base: str, name: str, grace: timedelta
) -> str:
    """Issue a new key under `name`; the name's older keys stay valid for `grace` only."""
    with conn.transaction():
        conn.execute(
            "UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), %s)"
            " WHERE name = %s AND revoked_at IS NULL",
            (datetime.now(UTC) + grace, name),
        )
        return create_key(conn, secret_key_base, name)


def revoke_key(conn: psycopg.Connection[Any], prefix: str) -> int:
    """Revoke keys whose prefix matches; return how many."""
    cursor = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_prefix = %s AND revoked_at IS NULL",
        (prefix,),
    )
    return cursor.rowcount


def list_keys(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every key's metadata (never a hash or a key)."""
    cursor = conn.execute(
        "SELECT name, key_prefix, created_at, expires_at, revoked_at, last_used_at"
        " FROM api_keys ORDER BY created_at"
    )
    columns = [c.name for c in cursor.description or []]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


async def provision_env_keys(
    pool: AsyncConnectionPool,
    secret_key_base: str,
    current: str,
    previous: str,
    previous_grace: timedelta,
    timeout: float,
) -> None:
    """Store MCP_API_KEY and MCP_API_KEY_PREVIOUS hashes so a deployment can inject keys.

    Idempotent and safe from two colors at once: a key already stored keeps its row, and
    provisioning only ever shortens an expiry, so an old color restarting cannot revive a
    key the new color has retired.
    """
    async with pool.connection(timeout=timeout) as conn, conn.transaction():
        if current:
            await conn.execute(
                "INSERT INTO api_keys (name, key_hash, key_prefix) VALUES (%s, %s, %s)"
                " ON CONFLICT (key_hash) DO NOTHING",
                (ENV_CURRENT, hash_key(secret_key_base, current), current[:8]),
            )
        if previous:
            await conn.execute(
                "INSERT INTO api_keys (name, key_hash, key_prefix, expires_at)"
                " VALUES (%s, %s, %s, now() + %s) ON CONFLICT (key_hash) DO UPDATE"
                " SET expires_at = LEAST(COALESCE(api_keys.expires_at, 'infinity'),"
                " EXCLUDED.expires_at)",
                (ENV_PREVIOUS, hash_key(secret_key_base, previous), previous[:8], previous_grace),
            )
