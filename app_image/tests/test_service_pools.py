"""A started service holds connections open, to PostgreSQL and to Redis.

A switch moves all traffic to a color at once: its requests must find connections open,
not open them (TLS, SCRAM) on a busy host within their 2 s budget (mcp_service.db).
"""

from __future__ import annotations

import socket
import uuid

import psycopg
from mcp_service.app import REDIS_POOL_SIZE
from service_harness import ServiceProcess, run_cli, service_env, wait_until

WORKERS = 2
POOL_SIZE = 8
REDIS_DB = 5  # no other test's service uses it


def redis_clients(port: int, db: int) -> int:
    """Connections to logical database ``db`` (Redis's own CLIENT LIST, over RESP)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n")
        reply = b""
        while b"\r\n" not in reply:
            reply += conn.recv(65536)
        header, body = reply.split(b"\r\n", 1)
        assert header.startswith(b"$"), header
        while len(body) < int(header[1:]) + 2:
            body += conn.recv(65536)
    return sum(1 for line in body.decode().splitlines() if f" db={db} " in f" {line} ")


def test_a_started_service_holds_connections_open_before_traffic(postgres, redis_server) -> None:
    name = f"pools_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(name)
    env = service_env(
        url,
        redis_server.url(REDIS_DB),
        MCP_WORKERS=str(WORKERS),
        MCP_DB_POOL_SIZE=str(POOL_SIZE),
    )
    for command in ("migrate", "seed"):
        result = run_cli(env, command)
        assert result.returncode == 0, result.stderr
    service = ServiceProcess(env)

    def postgres_connections() -> int:
        with psycopg.connect(postgres.url()) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = 'mcp_service'",
                (name,),
            ).fetchone()
        return row[0] if row else 0

    def counts() -> tuple[int, int]:
        return postgres_connections(), redis_clients(redis_server.port, REDIS_DB)

    # Half the PostgreSQL pool (before: 2 per worker), the whole Redis pool (before: none).
    wanted = (WORKERS * POOL_SIZE // 2, WORKERS * REDIS_POOL_SIZE)
    try:
        try:
            wait_until(lambda: counts() == wanted, 20, 0.2)
        except TimeoutError:
            raise AssertionError(f"open (postgres, redis): {counts()}, wanted {wanted}") from None
    finally:
        service.stop()
