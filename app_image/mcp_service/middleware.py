"""ASGI middleware: request ids and access logs, body and time limits, and the MCP guard
(client IP, rate limits, API key auth, kill switch)."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_service import audit, keys, metrics
from mcp_service.config import AuthConfig, Settings
from mcp_service.logs import request_id_var
from mcp_service.ratelimit import RateLimiter, Rejection
from mcp_service.runtime import RuntimeState
from mcp_service.streams import is_stream_request
from mcp_service.tokens import MAX_TOKEN_LENGTH, Refusal, TokenVerifier, looks_like_jwt

log = logging.getLogger("mcp_service.access")

MCP_PREFIX = "/api/v1/mcp"
HANDSHAKE_PATH = f"{MCP_PREFIX}/session/handshake"
METRICS_PATH = f"{MCP_PREFIX}/metrics"
# RFC 9728 Protected Resource Metadata: the endpoint's own URL, then the host's.
PRM_PATHS = (
    f"/.well-known/oauth-protected-resource{MCP_PREFIX}",
    "/.well-known/oauth-protected-resource",
)
ROUTES = {"/health", "/health/mcp", f"{MCP_PREFIX}/", HANDSHAKE_PATH, METRICS_PATH, *PRM_PATHS}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_KEY_LENGTH = 256

Response = tuple[int, bytes, list[tuple[bytes, bytes]]]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def route_label(path: str) -> str:
    """A bounded label for metrics: the known route, or `other` (no raw paths)."""
    if path == MCP_PREFIX:
        path = f"{MCP_PREFIX}/"
    return path if path in ROUTES else "other"


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client address: the peer, unless the peer is a trusted proxy.

    Behind trusted proxies, X-Forwarded-For is read right to left and the first address
    that is not itself a trusted proxy is the client: entries further left were written
    by the client and can be forged.
    """
    if not peer:
        return "unknown"

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    if not forwarded_for or not is_trusted(peer):
        return peer
    candidate = peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            # A malformed hop ends the trustworthy chain; use the last good address.
            return candidate
        candidate = hop
        if not is_trusted(hop):
            return hop
    return candidate


def jsonrpc_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """A JSON-RPC shaped error body (what an MCP client parses) with its HTTP status."""
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    ).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return status, body, raw


async def send_response(send: Send, response: Response) -> None:
    """Send a complete (status, body, headers) response."""
    status, body, headers = response
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in headers
    )


class ObservabilityMiddleware:
    """Assign a request id, then log one JSON access line and record metrics per request."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        peer = scope.get("client")[0] if scope.get("client") else None
        ip = client_ip(peer, headers.get("x-forwarded-for"), self.settings.trusted_proxies)
        scope.setdefault("state", {})["client_ip"] = ip
        status = 500
        started = time.perf_counter()
        answered: float | None = None  # when a GET's event stream started, if it was one

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                if scope["method"] == "GET" and _is_event_stream(message["headers"]):
                    answered = time.perf_counter()
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_label(scope["path"])
            metrics.REQUESTS.labels(route=route, method=scope["method"], status=str(status)).inc()
            # An SSE stream lives as long as its client keeps it: its latency is the time
            # to its first byte, or every stream would count as a slow response.
            latency = answered - started if answered is not None else elapsed
            metrics.LATENCY.labels(route=route).observe(latency)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "client_ip": ip,
                },
            )
            request_id_var.reset(token)


class LimitsMiddleware:
    """Reject bodies over MCP_MAX_REQUEST_SIZE with 413 and answer 504 after the timeout.

    The body is read (at most the limit) before the app runs, so chunked uploads without
    Content-Length are bounded too, and the app never sees a partial body.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limit = settings.max_request_bytes
        self.timeout = settings.request_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = jsonrpc_error(413, -32002, f"request body exceeds {self.limit} bytes")
        declared = Headers(scope=scope).get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            await send_response(send, too_large)
            return
        chunks: list[bytes] = []
        size = 0
        more = scope["method"] not in ("GET", "HEAD", "OPTIONS", "DELETE")
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await send_response(send, too_large)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        if is_stream_request(scope):
            # A stream is long-lived by design: it ends on a close request, at shutdown or
            # when the client leaves (mcp_service.streams), never by the request timeout.
            await self.app(scope, replay, send)
            return
        try:
            await asyncio.wait_for(self.app(scope, replay, tracking_send), self.timeout)
        except TimeoutError:
            log.warning("request timed out", extra={"timeout_seconds": self.timeout})
            if not started:
                await send_response(send, jsonrpc_error(504, -32005, "request timed out"))


