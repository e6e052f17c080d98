"""Redis response cache for read tools, namespaced `railspress:mcp`, invalidated on writes.

Keys embed a generation number; a write (or `mcp-service cache --flush`) bumps the
generation, which makes every cached entry unreachable at once on every worker and host
(they then age out by TTL) without scanning or deleting keys.

Keys embed the TTL too: once every worker has read a new `mcp_cache_ttl` (within 5 s),
none reads an entry stored under the old one, so no answer is older than the TTL in force.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from mcp_service import metrics

log = logging.getLogger(__name__)

NAMESPACE = "railspress:mcp"
GENERATION_KEY = f"{NAMESPACE}:cache:generation"


class ResponseCache:
    """Get-or-compute JSON results keyed by tool name and arguments."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get_or_compute(
        self,
        tool: str,
        arguments: dict[str, Any],
        ttl: int,
        compute: Callable[[], Awaitable[Any]],
    ) -> Any:
        """The cached value for (tool, arguments), or compute, store for `ttl` s and return it.

        Redis trouble degrades to computing directly: the cache is an optimisation, not a
        dependency of correctness.
        """
        digest = hashlib.sha256(
            json.dumps(arguments, sort_keys=True, default=str).encode()
        ).hexdigest()
        try:
            generation = int(await self.redis.get(GENERATION_KEY) or 0)
            key = f"{NAMESPACE}:cache:{generation}:{ttl}:{tool}:{digest}"
            cached = await self.redis.get(key)
        except RedisError as exc:
            log.warning("cache read failed", extra={"error": str(exc)})
            metrics.CACHE_REQUESTS.labels(result="error").inc()
            return await compute()
        if cached is not None:
            metrics.CACHE_REQUESTS.labels(result="hit").inc()
            return json.loads(cached)
        metrics.CACHE_REQUESTS.labels(result="miss").inc()
        value = await compute()
        try:
            await self.redis.set(key, json.dumps(value, default=str), ex=ttl)
        except RedisError as exc:
            log.warning("cache write failed", extra={"error": str(exc)})
        return value

    async def invalidate(self) -> int:
        """Make every cached response stale (called after each write); the new generation."""
        return int(await self.redis.incr(GENERATION_KEY))
