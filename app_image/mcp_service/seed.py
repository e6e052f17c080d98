"""Initial data: the guide's MCP site settings, an editor, taxonomy and a welcome post/page.

Idempotent: rows that exist (by unique key) are left as they are, so an operator's
changes survive a re-run.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# The site settings this service reads (see runtime.py); defaults match the guide.
SITE_SETTINGS: dict[str, Any] = {
    "mcp_enabled": True,
    "mcp_enable_caching": True,
    "mcp_cache_ttl": 300,
}
CATEGORIES = {"news": "News", "guides": "Guides"}
TAGS = {"mcp": "MCP", "deployment": "Deployment"}


def seed(database_url: str) -> dict[str, int]:
    """Insert the initial rows that are missing; return how many of each were inserted."""
    inserted: dict[str, int] = {}
    with psycopg.connect(database_url) as conn, conn.transaction():
        inserted["site_settings"] = sum(
            conn.execute(
                "INSERT INTO site_settings (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO NOTHING",
                (key, Jsonb(value)),
            ).rowcount
            for key, value in SITE_SETTINGS.items()
        )
        inserted["users"] = conn.execute(
            "INSERT INTO users (username, email, name) VALUES ('editor', 'editor@example.com',"
            " 'Site Editor') ON CONFLICT (username) DO NOTHING"
        ).rowcount
        inserted["categories"] = sum(
            conn.execute(
                "INSERT INTO categories (slug, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (slug, name),
            ).rowcount
            for slug, name in CATEGORIES.items()
        )
        inserted["tags"] = sum(
            conn.execute(
                "INSERT INTO tags (slug, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (slug, name),
            ).rowcount
            for slug, name in TAGS.items()
        )
        inserted["posts"] = conn.execute(
            "INSERT INTO posts (author_id, slug, title, excerpt, body, status, published_at)"
            " SELECT id, 'welcome-to-railspress', 'Welcome to RailsPress',"
            " 'The MCP API is live.', 'This site serves its content to AI assistants over"
            " the Model Context Protocol.', 'published', now()"
            " FROM users WHERE username = 'editor' ON CONFLICT (slug) DO NOTHING"
        ).rowcount
        conn.execute(
            "INSERT INTO post_categories (post_id, category_id)"
            " SELECT p.id, c.id FROM posts p, categories c"
            " WHERE p.slug = 'welcome-to-railspress' AND c.slug = 'news' ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO post_tags (post_id, tag_id) SELECT p.id, t.id FROM posts p, tags t"
            " WHERE p.slug = 'welcome-to-railspress' AND t.slug = 'mcp' ON CONFLICT DO NOTHING"
        )
        inserted["pages"] = conn.execute(
            "INSERT INTO pages (author_id, slug, title, body, status, published_at)"
            " SELECT id, 'about', 'About', 'About this site and its MCP API.', 'published',"
            " now() FROM users WHERE username = 'editor' ON CONFLICT (slug) DO NOTHING"
        ).rowcount
    return inserted