class McpGuardMiddleware:
    """Protect /api/v1/mcp/*: per-IP limit, credentials, kill switch, per-key limit.

    The one place that decides who may call (``MCP_AUTH_MODE``): API keys (``apiKey``),
    OAuth access tokens (``oauth``), or both, where a JWT-shaped bearer is a token and
    anything else an API key. The handshake (an uptime-monitor URL, per the guide) needs
    no credential but is IP-limited and honours the kill switch; metrics take
    MCP_METRICS_TOKEN in every mode (and API keys where keys are allowed) and are neither
    limited nor switched off, so monitoring keeps working during an incident.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        runtime: RuntimeState,
        limiter: RateLimiter,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.runtime = runtime
        self.limiter = limiter
        auth = settings.auth
        self.verifier = verifier or (TokenVerifier(auth) if auth.tokens else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == MCP_PREFIX or path.startswith(MCP_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            # CORS preflights carry no credentials; CORSMiddleware (outside) answers them.
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        ip = state.get("client_ip", "unknown")
        headers = Headers(scope=scope)
        if path == METRICS_PATH:
            rejection = await self._authenticate(headers, state, path, allow_metrics_token=True)
            if rejection:
                await send_response(send, rejection)
                return
            await self.app(scope, receive, send)
            return
        try:
            if self.settings.rate_limit_enabled and self.settings.rate_limit_by_ip:
                limited = await self.limiter.hit("ip", ip)
                if limited:
                    await send_response(send, _too_many(limited))
                    return
            if path != HANDSHAKE_PATH:
                rejection = await self._authenticate(headers, state, path)
                if rejection:
                    await send_response(send, rejection)
                    return
            switches = await self.runtime.current()
            if not switches.mcp_enabled:
                await send_response(
                    send,
                    jsonrpc_error(
                        503, -32004, "MCP API is disabled by the operator", {"Retry-After": "60"}
                    ),
                )
                return
            if (
                "key_id" in state
                and self.settings.rate_limit_enabled
                and self.settings.rate_limit_by_key
            ):
                limited = await self.limiter.hit("key", state["key_id"])
                if limited:
                    await send_response(send, _too_many(limited))
                    return
        except RedisError as exc:
            log.error("rate limiter unavailable", extra={"error": str(exc)})
            await send_response(send, jsonrpc_error(503, -32004, "rate limiter unavailable"))
            return
        await self.app(scope, receive, send)

    async def _authenticate(
        self,
        headers: Headers,
        state: dict[str, Any],
        path: str,
        allow_metrics_token: bool = False,
    ) -> Response | None:
        """None when the request carries a valid credential (noted in `state`), else the
        401 (or 403: a token without the required scopes) to answer.

        Every failure is counted and written to the audit log with the client address.
        """
        auth = self.settings.auth
        presented, bearer = _presented_credential(headers)
        longest = MAX_TOKEN_LENGTH if auth.tokens else MAX_KEY_LENGTH
        reason, details = "missing", {}
        if presented and len(presented) <= longest:
            if (
                allow_metrics_token
                and self.settings.metrics_token
                and hmac.compare_digest(presented.encode(), self.settings.metrics_token.encode())
            ):
                return None
            reason = "invalid"
            is_token = bearer and looks_like_jwt(presented)
            if is_token and auth.tokens and not allow_metrics_token and self.verifier:
                try:
                    access = await self.verifier.check(presented)
                except Refusal as refusal:
                    reason = "invalid_token"
                    details = {
                        "why": refusal.reason,
                        "claims": refusal.claims,
                        "verified": refusal.verified,
                    }
                else:
                    missing = [s for s in auth.required_scopes if s not in access.scopes]
                    if not missing:
                        state["actor"] = _token_actor(auth, access.subject, access.client_id)
                        return None
                    scope = {"missing": missing, "claims": access.claims, "verified": True}
                    return await self._refuse(state, path, "insufficient_scope", scope, True)
            elif auth.api_keys and len(presented) <= MAX_KEY_LENGTH:
                found = await self._match_key(presented)
                if found is not None:
                    state["actor"] = f"{found.name}:{found.prefix}"
                    state["key_id"] = str(found.id)
                    return None
        elif presented:
            reason = "invalid"
        return await self._refuse(state, path, reason, details, sent=bool(presented))

    async def _match_key(self, presented: str) -> keys.ActiveKey | None:
        now = datetime.now(UTC)
        switches = await self.runtime.current()
        found = keys.match_key(self.settings.secret_key_base, presented, switches.active_keys, now)
        if found is None:
            # A key issued since the last refresh works at once; revocation and expiry
            # still apply through the cached list and the expiry check above.
            found = await self._lookup(presented, now)
        return found

    async def _refuse(
        self, state: dict[str, Any], path: str, reason: str, details: dict[str, Any], sent: bool
    ) -> Response:
        """Count and audit a refusal; the 401 (or 403) with the mode's challenge."""
        metrics.AUTH_FAILURES.labels(reason=reason).inc()
        await audit.record(
            self.runtime.pool,
            "auth.failure",
            client_ip=state.get("client_ip"),
            request_id=request_id_var.get(),
            details={"reason": reason, "path": path, **details},
            timeout=self.settings.health_timeout,
        )
        return challenge(self.settings.auth, reason, sent)

    async def _lookup(self, presented: str, now: datetime) -> keys.ActiveKey | None:
        try:
            candidate = await keys.lookup_key(
                self.runtime.pool,
                self.settings.secret_key_base,
                presented,
                self.settings.health_timeout,
            )
        except (psycopg.Error, TimeoutError, OSError) as exc:
            log.warning("key lookup failed", extra={"error": str(exc)})
            return None
        if candidate is None:
            return None
        return keys.match_key(self.settings.secret_key_base, presented, [candidate], now)


