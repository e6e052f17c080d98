"""API key auth, rotation, revocation (in MCP_AUTH_MODE apiKey and both), rate limits, body
limit, CORS and client-IP resolution."""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx2
import psycopg
import pytest
from issuer_harness import AUDIENCE, Issuer
from mcp_service import keys
from mcp_service.middleware import client_ip
from service_harness import SECRET_KEY_BASE, ServiceProcess, wait_until

LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


def post_mcp(
    service: ServiceProcess, key: str | None, body: object = LIST_TOOLS, **headers: str
) -> httpx2.Response:
    sent = dict(MCP_HEADERS, **headers)
    if key:
        sent["X-API-Key"] = key
    return httpx2.post(service.mcp_url, json=body, headers=sent, timeout=10)


@pytest.fixture(scope="module", params=["apiKey", "both"])
def keyed(
    request: pytest.FixtureRequest,
    service: ServiceProcess,
    base_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    """The service in each mode that takes API keys: keys behave the same in both."""
    if request.param == "apiKey":
        yield service
        return
    issuer = Issuer(tmp_path_factory.mktemp("issuer"))
    process = ServiceProcess(
        dict(
            base_env,
            MCP_AUTH_MODE="both",
            MCP_AUTH_ISSUER=issuer.url,
            MCP_AUTH_AUDIENCE=AUDIENCE,
            MCP_AUTH_CA_FILE=str(issuer.ca),
        )
    )
    yield process
    process.stop()
    issuer.stop()


def new_key(database_url: str, name: str) -> str:
    with psycopg.connect(database_url) as conn:
        return keys.create_key(conn, SECRET_KEY_BASE, name)


def test_key_accepted_as_bearer_or_x_api_key(keyed: ServiceProcess, api_key: str):
    assert post_mcp(keyed, api_key).status_code == 200
    bearer = post_mcp(keyed, None, Authorization=f"Bearer {api_key}")
    assert bearer.status_code == 200
    assert "list_posts" in bearer.text


@pytest.mark.parametrize("key", [None, "wrong-key", "x" * 5000])
def test_missing_or_wrong_key_is_401_jsonrpc_and_audited(
    keyed: ServiceProcess, database_url: str, key: str | None
):
    marker = uuid.uuid4().hex
    response = post_mcp(keyed, key, **{"X-Request-ID": marker})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == -32001
    assert response.json()["jsonrpc"] == "2.0"
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT event, client_ip::text FROM audit_log WHERE request_id = %s", (marker,)
        ).fetchone()
    assert row == ("auth.failure", "127.0.0.1/32")


def test_rotated_key_works_until_expiry_then_401(keyed: ServiceProcess, database_url: str):
    service = keyed
    name = f"rotation-{uuid.uuid4().hex[:6]}"
    old = new_key(database_url, name)
    assert post_mcp(service, old).status_code == 200
    with psycopg.connect(database_url) as conn:
        new = keys.rotate_key(conn, SECRET_KEY_BASE, name, timedelta(seconds=2))
    expires = time.monotonic() + 2
    # Both keys are valid during the grace period: rotation needs no downtime.
    assert post_mcp(service, new).status_code == 200
    assert post_mcp(service, old).status_code == 200
    wait_until(lambda: time.monotonic() > expires, 5)
    # Expired, so refused once the worker's key list is refreshed: within the cache period
    # (MCP_SETTINGS_CACHE_SECONDS, 5 s), as for a revoked key. A list loaded just before
    # the rotation still holds the old expiry for up to that long.
    wait_until(lambda: post_mcp(service, old).status_code == 401, 6, 0.2)
    assert post_mcp(service, new).status_code == 200


def test_a_revoked_key_is_refused_within_the_cache_period(keyed: ServiceProcess, database_url: str):
    key = new_key(database_url, f"revoked-{uuid.uuid4().hex[:6]}")
    assert post_mcp(keyed, key).status_code == 200
    with psycopg.connect(database_url) as conn:
        assert keys.revoke_key(conn, key[:8]) == 1
    # Within the worker's key-list refresh (MCP_SETTINGS_CACHE_SECONDS, 5 s).
    wait_until(lambda: post_mcp(keyed, key).status_code == 401, 6, 0.2)


def test_request_body_over_1mib_is_413(service: ServiceProcess, api_key: str):
    big = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * (1 << 20)}}
    assert post_mcp(service, api_key, big).status_code == 413

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the limit must hold for streamed (chunked) bodies too.
        yield b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}}'

    response = httpx2.post(
        service.mcp_url, content=chunks(), headers=dict(MCP_HEADERS, **{"X-API-Key": api_key})
    )
    assert response.status_code == 413


@pytest.fixture(scope="module")
def limited_service(base_env: dict[str, str], redis_server: object) -> Iterator[ServiceProcess]:
    env = dict(
        base_env,
        MCP_RATE_LIMIT_PER_MINUTE="5",
        REDIS_URL=redis_server.url(1),  # type: ignore[attr-defined]
        MCP_CORS_ORIGINS="https://app.example.com",
    )
    process = ServiceProcess(env)
    yield process
    process.stop()


def test_rate_limit_per_key_answers_429_with_retry_after(
    limited_service: ServiceProcess, database_url: str
):
    key = new_key(database_url, "limited")
    # Distinct client addresses (via the trusted local proxy) isolate the per-key limit.
    statuses = [
        post_mcp(limited_service, key, **{"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(6)
    ]
    assert [r.status_code for r in statuses] == [200] * 5 + [429]
    rejected = statuses[-1]
    assert 1 <= int(rejected.headers["Retry-After"]) <= 60
    assert "per API key" in rejected.json()["error"]["message"]


def test_rate_limit_per_client_ip(limited_service: ServiceProcess, database_url: str):
    address = "203.0.113.7"
    statuses = [
        post_mcp(
            limited_service, new_key(database_url, f"ip-{i}"), **{"X-Forwarded-For": address}
        ).status_code
        for i in range(6)
    ]
    assert statuses == [200] * 5 + [429]
    other = post_mcp(
        limited_service, new_key(database_url, "ip-other"), **{"X-Forwarded-For": "203.0.113.8"}
    )
    assert other.status_code == 200


def test_cors_only_for_configured_origins(limited_service: ServiceProcess):
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = httpx2.options(
        limited_service.mcp_url, headers=dict(preflight, Origin="https://app.example.com")
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    denied = httpx2.options(
        limited_service.mcp_url, headers=dict(preflight, Origin="https://evil.example.net")
    )
    assert "access-control-allow-origin" not in denied.headers


TRUSTED = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("192.0.2.9", "198.51.100.1", "192.0.2.9"),  # untrusted peer: header ignored
        ("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.1.1", "198.51.100.1"),  # forged left part
        ("127.0.0.1", "garbage", "127.0.0.1"),
        ("127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_client_ip_trusts_forwarded_for_only_from_proxies(
    peer: str, forwarded: str | None, expected: str
):
    assert client_ip(peer, forwarded, TRUSTED) == expected
