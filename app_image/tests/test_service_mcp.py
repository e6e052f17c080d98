"""The MCP surface through the official SDK client: tools, resources, validation, sessions."""

from __future__ import annotations

import json
import uuid

import httpx2
import pytest
from mcp_client import RoundRobinTransport, mcp_client
from service_harness import ServiceProcess

pytestmark = pytest.mark.anyio

TOOLS = {"list_posts", "get_post", "search_content", "list_pages", "get_page", "create_draft_post"}


def payload(result: object) -> dict:
    assert not result.is_error, result.content  # type: ignore[attr-defined]
    return json.loads(result.content[0].text)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_initialize_and_list_tools(service: ServiceProcess, api_key: str, mode: str):
    async with mcp_client(service.mcp_url, api_key, mode=mode) as client:
        assert client.server_info is not None
        assert client.server_info.name == "railspress-mcp"
        tools = await client.list_tools()
    assert {tool.name for tool in tools.tools} == TOOLS


async def test_every_tool_answers(service: ServiceProcess, api_key: str):
    async with mcp_client(service.mcp_url, api_key) as client:
        posts = payload(await client.call_tool("list_posts", {}))["posts"]
        welcome = next(p for p in posts if p["slug"] == "welcome-to-railspress")
        assert welcome["author"]["username"] == "editor"
        assert [c["slug"] for c in welcome["categories"]] == ["news"]
        assert [t["slug"] for t in welcome["tags"]] == ["mcp"]

        post = payload(await client.call_tool("get_post", {"slug": "welcome-to-railspress"}))
        assert "Model Context Protocol" in post["body"]

        by_tag = payload(await client.call_tool("list_posts", {"tag": "mcp", "limit": 5}))
        assert all("mcp" in [t["slug"] for t in p["tags"]] for p in by_tag["posts"])
        by_author = payload(await client.call_tool("list_posts", {"author": "nobody"}))
        assert by_author["posts"] == []

        hits = payload(await client.call_tool("search_content", {"query": "protocol"}))
        assert ("post", "welcome-to-railspress") in {
            (h["kind"], h["slug"]) for h in hits["results"]
        }
        page_hits = payload(
            await client.call_tool("search_content", {"query": "site", "kinds": ["page"]})
        )
        assert {h["kind"] for h in page_hits["results"]} == {"page"}

        pages = payload(await client.call_tool("list_pages", {}))["pages"]
        assert "about" in [p["slug"] for p in pages]
        page = payload(await client.call_tool("get_page", {"slug": "about"}))
        assert page["title"] == "About"

        title = f"Draft {uuid.uuid4().hex[:8]}"
        created = payload(
            await client.call_tool(
                "create_draft_post",
                {
                    "title": title,
                    "body": "Body text",
                    "author": "editor",
                    "categories": ["guides"],
                    "tags": ["fresh-tag"],
                },
            )
        )
        assert created["status"] == "draft"
        assert [t["slug"] for t in created["tags"]] == ["fresh-tag"]


async def test_resources_serve_posts(service: ServiceProcess, api_key: str):
    async with mcp_client(service.mcp_url, api_key) as client:
        templates = await client.list_resource_templates()
        assert "railspress://posts/{slug}" in {t.uri_template for t in templates.resource_templates}
        result = await client.read_resource("railspress://posts/welcome-to-railspress")
        assert json.loads(result.contents[0].text)["slug"] == "welcome-to-railspress"
        recent = await client.read_resource("railspress://posts")
        assert json.loads(recent.contents[0].text)["posts"]


@pytest.mark.parametrize(
    ("tool", "arguments", "needle"),
    [
        ("get_post", {"slug": "no-such-post"}, "no post"),
        ("get_post", {"slug": "Bad Slug; DROP TABLE posts"}, "slug"),
        ("list_posts", {"limit": 1000}, "limit"),
        ("list_posts", {"status": "secret"}, "status"),
        ("create_draft_post", {"title": "x", "body": "y", "author": "ghost"}, "unknown author"),
        (
            "create_draft_post",
            {"title": "x", "body": "y", "author": "editor", "categories": ["missing"]},
            "unknown categories",
        ),
    ],
)
async def test_invalid_input_is_a_clear_tool_error(
    service: ServiceProcess, api_key: str, tool: str, arguments: dict, needle: str
):
    async with mcp_client(service.mcp_url, api_key) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert needle in result.content[0].text


async def test_write_invalidates_cached_reads(service: ServiceProcess, api_key: str):
    args = {"status": "draft", "limit": 100}
    async with mcp_client(service.mcp_url, api_key) as client:
        before = payload(await client.call_tool("list_posts", args))["posts"]
        cached = payload(await client.call_tool("list_posts", args))["posts"]
        assert cached == before
        title = f"Cache buster {uuid.uuid4().hex[:8]}"
        await client.call_tool(
            "create_draft_post", {"title": title, "body": "b", "author": "editor"}
        )
        after = payload(await client.call_tool("list_posts", args))["posts"]
    assert title in [p["title"] for p in after]
    assert len(after) == len(before) + 1
    scrape = httpx2.get(f"{service.url}/api/v1/mcp/metrics", headers={"X-API-Key": api_key}).text
    assert 'mcp_cache_requests_total{result="hit"}' in scrape


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_session_spans_two_instances(
    service: ServiceProcess, second_service: ServiceProcess, api_key: str, mode: str
):
    transport = RoundRobinTransport([service.port, second_service.port])
    async with mcp_client(service.mcp_url, api_key, transport=transport, mode=mode) as client:
        for _ in range(2):
            assert payload(await client.call_tool("get_page", {"slug": "about"}))["slug"]
            tools = await client.list_tools()
            assert len(tools.tools) == len(TOOLS)
    assert {service.port, second_service.port} <= set(transport.seen)


def test_handshake_reports_server_without_secrets(service: ServiceProcess, api_key: str):
    response = httpx2.get(f"{service.url}/api/v1/mcp/session/handshake")
    assert response.status_code == 200
    body = response.json()
    assert body["server"]["name"] == "railspress-mcp"
    assert body["protocol_version"]
    assert api_key not in response.text and "postgres" not in response.text


def test_metrics_require_a_key_and_expose_the_series(service: ServiceProcess, api_key: str):
    assert httpx2.get(f"{service.url}/api/v1/mcp/metrics").status_code == 401
    response = httpx2.get(
        f"{service.url}/api/v1/mcp/metrics", headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 200
    for series in (
        "mcp_http_requests_total",
        "mcp_http_request_duration_seconds_bucket",
        "mcp_rate_limit_rejections_total",
        "mcp_auth_failures_total",
        'mcp_db_pool_connections{state="in_use"}',
        'mcp_db_pool_connections{state="available"}',
        "mcp_cache_requests_total",
    ):
        assert series in response.text, series
