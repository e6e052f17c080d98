"""Operations: kill switch, readiness during a PostgreSQL outage, migrations, config errors,
JSON logs and graceful SIGTERM draining."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import httpx2
import psycopg
import pytest
from service_harness import (
    PostgresServer,
    ServiceProcess,
    run_cli,
    service_env,
    wait_until,
)

TOOL_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "list_pages", "arguments": {}},
}
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


def call_tool(service: ServiceProcess, key: str, body: object = TOOL_CALL) -> httpx2.Response:
    return httpx2.post(
        service.mcp_url, json=body, headers=dict(MCP_HEADERS, **{"X-API-Key": key}), timeout=30
    )


def health_mcp(service: ServiceProcess) -> httpx2.Response:
    return httpx2.get(f"{service.url}/health/mcp", timeout=10)


@pytest.fixture
def kill_switch_restored(base_env: dict[str, str]) -> Iterator[None]:
    yield
    assert run_cli(base_env, "enable").returncode == 0


def test_kill_switch_disables_mcp_within_5s_and_reenables(
    service: ServiceProcess, base_env: dict[str, str], api_key: str, kill_switch_restored: None
):
    assert call_tool(service, api_key).status_code == 200
    result = run_cli(base_env, "disable")
    assert result.returncode == 0, result.stderr
    flipped = time.monotonic()
    wait_until(lambda: call_tool(service, api_key).status_code == 503, 5.5, 0.2)
    assert time.monotonic() - flipped <= 5.5
    health = health_mcp(service)
    assert health.status_code == 200
    assert health.json()["status"] == "disabled"
    assert health.json()["mcp_enabled"] is False
    assert httpx2.get(f"{service.url}/api/v1/mcp/session/handshake").status_code == 503

    assert run_cli(base_env, "enable").returncode == 0
    wait_until(lambda: call_tool(service, api_key).status_code == 200, 5.5, 0.2)
    assert health_mcp(service).json()["status"] == "ok"


def test_readiness_names_postgres_while_it_is_down(
    service: ServiceProcess, postgres: PostgresServer
):
    assert health_mcp(service).status_code == 200
    postgres.stop()
    try:
        wait_until(lambda: health_mcp(service).status_code == 503, 10, 0.2)
        body = health_mcp(service).json()
        assert body["failing"] == ["postgres"]
        assert body["checks"]["redis"] == "ok"
        # Liveness does not depend on the database.
        assert httpx2.get(f"{service.url}/health").status_code == 200
    finally:
        postgres.start()
    wait_until(lambda: health_mcp(service).status_code == 200, 5, 0.2)


def test_concurrent_migrations_apply_once(postgres: PostgresServer):
    url = postgres.create_database(f"migrate_{uuid.uuid4().hex[:8]}")
    env = service_env(url, "")
    results: list = [None, None]

    def run(index: int) -> None:
        results[index] = run_cli(env, "migrate")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    applied = [json.loads(r.stdout.strip().splitlines()[-1])["applied"] for r in results]
    assert sorted(applied, key=len) == [[], ["001_content", "002_operations"]]
    with psycopg.connect(url) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
        indexes = {n for (n,) in conn.execute("SELECT indexname FROM pg_indexes")}
    assert sorted(versions) == [1, 2]
    assert {
        "idx_posts_status_published_at",
        "idx_pages_status_published_at",
        "idx_users_email",
        "idx_site_settings_key",
        "idx_posts_search",
    } <= indexes
    again = run_cli(env, "migrate")
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {"applied": []}


def test_runtime_role_gets_dml_only_including_future_tables(postgres: PostgresServer):
    url = postgres.create_database(f"grants_{uuid.uuid4().hex[:8]}")
    role = f"mcp_rt_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    result = run_cli(service_env(url, "", MCP_RUNTIME_ROLE=role), "migrate")
    assert result.returncode == 0, result.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE later_table (id serial PRIMARY KEY)")
    runtime_url = url.replace("postgresql://postgres@", f"postgresql://{role}@")
    with psycopg.connect(runtime_url, autocommit=True) as conn:
        conn.execute("INSERT INTO site_settings (key, value) VALUES ('probe', 'true')")
        conn.execute("INSERT INTO later_table DEFAULT VALUES")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM schema_migrations")


def test_missing_runtime_role_is_one_clear_line(postgres: PostgresServer):
    url = postgres.create_database(f"norole_{uuid.uuid4().hex[:8]}")
    result = run_cli(service_env(url, "", MCP_RUNTIME_ROLE="ghost_role"), "migrate")
    assert result.returncode == 2
    assert "ghost_role" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL: is required"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL: must start with"),
        ({"MCP_WORKERS": "many"}, "MCP_WORKERS: 'many' is not an integer"),
        ({"SECRET_KEY_BASE": "short"}, "SECRET_KEY_BASE: must be at least 32"),
        ({"MCP_CORS_ORIGINS": "*"}, "MCP_CORS_ORIGINS"),
        ({"REDIS_URL": "", "REDIS_URL_FILE": "/nonexistent"}, "REDIS_URL_FILE: cannot read"),
        ({"MCP_AUTH_MODE": "jwt"}, "MCP_AUTH_MODE: 'jwt' is not one of apiKey, oauth, both"),
        ({"MCP_AUTH_MODE": "oauth"}, "MCP_AUTH_ISSUER: is required when MCP_AUTH_MODE is oauth"),
        (
            {"MCP_AUTH_MODE": "both", "MCP_AUTH_ISSUER": "https://issuer.example"},
            "MCP_AUTH_AUDIENCE: is required when MCP_AUTH_MODE is both",
        ),
        (
            {"MCP_AUTH_MODE": "oauth", "MCP_AUTH_ISSUER": "http://issuer.example"},
            "MCP_AUTH_ISSUER: 'http://issuer.example' is not an https:// URL",
        ),
        ({"MCP_AUTH_ALGORITHMS": "RS256,HS256"}, "MCP_AUTH_ALGORITHMS: 'HS256' is refused"),
        ({"MCP_AUTH_ALGORITHMS": "none"}, "MCP_AUTH_ALGORITHMS: 'none' is refused"),
        ({"MCP_AUTH_REQUIRED_SCOPES": 'mcp:"x"'}, "MCP_AUTH_REQUIRED_SCOPES: 'mcp:\"x\"'"),
        ({"MCP_AUTH_CLOCK_SKEW_SECONDS": "3600"}, "MCP_AUTH_CLOCK_SKEW_SECONDS: 3600.0 is"),
        ({"MCP_AUTH_CA_FILE": "/nonexistent/ca.pem"}, "MCP_AUTH_CA_FILE: cannot read"),
    ],
)
def test_bad_config_fails_start_with_one_line(
    base_env: dict[str, str], overrides: dict[str, str], needle: str
):
    result = run_cli(dict(base_env, **overrides), "serve")
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_secrets_from_files(base_env: dict[str, str], tmp_path: object) -> None:
    secret_file = tmp_path / "db_url"  # type: ignore[operator]
    secret_file.write_text(base_env["DATABASE_URL"] + "\n")
    env = dict(base_env, DATABASE_URL="", DATABASE_URL_FILE=str(secret_file))
    result = run_cli(env, "status")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"mcp_enabled": True}


def test_logs_are_json_with_request_id_and_no_key(service: ServiceProcess, api_key: str):
    marker = f"req-{uuid.uuid4().hex}"
    httpx2.get(f"{service.url}/health", headers={"X-Request-ID": marker})
    call_tool(service, api_key)
    wait_until(lambda: marker in service.logs(), 5)
    lines = [json.loads(line) for line in service.logs().splitlines() if line.strip()]
    access = [entry for entry in lines if entry.get("request_id") == marker]
    assert access and access[0]["service"] == "railspress-mcp"
    assert {"timestamp", "level", "message"} <= set(access[0])
    assert api_key not in service.logs()


def test_sigterm_drains_in_flight_requests(
    base_env: dict[str, str], database_url: str, api_key: str
):
    service = ServiceProcess(base_env)
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "list_posts", "arguments": {"tag": uuid.uuid4().hex[:12]}},
    }
    outcome: dict = {}
    with psycopg.connect(database_url) as blocker:
        # Hold a lock that the tool's query must wait for: the request is in flight.
        blocker.execute("LOCK TABLE posts IN ACCESS EXCLUSIVE MODE")
        worker = threading.Thread(
            target=lambda: outcome.update(r=call_tool(service, api_key, body))
        )
        worker.start()
        wait_until(lambda: _waiting_on_lock(database_url), 10)
        stopper = threading.Thread(target=service.stop)
        stopper.start()
        time.sleep(0.5)
        assert service.process.poll() is None, "exited with a request in flight"
        blocker.rollback()
    worker.join(timeout=30)
    stopper.join(timeout=30)
    assert outcome["r"].status_code == 200
    assert service.process.poll() is not None


def _waiting_on_lock(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mcp_service'"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def test_a_key_created_with_an_expiry_works_until_it_expires(
    service: ServiceProcess, base_env: dict[str, str]
):
    result = run_cli(
        base_env, "keys", "create", "--name", "release-gate", "--expires-minutes", "0.1"
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["prefix"] == created["key"][:8]
    assert call_tool(service, created["key"]).status_code == 200
    listed = json.loads(run_cli(base_env, "keys", "list").stdout)["keys"]
    assert next(k for k in listed if k["key_prefix"] == created["prefix"])["expires_at"]
    wait_until(lambda: call_tool(service, created["key"]).status_code == 401, 15, 0.5)


def test_workers_answer_kept_alive_connections_without_a_delayed_ack_wait(
    base_env: dict[str, str],
):
    """With several workers, answers on a reused connection must not wait for the client's
    delayed ACK (Nagle on the service's sockets): ~40 ms each on Linux, ~2 ms without."""
    service = ServiceProcess(dict(base_env, MCP_WORKERS="2"))
    try:
        with httpx2.Client(base_url=service.url, timeout=10) as client:
            client.get("/health")  # the first answer on a new connection is never delayed
            times = []
            for _ in range(15):
                started = time.perf_counter()
                assert client.get("/health").status_code == 200
                times.append(time.perf_counter() - started)
    finally:
        service.stop()
    assert sorted(times)[len(times) // 2] < 0.02, [round(t * 1000, 1) for t in times]