def _presented_credential(headers: Headers) -> tuple[str, bool]:
    """The credential a request carries, and whether it came as ``Authorization: Bearer``
    (an access token only ever does; an API key may also come as ``X-API-Key``)."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), True
    return headers.get("x-api-key", "").strip(), False


def _token_actor(auth: AuthConfig, subject: str | None, client_id: str) -> str:
    """Who a verified token names, for the access and audit logs: ``token:<issuer
    host>/<sub>``, or ``token:<issuer host>/client:<client_id>`` without a subject."""
    host = auth.issuer.split("://", 1)[1].split("/", 1)[0]
    who = subject if subject else f"client:{client_id}"
    return f"token:{host}/{who}"


def challenge(auth: AuthConfig, reason: str, sent: bool) -> Response:
    """The refusal for a request without a usable credential, as the mode words it.

    ``apiKey``: today's 401 ``Bearer realm="mcp"``. Token modes (RFC 6750 section 3, RFC
    9728 section 5.1): where the metadata is and which scopes to ask for; ``error=
    "invalid_token"`` only when a credential was sent; a token without the required
    scopes is a 403 ``insufficient_scope``.
    """
    if not auth.tokens:
        return jsonrpc_error(
            401,
            -32001,
            "Unauthorized: a valid API key is required",
            {"WWW-Authenticate": 'Bearer realm="mcp"'},
        )
    scope = " ".join(auth.required_scopes)
    where = f'resource_metadata="{auth.metadata_url}", scope="{scope}"'
    if reason == "insufficient_scope":
        return jsonrpc_error(
            403,
            -32001,
            f"Forbidden: the access token lacks the scope {scope}",
            {"WWW-Authenticate": f'Bearer error="insufficient_scope", {where}'},
        )
    wanted = "access token or API key" if auth.api_keys else "access token"
    error = ', error="invalid_token"' if sent else ""
    return jsonrpc_error(
        401,
        -32001,
        f"Unauthorized: a valid {wanted} is required",
        {"WWW-Authenticate": f"Bearer {where}{error}"},
    )


def _too_many(rejection: Rejection) -> Response:
    metrics.RATE_LIMITED.labels(scope=rejection.scope, window=rejection.window).inc()
    return jsonrpc_error(
        429,
        -32003,
        f"Rate limit exceeded: {rejection.limit} requests per {rejection.window} per "
        f"{'API key' if rejection.scope == 'key' else 'client'}",
        {"Retry-After": str(rejection.retry_after)},
    )
