"""The audit log: auth failures, writes and operator actions; retention cleanup."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)


async def record(
    pool: AsyncConnectionPool,
    event: str,
    *,
    actor: str | None = None,
    client_ip: str | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
    timeout: float = 2.0,
) -> None:
    """Append one audit record; a database failure is logged, never raised to the caller.

    An audit write must not turn a 401 into a 500 or hang a request when the database is
    down, so failures degrade to a log line carrying the same fields.
    """
    try:
        ipaddress.ip_address(client_ip or "")
    except ValueError:
        client_ip = None
    try:
        async with pool.connection(timeout=timeout) as conn:
            await conn.execute(
                "INSERT INTO audit_log (event, actor, client_ip, request_id, details)"
                " VALUES (%s, %s, %s, %s, %s)",
                (event, actor, client_ip, request_id, Jsonb(details or {})),
            )
    except (psycopg.Error, TimeoutError, OSError) as exc:
        log.error(
            "audit write failed",
            extra={"event": event, "actor": actor, "client_ip": client_ip, "error": str(exc)},
        )


def record_sync(
    conn: psycopg.Connection[Any], event: str, actor: str, details: dict[str, Any]
) -> None:
    """Append one audit record from a command-line operation."""
    conn.execute(
        "INSERT INTO audit_log (event, actor, details) VALUES (%s, %s, %s)",
        (event, actor, Jsonb(details)),
    )


def cleanup(conn: psycopg.Connection[Any], retention_days: int) -> int:
    """Delete audit records older than the retention; return how many were deleted."""
    cursor = conn.execute(
        "DELETE FROM audit_log WHERE occurred_at < now() - make_interval(days => %s)",
        (retention_days,),
    )
    return cursor.rowcount
