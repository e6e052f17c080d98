"""The server→client SSE stream of MCP Streamable HTTP (``GET /api/v1/mcp/``).

The SDK's transport runs stateless here, and a stateless transport has no standalone
channel: its GET stream would carry nothing and could only be ended by cutting it. This
module serves that GET itself, so the stream is something a deployment can manage:

- a keep-alive comment every ``MCP_STREAM_KEEPALIVE_SECONDS`` (proxies' read timeouts
  and idle-connection reapers see traffic), ``X-Accel-Buffering: no`` and a ``retry:``
  hint, so a client whose stream ends reconnects after that many milliseconds;
- a clean end on request: ``mcp-service streams close`` touches a flag file, and every
  stream opened before the flag's mtime finishes its response normally (a final comment,
  then the end of the body) within :data:`POLL_SECONDS`. Streams opened later continue,
  so a color that was closed at a switch serves streams again after a rollback without a
  restart. A file works across uvicorn workers and ``docker exec`` without any IPC;
- a clean end on SIGTERM too (sse-starlette's shutdown detection), well inside
  ``MCP_SHUTDOWN_TIMEOUT_SECONDS``, so a stream never holds up ``docker stop``;
- one marker file per open stream (named by worker pid), so ``mcp-service streams
  count`` counts open streams across workers; markers of a dead worker are ignored.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from mcp.server.transport_security import TransportSecurityMiddleware
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from mcp_service import metrics

log = logging.getLogger(__name__)

# How often a stream looks at the close flag: the bound on how long a close takes.
POLL_SECONDS = 0.5
# After SIGTERM, how long a stream may take to write its last event before it is cancelled.
SHUTDOWN_GRACE_SECONDS = 3.0
CLOSE_FLAG = "close-requested"
OPEN_DIR = "open"


def is_stream_request(scope: Scope) -> bool:
    """A GET that asks for the SSE stream (what the request timeout must not cut)."""
    if scope.get("type") != "http" or scope.get("method") not in ("GET", "HEAD"):
        return False
    return "text/event-stream" in Headers(scope=scope).get("accept", "")


class StreamRegistry:
    """The close flag and the open-stream markers under one directory (on the container's
    tmpfs, shared by every worker and by ``docker exec``)."""

    def __init__(self, state_dir: str) -> None:
        self.root = Path(state_dir)
        self.flag = self.root / CLOSE_FLAG
        self.open_dir = self.root / OPEN_DIR

    def request_close(self) -> float:
        """Ask every stream open now to end cleanly; returns the flag's time (epoch s)."""
        self.open_dir.mkdir(parents=True, exist_ok=True)
        self.flag.touch()  # an existing flag gets a new mtime: the newest close wins
        return self.flag.stat().st_mtime

    def close_requested_after(self, started: float) -> bool:
        """Whether a close was asked for after a stream that started at ``started``."""
        try:
            return self.flag.stat().st_mtime >= started
        except FileNotFoundError:
            return False

    def register(self) -> Path:
        """A marker for one open stream of this worker."""
        self.open_dir.mkdir(parents=True, exist_ok=True)
        marker = self.open_dir / f"{os.getpid()}-{uuid.uuid4().hex}"
        marker.touch()
        return marker

    def count(self) -> int:
        """Open streams across workers (markers whose worker process still runs)."""
        try:
            markers = list(self.open_dir.iterdir())
        except FileNotFoundError:
            return 0
        return sum(1 for marker in markers if _alive(marker.name.split("-", 1)[0]))


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class StreamEndpoint:
    """``GET /api/v1/mcp/``: the SSE stream (auth and rate limits already applied by
    :class:`~mcp_service.middleware.McpGuardMiddleware`, as for POST)."""

    def __init__(
        self,
        registry: StreamRegistry,
        keepalive_seconds: float,
        retry_ms: int,
        security: TransportSecurityMiddleware,
    ) -> None:
        self.registry = registry
        self.keepalive_seconds = keepalive_seconds
        self.retry_ms = retry_ms
        self.security = security

    async def handle(self, request: Request) -> Response:
        """The stream, or the refusal the SDK would give (406 without SSE in Accept)."""
        rejected = await self.security.validate_request(request, is_post=False)
        if rejected is not None:
            return rejected
        if "text/event-stream" not in request.headers.get("accept", ""):
            return Response(
                '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,'
                '"message":"Not Acceptable: Client must accept text/event-stream"}}',
                status_code=406,
                media_type="application/json",
            )
        shutdown = anyio.Event()
        return EventSourceResponse(
            self._events(shutdown),
            headers={"Cache-Control": "no-cache, no-transform"},
            ping=self.keepalive_seconds,
            ping_message_factory=lambda: ServerSentEvent(comment="keepalive"),
            shutdown_event=shutdown,
            shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        )

    async def _events(self, shutdown: anyio.Event) -> AsyncIterator[ServerSentEvent]:
        started = time.time()
        marker = self.registry.register()
        metrics.OPEN_STREAMS.inc()
        reason = "client left"
        try:
            # No data, so a client dispatches nothing; it keeps the reconnection delay.
            yield ServerSentEvent(comment="stream open", retry=self.retry_ms)
            while True:
                with anyio.move_on_after(POLL_SECONDS):
                    await shutdown.wait()
                if shutdown.is_set():
                    reason = "service stopping"
                    break
                if self.registry.close_requested_after(started):
                    reason = "close requested"
                    break
            yield ServerSentEvent(comment=f"close: {reason}; reconnect", retry=self.retry_ms)
        finally:
            marker.unlink(missing_ok=True)
            metrics.OPEN_STREAMS.dec()
            log.info(
                "stream ended",
                extra={"reason": reason, "seconds": round(time.time() - started, 1)},
            )
