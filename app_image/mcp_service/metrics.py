"""Prometheus metrics, per process or aggregated across uvicorn workers.

With MCP_WORKERS > 1, `serve` sets PROMETHEUS_MULTIPROC_DIR (under /tmp, a tmpfs in the
container) before the workers start, and the metrics endpoint aggregates every worker's
files; with one worker the default registry is used directly.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from psycopg_pool import AsyncConnectionPool

REQUESTS = Counter(
    "mcp_http_requests_total",
    "HTTP requests by route, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "mcp_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RATE_LIMITED = Counter(
    "mcp_rate_limit_rejections_total",
    "Requests answered 429, by subject and window.",
    ["scope", "window"],
)
AUTH_FAILURES = Counter("mcp_auth_failures_total", "Requests answered 401, by reason.", ["reason"])
AUTH_ISSUER_ERRORS = Counter(
    "mcp_auth_issuer_errors_total",
    "Failed fetches of the OAuth issuer's metadata or keys (cached keys keep working).",
)
TOOL_CALLS = Counter(
    "mcp_tool_calls_total", "MCP tool calls by tool and outcome.", ["tool", "outcome"]
)
CACHE_REQUESTS = Counter(
    "mcp_cache_requests_total", "Response cache lookups: hit, miss or error.", ["result"]
)
DB_POOL = Gauge(
    "mcp_db_pool_connections",
    "Database pool connections by state (in_use, available).",
    ["state"],
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "mcp_db_pool_requests_waiting",
    "Requests waiting for a database connection.",
    multiprocess_mode="livesum",
)
OPEN_STREAMS = Gauge(
    "mcp_open_streams",
    "Server-sent event streams open on GET /api/v1/mcp/.",
    multiprocess_mode="livesum",
)


def observe_pool(pool: AsyncConnectionPool) -> None:
    """Copy the pool's current occupancy into the gauges."""
    stats = pool.get_stats()
    size = stats.get("pool_size", 0)
    available = stats.get("pool_available", 0)
    DB_POOL.labels(state="in_use").set(size - available)
    DB_POOL.labels(state="available").set(available)
    DB_POOL_WAITING.set(stats.get("requests_waiting", 0))


def render() -> tuple[bytes, str]:
    """The exposition text of this process, or of all workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def mark_worker_dead() -> None:
    """Drop this worker's live gauges from the aggregate when it exits."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())
