"""Content queries: posts with author, categories and tags in one round trip; full-text search.

Every statement is parameterised; filters are optional parameters, never spliced SQL.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

# Author, categories and tags come back as JSON built by PostgreSQL, so a page of posts is
# one query rather than one per post (the guide's "includes to prevent N+1").
_POST_COLUMNS = """
    p.id, p.slug, p.title, p.excerpt, p.status, p.published_at, p.updated_at,
    json_build_object('username', u.username, 'name', u.name) AS author,
    COALESCE((SELECT json_agg(json_build_object('slug', c.slug, 'name', c.name) ORDER BY c.slug)
              FROM post_categories pc JOIN categories c ON c.id = pc.category_id
              WHERE pc.post_id = p.id), '[]'::json) AS categories,
    COALESCE((SELECT json_agg(json_build_object('slug', t.slug, 'name', t.name) ORDER BY t.slug)
              FROM post_tags pt JOIN tags t ON t.id = pt.tag_id
              WHERE pt.post_id = p.id), '[]'::json) AS tags
"""

# Composed only from the constant column list above; values are bound parameters.
_LIST_POSTS = f"""
SELECT {_POST_COLUMNS}
FROM posts p JOIN users u ON u.id = p.author_id
WHERE (%(status)s::text IS NULL OR p.status = %(status)s)
  AND (%(author)s::text IS NULL OR u.username = %(author)s)
  AND (%(tag)s::text IS NULL OR EXISTS (
        SELECT 1 FROM post_tags pt JOIN tags t ON t.id = pt.tag_id
        WHERE pt.post_id = p.id AND t.slug = %(tag)s))
  AND (%(category)s::text IS NULL OR EXISTS (
        SELECT 1 FROM post_categories pc JOIN categories c ON c.id = pc.category_id
        WHERE pc.post_id = p.id AND c.slug = %(category)s))
ORDER BY p.published_at DESC NULLS LAST, p.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""  # noqa: S608

_GET_POST = f"""
SELECT {_POST_COLUMNS}, p.body
FROM posts p JOIN users u ON u.id = p.author_id
WHERE p.slug = %(slug)s
"""  # noqa: S608

_LIST_PAGES = """
SELECT p.id, p.slug, p.title, p.status, p.published_at, p.updated_at
FROM pages p
WHERE (%(status)s::text IS NULL OR p.status = %(status)s)
ORDER BY p.published_at DESC NULLS LAST, p.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""

_GET_PAGE = """
SELECT p.id, p.slug, p.title, p.status, p.published_at, p.updated_at, p.body,
       json_build_object('username', u.username, 'name', u.name) AS author
FROM pages p JOIN users u ON u.id = p.author_id
WHERE p.slug = %(slug)s
"""

_SEARCH = """
WITH q AS (SELECT websearch_to_tsquery('english', %(query)s) AS query)
SELECT kind, slug, title, published_at, rank, snippet FROM (
    SELECT 'post' AS kind, p.slug, p.title, p.published_at,
           ts_rank(p.search_vector, q.query) AS rank,
           ts_headline('english', p.excerpt || ' ' || p.body, q.query,
                       'MaxWords=30, MinWords=10') AS snippet
    FROM posts p, q
    WHERE p.search_vector @@ q.query AND p.status = 'published' AND %(posts)s
    UNION ALL
    SELECT 'page', g.slug, g.title, g.published_at,
           ts_rank(g.search_vector, q.query),
           ts_headline('english', g.body, q.query, 'MaxWords=30, MinWords=10')
    FROM pages g, q
    WHERE g.search_vector @@ q.query AND g.status = 'published' AND %(pages)s
) hits
ORDER BY rank DESC, published_at DESC NULLS LAST
LIMIT %(limit)s
"""


class ContentError(Exception):
    """A request the content model cannot satisfy (unknown author, category...)."""


async def list_posts(
    conn: AsyncConnection[Any],
    *,
    status: str | None,
    author: str | None,
    tag: str | None,
    category: str | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    """A page of posts, newest first, each with author, categories and tags."""
    cursor = await conn.execute(
        _LIST_POSTS,
        {
            "status": status,
            "author": author,
            "tag": tag,
            "category": category,
            "limit": limit,
            "offset": offset,
        },
    )
    return list(await cursor.fetchall())


async def get_post(conn: AsyncConnection[Any], slug: str) -> dict[str, Any] | None:
    """One post with its body, author, categories and tags; None if the slug is unknown."""
    cursor = await conn.execute(_GET_POST, {"slug": slug})
    return await cursor.fetchone()


async def list_pages(
    conn: AsyncConnection[Any], *, status: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    """A page of pages (without bodies), newest first."""
    cursor = await conn.execute(_LIST_PAGES, {"status": status, "limit": limit, "offset": offset})
    return list(await cursor.fetchall())


async def get_page(conn: AsyncConnection[Any], slug: str) -> dict[str, Any] | None:
    """One page with its body; None if the slug is unknown."""
    cursor = await conn.execute(_GET_PAGE, {"slug": slug})
    return await cursor.fetchone()


async def search(
    conn: AsyncConnection[Any], query: str, *, kinds: set[str], limit: int
) -> list[dict[str, Any]]:
    """Published posts and pages matching a web-search style query, best match first."""
    cursor = await conn.execute(
        _SEARCH,
        {"query": query, "posts": "post" in kinds, "pages": "page" in kinds, "limit": limit},
    )
    return list(await cursor.fetchall())


def slugify(text: str) -> str:
    """A URL slug: ASCII lowercase words joined by hyphens, at most 80 characters."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:80].strip("-")
    return slug or "post"


