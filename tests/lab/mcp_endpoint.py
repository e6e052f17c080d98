"""The MCP endpoint to the spec, through the edge (https://127.0.0.1:8443) as a client sees
it: both paths without a redirect, Host and Origin checks, SDK clients of both protocol
eras, the 2026-07-28 HTTP rules, and the same 401 challenge at the edge and the service.

:func:`check_endpoint` runs every check against whichever color serves and returns that
color, so a test that has switched (tests/lab/test_switch.py) covers the other one too.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

PATHS = ("/api/v1/mcp", "/api/v1/mcp/")
LEGACY = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
MODERN = dict(LEGACY, **{"MCP-Protocol-Version": "2026-07-28"})
LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
CALL = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {
        "name": "list_posts",
        "arguments": {"limit": 1},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
}
# The app hosts' nginx allows a client 10 MCP requests a second (burst 20): the checks
# stay below it, so every answer is the service's, not a 429.
PACE_SECONDS = 0.125
_last_request = [0.0]


def _pace() -> float:
    """Seconds to wait before the next request, and count it as sent then."""
    now = time.monotonic()
    wait = max(0.0, _last_request[0] + PACE_SECONDS - now)
    _last_request[0] = now + wait
    return wait


def _paced(_: httpx2.Request) -> None:
    time.sleep(_pace())


async def _apaced(_: httpx2.Request) -> None:
    await asyncio.sleep(_pace())


# Run on an app host: a POST without credentials straight to the service (no nginx).
_SERVICE_CHALLENGE = r"""
import urllib.error, urllib.request
request = urllib.request.Request(
    "http://127.0.0.1:3000/api/v1/mcp", data=b"{}", method="POST",
    headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
try:
    urllib.request.urlopen(request, timeout=10)
    print("no challenge: 2xx")
except urllib.error.HTTPError as error:
    print(error.code, error.headers.get("WWW-Authenticate"))
"""


def _sdk_sessions(url: str, key: str, context: ssl.SSLContext) -> tuple[str, str]:
    """A 2025-11-25 session (initialize, tools/list, tools/call) and a 2026-07-28 one
    (server/discover, tools/call) against ``url``; returns the two protocol versions."""

    async def both() -> tuple[str, str]:
        versions = []
        for mode in ("legacy", "2026-07-28"):
            http = httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {key}"},
                verify=context,
                timeout=30,
                event_hooks={"request": [_apaced]},
            )
            streams = streamable_http_client(url, http_client=http)
            async with http, Client(streams, mode=mode, cache=None) as client:  # type: ignore[arg-type]
                if mode == "legacy":
                    tools = {tool.name for tool in (await client.list_tools()).tools}
                    assert "list_posts" in tools, tools
                else:
                    discovered = await client.session.discover()
                    assert "2026-07-28" in discovered.supported_versions, discovered
                result = await client.call_tool("list_posts", {"limit": 1})
                assert not result.is_error, (mode, result.content)
                versions.append(client.protocol_version)
        return versions[0], versions[1]

    return asyncio.run(both())


def check_endpoint(lab: dict) -> str:
    """Every check through the edge; returns the color that served them (all one color)."""
    key = Path(lab["api_key_file"]).read_text().strip()
    context = ssl.create_default_context(cafile=lab["ca_cert"])
    auth = {"Authorization": f"Bearer {key}"}
    origin = lab["url"]  # https://127.0.0.1:8443: a browser on the operator machine
    colors = set()
    paced = {"request": [_paced]}
    with httpx2.Client(base_url=lab["url"], verify=context, timeout=30, event_hooks=paced) as http:

        def post(path: str, body: object = LIST_TOOLS, **headers: str) -> httpx2.Response:
            response = http.post(path, json=body, headers={**LEGACY, **auth, **headers})
            if "x-mcp-color" in response.headers:  # not on the edge's own refusals
                colors.add(response.headers["x-mcp-color"])
            return response

        for path in PATHS:
            listed = post(path)
            assert listed.status_code == 200, (path, listed.status_code, listed.text)
            assert "location" not in listed.headers, listed.headers
            assert listed.json()["result"]["tools"], listed.text
            assert post(path, Origin="https://evil.example").status_code == 403, path
            assert post(path, Origin=origin).status_code == 200, path
            # A name the edge does not serve: its default server, not the service.
            foreign = post(path, Host="evil.example")
            assert foreign.status_code == 421, (path, foreign.status_code)
            get = http.get(path, headers={**MODERN, **auth})
            assert (get.status_code, get.headers.get("allow")) == (405, "POST"), get.text
            assert http.delete(path, headers={**MODERN, **auth}).status_code == 405, path
            for mismatch in ({"Mcp-Method": "tools/list"}, {"Mcp-Name": "get_post"}):
                headers = {"Mcp-Method": "tools/call", "Mcp-Name": "list_posts", **mismatch}
                refused = post(path, CALL, **MODERN, **headers)
                assert refused.status_code == 400, (mismatch, refused.text)
                assert refused.json()["error"]["code"] == -32020, refused.text
            routed = {"Mcp-Method": "tools/call", "Mcp-Name": "list_posts"}
            matched = post(path, CALL, **MODERN, **routed)
            assert matched.status_code == 200, matched.text
            assert _sdk_sessions(f"{lab['url']}{path}", key, context) == (
                "2025-11-25",
                "2026-07-28",
            )
        challenge = http.post("/api/v1/mcp", json=LIST_TOOLS, headers=LEGACY)
        colors.add(challenge.headers["x-mcp-color"])
    assert challenge.status_code == 401, challenge.text
    assert len(colors) == 1, colors
    (color,) = colors
    at_service = subprocess.run(
        ["ssh", "-F", lab["ssh_config"], f"app-{color}", "python3", "-"],
        input=_SERVICE_CHALLENGE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()
    assert at_service == f"401 {challenge.headers['www-authenticate']}", at_service
    return str(color)
