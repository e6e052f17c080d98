"""Throughput and latency of the reference MCP service on this machine.

Starts throwaway PostgreSQL and Redis (as the app_image tests do), migrates, seeds and
serves on 127.0.0.1, then measures `GET /health` and a cached MCP `tools/call` at a fixed
concurrency. Bounded in requests and in time; traffic goes to 127.0.0.1 only.

    python benchmarks/service.py [--requests 2000] [--concurrency 16] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "app_image"), str(ROOT / "app_image" / "tests")]

from service_harness import (  # noqa: E402
    PostgresServer,
    RedisServer,
    ServiceProcess,
    run_cli,
    service_env,
)

API_KEY = "b" * 64
TOOL_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "get_page", "arguments": {"slug": "about"}},
}
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "X-API-Key": API_KEY,
    "MCP-Protocol-Version": "2025-11-25",
}
TIME_CAP = 60.0


async def measure(name: str, send: object, requests: int, concurrency: int) -> dict[str, float]:
    """Send `requests` requests with `concurrency` in flight; return rate and percentiles."""
    latencies: list[float] = []
    errors = 0
    remaining = iter(range(requests))
    deadline = time.monotonic() + TIME_CAP

    async def worker() -> None:
        nonlocal errors
        for _ in remaining:
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            status = await send()  # type: ignore[operator]
            latencies.append(time.perf_counter() - started)
            errors += status != 200

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "name": name,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
    }


async def run(service: ServiceProcess, requests: int, concurrency: int) -> list[dict]:
    limits = httpx2.Limits(max_connections=concurrency)
    async with httpx2.AsyncClient(base_url=service.url, limits=limits, timeout=30) as client:

        async def health() -> int:
            return (await client.get("/health")).status_code

        async def tool_call() -> int:
            return (
                await client.post("/api/v1/mcp/", json=TOOL_CALL, headers=MCP_HEADERS)
            ).status_code

        await tool_call()  # warm the response cache
        return [
            await measure("GET /health", health, requests, concurrency),
            await measure("tools/call get_page (cached)", tool_call, requests, concurrency),
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    postgres, redis = PostgresServer(), RedisServer()
    service = None
    try:
        url = postgres.create_database("bench")
        env = service_env(
            url,
            redis.url(),
            MCP_API_KEY=API_KEY,
            MCP_WORKERS=str(args.workers),
            MCP_LOG_LEVEL="WARNING",
        )
        for command in ("migrate", "seed"):
            result = run_cli(env, command)
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
        service = ServiceProcess(env)
        results = asyncio.run(run(service, args.requests, args.concurrency))
    finally:
        if service:
            service.stop()
        redis.close()
        postgres.close()
    print(f"concurrency {args.concurrency}, uvicorn workers {args.workers}")
    for row in results:
        print(
            f"{row['name']:<32} {row['requests']:>6} req  {row['errors']:>3} errors  "
            f"{row['rps']:>8.0f} req/s  p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
