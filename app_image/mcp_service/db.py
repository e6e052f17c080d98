"""The PostgreSQL connection pool (psycopg 3) and the site_settings reads the service needs."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from mcp_service.config import Settings


def create_pool(settings: Settings) -> AsyncConnectionPool:
    """Build (unopened) the pool: size from MCP_DB_POOL_SIZE, broken connections replaced.

    `check` tests a connection on checkout, so a PostgreSQL restart costs one failed
    check instead of one failed request; a short reconnect_timeout makes the pool give up
    a failing background reconnect quickly and try afresh on the next demand, so the
    service recovers within seconds of the database coming back.
    """
    return AsyncConnectionPool(
        settings.database_url,
        min_size=min(2, settings.db_pool_size),
        max_size=settings.db_pool_size,
        timeout=settings.db_timeout,
        reconnect_timeout=settings.db_timeout,
        max_idle=300,
        check=AsyncConnectionPool.check_connection,
        kwargs={"row_factory": dict_row, "connect_timeout": 3, "application_name": "mcp_service"},
        open=False,
        name="mcp",
    )


async def read_site_settings(pool: AsyncConnectionPool, timeout: float) -> dict[str, Any]:
    """All site settings as a dict of decoded JSON values."""
    async with pool.connection(timeout=timeout) as conn:
        cursor = await conn.execute("SELECT key, value FROM site_settings")
        return {row["key"]: row["value"] for row in await cursor.fetchall()}
