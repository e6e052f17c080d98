"""An MCP SDK client for the tests: API key headers and optional round-robin over instances."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


class RoundRobinTransport(httpx2.AsyncBaseTransport):
    """Send each HTTP request to the next base URL in turn (a load balancer in miniature)."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = itertools.cycle(ports)
        self.inner = httpx2.AsyncHTTPTransport()
        self.seen: list[int] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = next(self.ports)
        self.seen.append(port)
        request.url = request.url.copy_with(port=port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def mcp_client(
    url: str,
    key: str,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    mode: str = "auto",
) -> AsyncIterator[Client]:
    """An initialized `mcp.Client` talking Streamable HTTP to `url` with `key`."""
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"}, transport=transport, timeout=30
    )
    transport_streams = streamable_http_client(url, http_client=http)
    async with http, Client(transport_streams, mode=mode, cache=None) as client:  # type: ignore[arg-type]
        yield client
