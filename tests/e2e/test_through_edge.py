"""End to end through the edge, as a client of the lab sees it: https://127.0.0.1:8443.

Uses the URL, CA and API key file that `mcpdeploy lab status --json` names, and the
official MCP SDK client.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.lab
MCPDEPLOY = str(Path(sys.executable).with_name("mcpdeploy"))
TOOLS = {"list_posts", "get_post", "search_content", "list_pages", "get_page", "create_draft_post"}


@pytest.fixture(scope="module")
def lab() -> dict:
    result = subprocess.run(
        [MCPDEPLOY, "lab", "status", "--json"], capture_output=True, text=True, check=False
    )
    doc = json.loads(result.stdout)
    assert doc["up"] and doc["ca_cert"] and doc["api_key_file"], doc
    return doc


def trust(lab: dict) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=lab["ca_cert"])


def http(lab: dict, **kwargs) -> httpx2.Client:
    return httpx2.Client(base_url=lab["url"], verify=trust(lab), timeout=30, **kwargs)


def test_mcp_session_through_the_edge_lists_and_calls_tools(lab):
    key = Path(lab["api_key_file"]).read_text().strip()

    async def session() -> tuple[set[str], bool, str]:
        client_http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, verify=trust(lab), timeout=30
        )
        streams = streamable_http_client(f"{lab['url']}/api/v1/mcp/", http_client=client_http)
        async with client_http, Client(streams, cache=None) as client:  # type: ignore[arg-type]
            tools = {tool.name for tool in (await client.list_tools()).tools}
            result = await client.call_tool("list_posts", {"limit": 5})
            return tools, result.is_error, client.server_info.name

    tools, is_error, server = asyncio.run(session())
    assert tools >= TOOLS
    assert not is_error
    assert server


def test_mcp_without_a_key_is_refused_with_401(lab):
    with http(lab) as client:
        response = client.post(
            "/api/v1/mcp/",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] < 0


def test_health_through_the_edge_names_the_active_color(lab):
    with http(lab) as client:
        response = client.get("/health/mcp")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    settings = subprocess.run(
        [MCPDEPLOY, "config", "check", "--stack", "lab"], capture_output=True, text=True
    )
    assert response.headers["x-mcp-color"] == json.loads(settings.stdout)["activeColor"]


BURST = """
import json, ssl, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor
context = ssl._create_unverified_context()  # this checks rate limits; TLS is tested elsewhere
def get(_):
    request = urllib.request.Request(
        "https://{edge}/api/v1/mcp/session/handshake", headers={{"Host": "{domain}"}})
    try:
        return urllib.request.urlopen(request, context=context, timeout=10).status
    except urllib.error.HTTPError as error:
        return error.code
with ThreadPoolExecutor(10) as pool:
    codes = list(pool.map(get, range({count})))
print(json.dumps({{str(c): codes.count(c) for c in set(codes)}}))
"""


def test_rate_limit_applies_per_client_not_to_the_edge_as_one(lab):
    edge = next(h for h in lab["hosts"] if h["role"] == "edge")
    settings = json.loads(
        subprocess.run(
            [MCPDEPLOY, "config", "check", "--stack", "lab"], capture_output=True, text=True
        ).stdout
    )
    zone = settings["nginxRateLimits"]["mcp"]
    count = 3 * (zone["ratePerSecond"] + zone["burst"])
    script = BURST.format(edge=edge["address"], domain=settings["domain"], count=count)
    result = subprocess.run(
        ["ssh", "-F", lab["ssh_config"], "data", "python3", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
    )
    codes = json.loads(result.stdout)
    assert codes.get("429", 0) > 0, codes
    # Another client, arriving at the same edge at the same moment, is not limited.
    with http(lab) as client:
        assert client.get("/api/v1/mcp/session/handshake").status_code == 200
