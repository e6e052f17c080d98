"""`mcp-service cache`: the guide's mcp_enable_caching / mcp_cache_ttl as a command, and what
a client of the read tools sees when they change.

A post is changed directly in PostgreSQL, as an editor's other tools would: the cache cannot
know, so a cached answer keeps the old title until the TTL, a flush or caching off.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx2
import psycopg
import pytest
from service_harness import (
    PostgresServer,
    RedisServer,
    ServiceProcess,
    free_port,
    run_cli,
    service_env,
    wait_until,
)

MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
DEFAULTS = {"mcp_enable_caching": True, "mcp_cache_ttl": 300, "flushed": False}


def cache(env: dict[str, str], *args: str) -> dict:
    result = run_cli(env, "cache", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def stored(database_url: str) -> dict:
    """The raw site_settings rows, as a hand-written SQL query would see them."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT key, value FROM site_settings"
            " WHERE key IN ('mcp_enable_caching', 'mcp_cache_ttl')"
        ).fetchall()
    return dict(rows)


def last_audit(database_url: str) -> tuple[str, dict]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT event, details FROM audit_log ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


@pytest.fixture
def cache_restored(base_env: dict[str, str]) -> Iterator[None]:
    yield
    cache(base_env, "--enable", "--ttl", "300", "--flush")


@pytest.fixture(scope="module")
def eager_service(base_env: dict[str, str]) -> Iterator[ServiceProcess]:
    """A service that re-reads site_settings on every request (MCP_SETTINGS_CACHE_SECONDS=0),
    so each step below follows the command at once; the 5 s bound is the kill switch's
    test and the lab's."""
    process = ServiceProcess(dict(base_env, MCP_SETTINGS_CACHE_SECONDS="0"))
    yield process
    process.stop()


@pytest.fixture
def post(database_url: str) -> Iterator[str]:
    """A published post of this test's own, inserted and later deleted in PostgreSQL."""
    slug = f"cache-probe-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO posts (author_id, slug, title, status, published_at)"
            " SELECT id, %s, 'first', 'published', now() FROM users WHERE username = 'editor'",
            (slug,),
        )
    yield slug
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM posts WHERE slug = %s", (slug,))


