"""The MCP surface: content tools and post resources, served by the official SDK's MCPServer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from psycopg_pool import AsyncConnectionPool
from pydantic import Field

from mcp_service import SERVICE_NAME, __version__, content, metrics
from mcp_service.cache import ResponseCache
from mcp_service.logs import request_id_var
from mcp_service.runtime import RuntimeState

Status = Literal["draft", "published", "archived"]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$", description="URL slug")]
Limit = Annotated[int, Field(ge=1, le=100, description="Page size (1-100)")]
Offset = Annotated[int, Field(ge=0, le=100_000, description="Items to skip")]

INSTRUCTIONS = (
    "Read-mostly access to RailsPress content: list, fetch and search posts and pages; "
    "create draft posts for human review (never publishes)."
)


@dataclass
class Services:
    """What the tools need: the pool, the response cache and the runtime switches."""

    pool: AsyncConnectionPool
    cache: ResponseCache
    runtime: RuntimeState
    db_timeout: float


def build_mcp_server(services: Services) -> MCPServer:
    """An MCPServer with the content tools and resources bound to `services`."""
    server: MCPServer = MCPServer(
        SERVICE_NAME,
        version=__version__,
        instructions=INSTRUCTIONS,
        # Our own middleware owns logging; the SDK must not install a handler of its own.
        log_level="WARNING",
    )

    async def read(tool: str, arguments: dict[str, Any], query: Any) -> Any:
        switches = await services.runtime.current()

        async def compute() -> Any:
            async with services.pool.connection(timeout=services.db_timeout) as conn:
                return _jsonable(await query(conn))

        try:
            if switches.caching_enabled:
                result = await services.cache.get_or_compute(
                    tool, arguments, switches.cache_ttl, compute
                )
            else:
                result = await compute()
        except Exception:
            metrics.TOOL_CALLS.labels(tool=tool, outcome="error").inc()
            raise
        metrics.TOOL_CALLS.labels(tool=tool, outcome="ok").inc()
        return result

    @server.tool()
    async def list_posts(
        status: Status | None = "published",
        tag: Slug | None = None,
        category: Slug | None = None,
        author: Annotated[str | None, Field(max_length=63, description="Author username")] = None,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """List posts newest first with author, categories and tags; filter by status
        (default published; null for all), tag, category or author; paginate with
        limit/offset."""
        args = {
            "status": status,
            "tag": tag,
            "category": category,
            "author": author,
            "limit": limit,
            "offset": offset,
        }
        posts = await read("list_posts", args, lambda conn: content.list_posts(conn, **args))
        next_offset = offset + limit if len(posts) == limit else None
        return {"posts": posts, "next_offset": next_offset}

    @server.tool()
    async def get_post(slug: Slug) -> dict[str, Any]:
        """Fetch one post by slug, with body, author, categories and tags."""
        post = await read("get_post", {"slug": slug}, lambda conn: content.get_post(conn, slug))
        if post is None:
            raise ToolError(f"no post with slug {slug!r}")
        return post

    @server.tool()
    async def search_content(
        query: Annotated[str, Field(min_length=1, max_length=200)],
        kinds: list[Literal["post", "page"]] | None = None,
        limit: Limit = 20,
    ) -> dict[str, Any]:
        """Full-text search (PostgreSQL, English stemming, web-search syntax such as
        "quoted phrase" or -excluded) over published posts and pages."""
        wanted = set(kinds or ["post", "page"])
        args = {"query": query, "kinds": sorted(wanted), "limit": limit}
        hits = await read(
            "search_content",
            args,
            lambda conn: content.search(conn, query, kinds=wanted, limit=limit),
        )
        return {"results": hits}

    @server.tool()
    async def list_pages(
        status: Status | None = "published", limit: Limit = 20, offset: Offset = 0
    ) -> dict[str, Any]:
        """List pages newest first (without bodies); paginate with limit/offset."""
        args = {"status": status, "limit": limit, "offset": offset}
        pages = await read("list_pages", args, lambda conn: content.list_pages(conn, **args))
        next_offset = offset + limit if len(pages) == limit else None
        return {"pages": pages, "next_offset": next_offset}

    @server.tool()
    async def get_page(slug: Slug) -> dict[str, Any]:
        """Fetch one page by slug, with body and author."""
        page = await read("get_page", {"slug": slug}, lambda conn: content.get_page(conn, slug))
        if page is None:
            raise ToolError(f"no page with slug {slug!r}")
        return page

    @server.tool()
    async def create_draft_post(
        ctx: Context,
        title: Annotated[str, Field(min_length=1, max_length=300)],
        body: Annotated[str, Field(max_length=500_000)],
        author: Annotated[str, Field(min_length=1, max_length=63, description="Username")],
        excerpt: Annotated[str, Field(max_length=1000)] = "",
        categories: Annotated[list[Slug], Field(max_length=20)] | None = None,
        tags: Annotated[list[Slug], Field(max_length=50)] | None = None,
    ) -> dict[str, Any]:
        """Create a draft post (never published) by an existing author; categories must
        exist, unknown tags are created. The write is recorded in the audit log."""
        state = _request_state(ctx)
        try:
            async with services.pool.connection(timeout=services.db_timeout) as conn:
                post = await content.create_draft_post(
                    conn,
                    title=title,
                    body=body,
                    excerpt=excerpt,
                    author=author,
                    categories=sorted(set(categories or [])),
                    tags=sorted(set(tags or [])),
                    actor=state.get("actor", "unknown"),
                    client_ip=state.get("client_ip"),
                    request_id=request_id_var.get(),
                )
        except content.ContentError as exc:
            metrics.TOOL_CALLS.labels(tool="create_draft_post", outcome="rejected").inc()
            raise ToolError(str(exc)) from exc
        await services.cache.invalidate()
        metrics.TOOL_CALLS.labels(tool="create_draft_post", outcome="ok").inc()
        return _jsonable(post)

    @server.resource(
        "railspress://posts",
        name="recent_posts",
        mime_type="application/json",
        description="The 20 most recent published posts.",
    )
    async def recent_posts() -> str:
        result = await list_posts()
        return json.dumps(result)

    @server.resource(
        "railspress://posts/{slug}",
        name="post",
        mime_type="application/json",
        description="One post by slug, with body, author, categories and tags.",
    )
    async def post_resource(slug: str) -> str:
        post = await read("get_post", {"slug": slug}, lambda conn: content.get_post(conn, slug))
        if post is None:
            raise ResourceNotFoundError(f"no post with slug {slug!r}")
        return json.dumps(post)

    return server


def _request_state(ctx: Context) -> dict[str, Any]:
    """What the HTTP middleware learned about the caller (key name, client IP)."""
    request = getattr(ctx.request_context, "request", None)
    scope = getattr(request, "scope", None) or {}
    state = scope.get("state") or {}
    return state if isinstance(state, dict) else {}


def _jsonable(value: Any) -> Any:
    """Rows with datetimes to plain JSON types, so cached and fresh results are identical."""
    return json.loads(json.dumps(value, default=str))