async def create_draft_post(
    conn: AsyncConnection[Any],
    *,
    title: str,
    body: str,
    excerpt: str,
    author: str,
    categories: list[str],
    tags: list[str],
    actor: str,
    client_ip: str | None,
    request_id: str,
) -> dict[str, Any]:
    """Insert a draft post with its taxonomy and an audit record, in one transaction.

    Categories must exist; unknown tags are created. A taken slug gets a numeric suffix.
    """
    async with conn.transaction():
        cursor = await conn.execute("SELECT id FROM users WHERE username = %s", (author,))
        user = await cursor.fetchone()
        if user is None:
            raise ContentError(f"unknown author {author!r}")
        cursor = await conn.execute(
            "SELECT slug, id FROM categories WHERE slug = ANY(%s)", (categories,)
        )
        category_ids = {row["slug"]: row["id"] for row in await cursor.fetchall()}
        missing = sorted(set(categories) - set(category_ids))
        if missing:
            raise ContentError(f"unknown categories: {', '.join(missing)}")
        base = slugify(title)
        cursor = await conn.execute(
            "SELECT slug FROM posts WHERE slug = %s OR slug LIKE %s", (base, base + "-%")
        )
        taken = {row["slug"] for row in await cursor.fetchall()}
        slug = base
        suffix = 2
        while slug in taken:
            slug = f"{base}-{suffix}"
            suffix += 1
        cursor = await conn.execute(
            "INSERT INTO posts (author_id, slug, title, excerpt, body, status)"
            " VALUES (%s, %s, %s, %s, %s, 'draft') RETURNING id",
            (user["id"], slug, title, excerpt, body),
        )
        inserted = await cursor.fetchone()
        assert inserted is not None  # INSERT ... RETURNING always yields the row.
        post_id = inserted["id"]
        if category_ids:
            await conn.execute(
                "INSERT INTO post_categories (post_id, category_id)"
                " SELECT %s, unnest(%s::bigint[])",
                (post_id, list(category_ids.values())),
            )
        if tags:
            await conn.execute(
                "INSERT INTO tags (slug, name) SELECT s, s FROM unnest(%s::text[]) AS s"
                " ON CONFLICT (slug) DO NOTHING",
                (tags,),
            )
            await conn.execute(
                "INSERT INTO post_tags (post_id, tag_id)"
                " SELECT %s, id FROM tags WHERE slug = ANY(%s)",
                (post_id, tags),
            )
        await conn.execute(
            "INSERT INTO audit_log (event, actor, client_ip, request_id, details)"
            " VALUES ('post.create_draft', %s, %s, %s, %s)",
            (actor, client_ip, request_id, Jsonb({"post_id": post_id, "slug": slug})),
        )
    created = await get_post(conn, slug)
    if created is None:
        raise ContentError(f"post {slug!r} vanished after creation")
    return created
