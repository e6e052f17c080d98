"""Fixed-window rate limits in Redis per API key and per client IP: minute, hour and day."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from mcp_service.cache import NAMESPACE

WINDOWS = (("minute", 60), ("hour", 3600), ("day", 86400))


@dataclass(frozen=True)
class Rejection:
    """Which limit was hit and how many seconds until its window resets."""

    scope: str
    window: str
    limit: int
    retry_after: int


class RateLimiter:
    """Counts requests per subject in the current minute, hour and day windows."""

    def __init__(self, redis: Redis, per_minute: int, per_hour: int, per_day: int) -> None:
        self.redis = redis
        self.limits = {"minute": per_minute, "hour": per_hour, "day": per_day}

    async def hit(self, scope: str, subject: str, now: float | None = None) -> Rejection | None:
        """Count one request for `subject`; return the exceeded limit that resets last, if any.

        One pipelined round trip increments all three windows; each counter expires with
        its window, so Redis holds no state for idle subjects.
        """
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        for name, seconds in WINDOWS:
            key = f"{NAMESPACE}:rl:{scope}:{subject}:{name}:{int(now // seconds)}"
            pipe.incr(key)
            pipe.expire(key, seconds, nx=True)
        results = await pipe.execute()
        exceeded = [
            Rejection(scope, name, self.limits[name], max(1, int(seconds - now % seconds)))
            for index, (name, seconds) in enumerate(WINDOWS)
            if int(results[index * 2]) > self.limits[name]
        ]
        # When several windows are full, the client must wait for the longest to reset.
        return max(exceeded, key=lambda r: r.retry_after) if exceeded else None
