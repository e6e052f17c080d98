"""Fixtures: one PostgreSQL and one Redis per session, migrated and seeded, and services."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(APP_DIR), str(Path(__file__).resolve().parent)]

from service_harness import (  # noqa: E402
    HarnessError,
    PostgresServer,
    RedisServer,
    ServiceProcess,
    run_cli,
    service_env,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: needs a Docker engine (builds the app image)")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except HarnessError as exc:
        pytest.fail(str(exc))
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except HarnessError as exc:
        pytest.fail(str(exc))
    yield server
    server.close()


@pytest.fixture(scope="session")
def database_url(postgres: PostgresServer) -> str:
    """The shared test database, migrated and seeded through the CLI."""
    url = postgres.create_database("railspress")
    env = service_env(url, "")
    for command in ("migrate", "seed"):
        result = run_cli(env, command)
        assert result.returncode == 0, result.stderr
    return url


@pytest.fixture(scope="session")
def api_key(database_url: str) -> str:
    """A key provisioned the way a deployment does it: hashed from MCP_API_KEY at start-up."""
    return uuid.uuid4().hex + uuid.uuid4().hex


@pytest.fixture(scope="session")
def base_env(database_url: str, redis_server: RedisServer, api_key: str) -> dict[str, str]:
    return service_env(database_url, redis_server.url(0), MCP_API_KEY=api_key)


@pytest.fixture(scope="session")
def service(base_env: dict[str, str]) -> Iterator[ServiceProcess]:
    process = ServiceProcess(base_env)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def second_service(base_env: dict[str, str]) -> Iterator[ServiceProcess]:
    process = ServiceProcess(base_env)
    yield process
    process.stop()
