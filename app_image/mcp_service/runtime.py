"""Per-worker view of database-held switches: the kill switch, cache settings and API keys.

Each worker re-reads them at most every MCP_SETTINGS_CACHE_SECONDS (at most 5 s), so an
operator's `mcp-service disable` takes effect on every worker and host within that time
without any cross-process signalling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg
from psycopg_pool import AsyncConnectionPool

from mcp_service import keys
from mcp_service.config import Settings
from mcp_service.db import read_site_settings

log = logging.getLogger(__name__)

DEFAULT_CACHE_TTL = 300
# The bounds `mcp-service cache --ttl` accepts: Redis needs a positive expiry, and a day is
# far past any freshness a reader of posts would accept.
CACHE_TTL_RANGE = (1, 86400)


@dataclass
class Switches:
    """The values read from site_settings and api_keys at the last refresh."""

    mcp_enabled: bool = True
    caching_enabled: bool = True
    cache_ttl: int = DEFAULT_CACHE_TTL
    active_keys: list[keys.ActiveKey] = field(default_factory=list)


class RuntimeState:
    """Cached switches with a bounded age; refreshed lazily, once per worker at a time."""

    def __init__(self, settings: Settings, pool: AsyncConnectionPool) -> None:
        self.settings = settings
        self.pool = pool
        self.switches = Switches(mcp_enabled=settings.mcp_enabled)
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._keys_provisioned = not (settings.api_key or settings.api_key_previous)

    async def current(self) -> Switches:
        """Switches no older than the cache period; a failed refresh keeps the last values.

        Keeping the last known values on a database error means a PostgreSQL blip neither
        flips the kill switch nor drops every key; readiness reports the outage instead.
        """
        if time.monotonic() - self._loaded_at < self.settings.settings_cache_seconds:
            return self.switches
        async with self._lock:
            if time.monotonic() - self._loaded_at >= self.settings.settings_cache_seconds:
                await self._refresh()
        return self.switches

    async def _refresh(self) -> None:
        started = time.monotonic()
        timeout = self.settings.health_timeout
        try:
            if not self._keys_provisioned:
                await keys.provision_env_keys(
                    self.pool,
                    self.settings.secret_key_base,
                    self.settings.api_key,
                    self.settings.api_key_previous,
                    timedelta(hours=self.settings.api_key_previous_expires_hours),
                    timeout,
                )
                self._keys_provisioned = True
            values = await read_site_settings(self.pool, timeout)
            active = await keys.load_active_keys(self.pool, timeout)
        except (psycopg.Error, TimeoutError, OSError) as exc:
            log.warning("settings refresh failed; keeping last values", extra={"error": str(exc)})
            # Retry on the next request rather than hammering a down database from every one.
            self._loaded_at = started
            return
        caching_enabled, cache_ttl = cache_settings(values)
        self.switches = Switches(
            mcp_enabled=self.settings.mcp_enabled and _truthy(values.get("mcp_enabled", True)),
            caching_enabled=caching_enabled,
            cache_ttl=cache_ttl,
            active_keys=active,
        )
        self._loaded_at = started


def cache_settings(values: Mapping[str, object]) -> tuple[bool, int]:
    """(caching enabled, TTL in seconds) as the workers apply the site_settings ``values``.

    One reading for the workers and for `mcp-service cache`, so what the command shows is
    what the service does, even for rows written by hand.
    """
    return (
        _truthy(values.get("mcp_enable_caching", True)),
        _positive_int(values.get("mcp_cache_ttl"), DEFAULT_CACHE_TTL),
    )


def _truthy(value: object) -> bool:
    """Settings written by hand may hold true, "true", 1 or "1"."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _positive_int(value: object, default: int) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default
