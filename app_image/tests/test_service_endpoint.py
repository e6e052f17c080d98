"""The MCP endpoint to the spec: both paths without a redirect, Host and Origin checked by
default (DNS rebinding), CORS for the MCP headers, and what 2026-07-28 clients are owed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from mcp_client import mcp_client
from service_harness import ServiceProcess

PATHS = ("/api/v1/mcp", "/api/v1/mcp/")
LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
LEGACY = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
MODERN = dict(LEGACY, **{"MCP-Protocol-Version": "2026-07-28"})
DOMAIN = "mcp.example.com"
CORS_ORIGIN = "https://app.example.com"
# What mcpdeploy sets (roles/app): the domain and the loopback names, bare and with a port.
ALLOWED_HOSTS = ",".join(
    f"{name}{port}" for name in (DOMAIN, "127.0.0.1", "localhost", "[::1]") for port in ("", ":*")
)


@pytest.fixture(scope="module")
def named(base_env: dict[str, str]) -> Iterator[ServiceProcess]:
    """The service as a stack runs it: its names and origins listed."""
    process = ServiceProcess(
        dict(
            base_env,
            MCP_ALLOWED_HOSTS=ALLOWED_HOSTS,
            MCP_CORS_ORIGINS=CORS_ORIGIN,
            MCP_ALLOWED_ORIGINS=f"https://{DOMAIN}",
        )
    )
    yield process
    process.stop()


def post(service: ServiceProcess, path: str, key: str, body: object = LIST_TOOLS, **headers: str):
    sent = dict(LEGACY, Authorization=f"Bearer {key}")
    sent.update(headers)
    return httpx2.post(f"{service.url}{path}", json=body, headers=sent, timeout=10)


@pytest.mark.parametrize("path", PATHS)
def test_both_paths_answer_without_a_redirect(service: ServiceProcess, api_key: str, path: str):
    response = post(service, path, api_key)
    assert response.status_code == 200, response.text
    assert "location" not in response.headers
    assert {tool["name"] for tool in response.json()["result"]["tools"]} >= {"list_posts"}


@pytest.mark.parametrize("path", PATHS)
def test_loopback_hosts_pass_and_a_foreign_host_is_421_by_default(
    service: ServiceProcess, api_key: str, path: str
):
    # No MCP_ALLOWED_HOSTS: the image accepts only the loopback names.
    for host in (f"127.0.0.1:{service.port}", "localhost", "127.0.0.1", "[::1]:3000"):
        assert post(service, path, api_key, Host=host).status_code == 200, host
    for host in ("evil.example", DOMAIN, f"127.0.0.1.evil.example:{service.port}"):
        refused = post(service, path, api_key, Host=host)
        assert refused.status_code == 421, (host, refused.text)


@pytest.mark.parametrize("path", PATHS)
def test_listed_hosts_pass_and_others_are_421(named: ServiceProcess, api_key: str, path: str):
    for host in (DOMAIN, f"{DOMAIN}:443", f"127.0.0.1:{named.port}"):
        assert post(named, path, api_key, Host=host).status_code == 200, host
    assert post(named, path, api_key, Host="evil.example").status_code == 421


@pytest.mark.parametrize("path", PATHS)
def test_foreign_origin_is_403_listed_or_absent_origin_passes(
    named: ServiceProcess, api_key: str, path: str
):
    assert post(named, path, api_key, Origin="https://evil.example").status_code == 403
    assert post(named, path, api_key, Origin=f"https://{DOMAIN}.evil.example").status_code == 403
    for origin in (CORS_ORIGIN, f"https://{DOMAIN}"):
        assert post(named, path, api_key, Origin=origin).status_code == 200, origin
    assert post(named, path, api_key).status_code == 200  # no Origin: not a browser


def test_any_origin_is_403_when_none_is_listed(service: ServiceProcess, api_key: str):
    assert post(service, "/api/v1/mcp", api_key, Origin="http://127.0.0.1").status_code == 403


@pytest.mark.parametrize("path", PATHS)
def test_the_stream_checks_host_and_origin_too(named: ServiceProcess, api_key: str, path: str):
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {api_key}"}
    url = f"{named.url}{path}"
    assert httpx2.get(url, headers=dict(headers, Host="evil.example")).status_code == 421
    foreign = httpx2.get(url, headers=dict(headers, Origin="https://evil.example"))
    assert foreign.status_code == 403
    with httpx2.stream("GET", url, headers=dict(headers, Origin=CORS_ORIGIN), timeout=10) as ok:
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/event-stream")
        assert next(ok.iter_lines()).startswith(":")  # the stream's first comment


def test_cors_preflight_allows_the_mcp_headers_and_exposes_the_challenge(
    named: ServiceProcess, api_key: str
):
    preflight = httpx2.options(
        f"{named.url}/api/v1/mcp",
        headers={
            "Origin": CORS_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": (
                "authorization, content-type, mcp-protocol-version, mcp-method, mcp-name"
            ),
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == CORS_ORIGIN
    allowed = preflight.headers["access-control-allow-headers"].lower()
    for header in ("authorization", "mcp-protocol-version", "mcp-method", "mcp-name"):
        assert header in allowed, allowed
    refused = post(named, "/api/v1/mcp", "wrong-key", Origin=CORS_ORIGIN)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    exposed = refused.headers["access-control-expose-headers"].lower()
    assert "www-authenticate" in exposed, exposed


@pytest.mark.parametrize("path", PATHS)
def test_2026_get_is_405_allow_post_and_a_2025_get_keeps_the_stream(
    service: ServiceProcess, api_key: str, path: str
):
    url = f"{service.url}{path}"
    auth = {"Authorization": f"Bearer {api_key}"}
    modern = httpx2.get(url, headers=dict(MODERN, **auth), timeout=10)
    assert modern.status_code == 405, modern.text
    assert modern.headers["allow"] == "POST"
    stream_headers = dict(LEGACY, Accept="text/event-stream", **auth)
    with httpx2.stream("GET", url, headers=stream_headers, timeout=10) as legacy:
        assert legacy.status_code == 200
        assert legacy.headers["content-type"].startswith("text/event-stream")


@pytest.mark.parametrize("headers", [LEGACY, MODERN], ids=["2025-11-25", "2026-07-28"])
def test_delete_is_405(service: ServiceProcess, api_key: str, headers: dict[str, str]):
    response = httpx2.delete(
        f"{service.url}/api/v1/mcp", headers=dict(headers, Authorization=f"Bearer {api_key}")
    )
    assert response.status_code == 405, response.text


@pytest.mark.parametrize("path", PATHS)
def test_mcp_method_or_name_mismatch_is_400_header_mismatch(
    service: ServiceProcess, api_key: str, path: str
):
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {
            "name": "list_posts",
            "arguments": {},
            # The 2026-07-28 envelope every request carries instead of a handshake.
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    for headers in (
        {"Mcp-Method": "tools/list", "Mcp-Name": "list_posts"},
        {"Mcp-Method": "tools/call", "Mcp-Name": "get_post"},
    ):
        response = post(service, path, api_key, call, **MODERN, **headers)
        assert response.status_code == 400, (headers, response.text)
        assert response.json()["error"]["code"] == -32020, response.text
    matching = post(
        service,
        path,
        api_key,
        call,
        **MODERN,
        **{"Mcp-Method": "tools/call", "Mcp-Name": "list_posts"},
    )
    assert matching.status_code == 200, matching.text


@pytest.mark.anyio
@pytest.mark.parametrize("path", PATHS)
async def test_sdk_clients_of_both_eras_on_both_paths(
    service: ServiceProcess, api_key: str, path: str
):
    url = f"{service.url}{path}"
    async with mcp_client(url, api_key, mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        assert {tool.name for tool in (await client.list_tools()).tools} >= {"list_posts"}
        assert not (await client.call_tool("list_posts", {})).is_error
    async with mcp_client(url, api_key, mode="2026-07-28") as client:
        discovered = await client.session.discover()
        assert "2026-07-28" in discovered.supported_versions
        assert not (await client.call_tool("list_posts", {})).is_error