def retitle(database_url: str, slug: str, title: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE posts SET title = %s WHERE slug = %s", (title, slug))


def title_served(service: ServiceProcess, key: str, slug: str) -> str:
    """The title get_post answers over MCP."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "get_post", "arguments": {"slug": slug}},
    }
    response = httpx2.post(
        service.mcp_url, json=body, headers=dict(MCP_HEADERS, **{"X-API-Key": key}), timeout=30
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert not result.get("isError"), result
    return json.loads(result["content"][0]["text"])["title"]


def test_without_options_it_prints_the_settings_as_the_workers_apply_them(
    base_env: dict[str, str], database_url: str, cache_restored: None
):
    assert cache(base_env) == DEFAULTS
    # Rows written by hand as strings are read the way runtime.py reads them.
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE site_settings SET value = '\"off\"' WHERE key = 'mcp_enable_caching'")
        conn.execute("UPDATE site_settings SET value = '\"45\"' WHERE key = 'mcp_cache_ttl'")
    assert cache(base_env) == dict(DEFAULTS, mcp_enable_caching=False, mcp_cache_ttl=45)


def test_changes_are_stored_in_site_settings_and_audited(
    base_env: dict[str, str], database_url: str, cache_restored: None
):
    assert cache(base_env, "--disable", "--ttl", "42") == {
        "mcp_enable_caching": False,
        "mcp_cache_ttl": 42,
        "flushed": False,
    }
    assert stored(database_url) == {"mcp_enable_caching": False, "mcp_cache_ttl": 42}
    assert last_audit(database_url) == (
        "cache.update",
        {"mcp_enable_caching": False, "mcp_cache_ttl": 42, "flushed": False},
    )

    # Back on: entries left from before caching went off must not come back, so it flushes.
    enabled = cache(base_env, "--enable")
    assert enabled["mcp_enable_caching"] is True and enabled["flushed"] is True
    assert cache(base_env, "--flush")["generation"] == enabled["generation"] + 1
    assert last_audit(database_url) == ("cache.update", {"flushed": True})
    # Enabling what is on changes nothing in Redis.
    assert cache(base_env, "--enable")["flushed"] is False


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ttl", "0"], "argument --ttl: 0 is outside 1..86400 seconds"),
        (["--ttl", "86401"], "argument --ttl: 86401 is outside 1..86400 seconds"),
        (["--ttl", "5m"], "argument --ttl: '5m' is not a whole number of seconds (1..86400)"),
        (["--enable", "--disable"], "argument --disable: not allowed with argument --enable"),
    ],
)
def test_a_bad_option_is_refused_with_one_line_and_changes_nothing(
    base_env: dict[str, str], database_url: str, args: list[str], needle: str
):
    before = stored(database_url)
    result = run_cli(base_env, "cache", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(needle), result.stderr
    assert stored(database_url) == before


def test_with_redis_unreachable_a_flush_changes_nothing(
    base_env: dict[str, str], database_url: str, cache_restored: None
):
    cache(base_env, "--disable")
    no_redis = dict(base_env, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    for args in (["--flush"], ["--enable", "--ttl", "60"]):
        result = run_cli(no_redis, "cache", *args)
        assert result.returncode == 2
        assert result.stderr.startswith("mcp-service cache: cannot use Redis: "), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert stored(database_url) == {"mcp_enable_caching": False, "mcp_cache_ttl": 300}
    # What needs no flush needs no Redis.
    assert cache(no_redis, "--ttl", "60")["mcp_cache_ttl"] == 60


def test_the_runtime_role_may_change_the_cache_settings(
    postgres: PostgresServer, redis_server: RedisServer
):
    url = postgres.create_database(f"cacherole_{uuid.uuid4().hex[:8]}")
    role = f"mcp_rt_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    for command in ("migrate", "seed"):
        result = run_cli(service_env(url, "", MCP_RUNTIME_ROLE=role), command)
        assert result.returncode == 0, result.stderr
    runtime_url = url.replace("postgresql://postgres@", f"postgresql://{role}@")
    env = service_env(runtime_url, redis_server.url(3))
    assert cache(env, "--disable", "--ttl", "30") == dict(
        DEFAULTS, mcp_enable_caching=False, mcp_cache_ttl=30
    )
    assert cache(env, "--enable")["flushed"] is True
    assert stored(url) == {"mcp_enable_caching": True, "mcp_cache_ttl": 30}


def test_a_cached_answer_lasts_until_a_flush_and_caching_off_shows_every_change(
    eager_service: ServiceProcess,
    base_env: dict[str, str],
    database_url: str,
    api_key: str,
    post: str,
    cache_restored: None,
):
    assert title_served(eager_service, api_key, post) == "first"
    retitle(database_url, post, "second")
    assert title_served(eager_service, api_key, post) == "first"  # from the cache

    cache(base_env, "--flush")
    assert title_served(eager_service, api_key, post) == "second"

    retitle(database_url, post, "third")
    assert title_served(eager_service, api_key, post) == "second"
    cache(base_env, "--disable")
    assert title_served(eager_service, api_key, post) == "third"
    retitle(database_url, post, "fourth")
    assert title_served(eager_service, api_key, post) == "fourth"


def test_the_ttl_sets_how_long_an_answer_is_served_and_applies_to_older_entries(
    eager_service: ServiceProcess,
    base_env: dict[str, str],
    database_url: str,
    api_key: str,
    post: str,
    cache_restored: None,
):
    ttl = 2
    assert title_served(eager_service, api_key, post) == "first"  # cached for 300 s
    retitle(database_url, post, "second")
    assert title_served(eager_service, api_key, post) == "first"
    # An entry stored under the old TTL is not served once the new one is read.
    cache(base_env, "--ttl", str(ttl))
    asked = time.monotonic()
    assert title_served(eager_service, api_key, post) == "second"
    answered = time.monotonic()

    retitle(database_url, post, "third")
    assert title_served(eager_service, api_key, post) == "second"
    polling = time.monotonic()
    waited = wait_until(lambda: title_served(eager_service, api_key, post) == "third", 5, 0.05)
    # Stored between `asked` and `answered`, it expires `ttl` s later: not before, not long after.
    seen = polling + waited
    assert asked + ttl - 0.05 <= seen <= answered + ttl + 1.0, (seen - asked, seen - answered)
