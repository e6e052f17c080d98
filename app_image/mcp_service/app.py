"""The ASGI application: health, handshake, metrics and MCP Streamable HTTP (stateless)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
from mcp import Client
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_service import __version__, metrics
from mcp_service.cache import ResponseCache
from mcp_service.config import Settings
from mcp_service.db import create_pool
from mcp_service.logs import configure_logging
from mcp_service.mcp_server import Services, build_mcp_server
from mcp_service.middleware import (
    HANDSHAKE_PATH,
    MCP_PREFIX,
    METRICS_PATH,
    PRM_PATHS,
    LimitsMiddleware,
    McpGuardMiddleware,
    ObservabilityMiddleware,
)
from mcp_service.ratelimit import RateLimiter
from mcp_service.runtime import RuntimeState
from mcp_service.streams import StreamEndpoint, StreamRegistry

log = logging.getLogger(__name__)

REQUIRED = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY_BASE")
# Redis connections per worker. The pool is bounded and *waits*: under a burst (a color that
# was idle taking all the traffic at a switch) requests queue a moment for a connection
# instead of each opening its own TLS connection, which starved the CPU and ended at
# redis-py's default cap of 100 with "Too many connections" (503s) in the lab.
REDIS_POOL_SIZE = 20


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the service from settings (read from the environment when not given)."""
    settings = settings or Settings.from_env(required=REQUIRED)
    configure_logging(settings.log_level)
    pool = create_pool(settings)
    redis = Redis.from_pool(
        BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=REDIS_POOL_SIZE,
            timeout=settings.health_timeout,
            socket_connect_timeout=settings.health_timeout,
            socket_timeout=settings.health_timeout,
            health_check_interval=30,
        )
    )
    runtime = RuntimeState(settings, pool)
    services = Services(pool, ResponseCache(redis), runtime, settings.db_timeout)
    server = build_mcp_server(services)
    security = TransportSecuritySettings(
        # Always on (DNS rebinding): nginx forwards the public name as Host, loopback
        # callers send 127.0.0.1:<port>; anything else is 421, a foreign Origin 403.
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(settings.allowed_hosts),
        allowed_origins=list(dict.fromkeys((*settings.cors_origins, *settings.allowed_origins))),
    )
    mcp_app = server.streamable_http_app(
        streamable_http_path=f"{MCP_PREFIX}/",
        # Stateless + JSON responses: any worker, host or color can answer any request of a
        # session. The one long-lived stream, GET's SSE, is ours (streams.py), not the SDK's.
        stateless_http=True,
        json_response=True,
        max_request_body_size=settings.max_request_bytes,
        transport_security=security,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # wait=False: liveness (/health) must answer even while PostgreSQL is down.
        await pool.open(wait=False)
        try:
            async with server.session_manager.run():
                log.info("service started", extra={"version": __version__})
                yield
        finally:
            await pool.close()
            await redis.aclose()
            metrics.mark_worker_dead()

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "timestamp": _now(), "version": __version__})

    async def health_mcp(_: Request) -> Response:
        postgres, redis_ok = await asyncio.gather(
            _check_postgres(services, settings.health_timeout),
            _check_redis(redis, settings.health_timeout),
        )
        checks = {"postgres": postgres, "redis": redis_ok}
        failing = sorted(name for name, result in checks.items() if result != "ok")
        if failing:
            return JSONResponse(
                {
                    "status": "unavailable",
                    "failing": failing,
                    "checks": checks,
                    "timestamp": _now(),
                    "version": __version__,
                },
                status_code=503,
            )
        switches = await runtime.current()
        return JSONResponse(
            {
                "status": "ok" if switches.mcp_enabled else "disabled",
                "mcp_enabled": switches.mcp_enabled,
                "checks": checks,
                "timestamp": _now(),
                "version": __version__,
            }
        )

    async def handshake(_: Request) -> Response:
        started = time.perf_counter()
        async with Client(server, mode="legacy") as client:
            info = client.server_info
            protocol = client.protocol_version
        return JSONResponse(
            {
                "status": "ok",
                "server": {
                    "name": info.name if info else None,
                    "version": info.version if info else None,
                },
                "protocol_version": protocol,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )

    async def protected_resource(_: Request) -> Response:
        # RFC 9728: public, cacheable, the same at the path-specific URL and the root one.
        auth = settings.auth
        if not auth.tokens:
            return JSONResponse(
                {"error": "not_found", "message": "OAuth is off: MCP_AUTH_MODE is apiKey"},
                status_code=404,
            )
        return JSONResponse(
            {
                "resource": auth.audience,
                "authorization_servers": [auth.issuer],
                "scopes_supported": list(auth.required_scopes),
                "bearer_methods_supported": ["header"],
            },
            headers={"Cache-Control": "public, max-age=3600"},
        )

    async def metrics_endpoint(_: Request) -> Response:
        metrics.observe_pool(pool)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    middleware = [Middleware(ObservabilityMiddleware, settings=settings)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=[
                    "Authorization",
                    "X-API-Key",
                    "Content-Type",
                    "Mcp-Session-Id",
                    "Mcp-Protocol-Version",
                    "Mcp-Method",
                    "Mcp-Name",
                    "Last-Event-ID",
                ],
                expose_headers=[
                    "Mcp-Session-Id",
                    "X-Request-ID",
                    "Retry-After",
                    "WWW-Authenticate",
                ],
                max_age=600,
            )
        )
    middleware += [
        Middleware(LimitsMiddleware, settings=settings),
        Middleware(
            McpGuardMiddleware,
            settings=settings,
            runtime=runtime,
            limiter=RateLimiter(
                redis,
                settings.rate_limit_per_minute,
                settings.rate_limit_per_hour,
                settings.rate_limit_per_day,
            ),
        ),
    ]
    stream = StreamEndpoint(
        StreamRegistry(settings.stream_state_dir),
        settings.stream_keepalive_seconds,
        settings.stream_retry_ms,
        TransportSecurityMiddleware(security),
    )
    (sdk_route,) = mcp_app.routes
    endpoint = McpEndpoint(sdk_route.app, stream)
    routes = [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/health/mcp", health_mcp, methods=["GET", "HEAD"]),
        Route(HANDSHAKE_PATH, handshake, methods=["GET", "POST"]),
        Route(METRICS_PATH, metrics_endpoint, methods=["GET"]),
        *(Route(path, protected_resource, methods=["GET", "HEAD"]) for path in PRM_PATHS),
        # Both spellings of the endpoint, the guide's first: no redirect (a client turns a
        # redirected POST into a GET).
        Route(MCP_PREFIX, endpoint),
        Route(f"{MCP_PREFIX}/", endpoint),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


class McpEndpoint:
    """The MCP endpoint: a GET of a 2025 (session-era) client is our SSE stream
    (:mod:`mcp_service.streams`); everything else is the SDK's, which answers a
    2026-07-28 GET with 405 ``Allow: POST`` and DELETE with 405 (stateless)."""

    def __init__(self, sdk: ASGIApp, stream: StreamEndpoint) -> None:
        self.sdk = sdk
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        version = Headers(scope=scope).get("mcp-protocol-version")
        if scope["method"] in ("GET", "HEAD") and version in (None, *HANDSHAKE_PROTOCOL_VERSIONS):
            response = await self.stream.handle(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.sdk(scope, receive, send)


async def _check_postgres(services: Services, timeout: float) -> str:
    try:
        async with asyncio.timeout(timeout):
            async with services.pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")
    except (psycopg.Error, TimeoutError, OSError) as exc:
        log.warning("postgres check failed", extra={"error": str(exc)})
        return "unreachable"
    return "ok"


async def _check_redis(redis: Redis, timeout: float) -> str:
    try:
        async with asyncio.timeout(timeout):
            await redis.ping()
    except (RedisError, TimeoutError, OSError) as exc:
        log.warning("redis check failed", extra={"error": str(exc)})
        return "unreachable"
    return "ok"


def _now() -> str:
    return datetime.now(UTC).isoformat()
