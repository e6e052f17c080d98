"""The `mcp-service` command: serve (default), migrate, seed, enable/disable, cache, keys,
audit, streams."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mcp_service import __version__, audit, keys
from mcp_service.cache import ResponseCache
from mcp_service.config import ConfigError, Settings
from mcp_service.logs import configure_logging
from mcp_service.migrate import MigrationError
from mcp_service.runtime import CACHE_TTL_RANGE, cache_settings

log = logging.getLogger("mcp_service.cli")
ACTOR = "cli"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every subcommand's --help says what it changes."""
    parser = argparse.ArgumentParser(
        prog="mcp-service", description="RailsPress MCP reference service (config from env)."
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the HTTP service (uvicorn; MCP_WORKERS workers)")
    migrate_parser = sub.add_parser(
        "migrate",
        help="apply pending SQL migrations (advisory-locked), or show them with --plan",
        description="Apply pending migrations of a phase: expand (additive, run before a"
        " switch) or contract (removes what an older release may use, run after it), or all"
        " (the default). --plan prints what is applied and pending as JSON and changes nothing.",
    )
    mode = migrate_parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--phase",
        choices=("expand", "contract", "all"),
        default="all",
        help="which pending migrations to apply (default: all)",
    )
    mode.add_argument(
        "--plan",
        action="store_true",
        help='print {"applied": [names], "pending": [{"name", "phase"}]}; change nothing',
    )
    sub.add_parser("seed", help="insert initial settings and content where missing")
    sub.add_parser("disable", help="emergency kill switch: MCP calls answer 503 within 5 s")
    sub.add_parser("enable", help="turn the MCP API back on")
    sub.add_parser("status", help="print the kill switch state as JSON")
    cache_parser = sub.add_parser(
        "cache",
        help="show or change the read-tool cache (mcp_enable_caching, mcp_cache_ttl)",
        description="Without options, print the cache settings as every worker applies"
        " them, as JSON. --enable/--disable and --ttl change them in site_settings: every"
        " worker of every host follows within 5 s (MCP_SETTINGS_CACHE_SECONDS); changes are"
        " audited. --flush makes every cached answer stale at once, on every host; turning"
        " caching back on flushes too, so nothing cached before it was off comes back.",
    )
    toggle = cache_parser.add_mutually_exclusive_group()
    toggle.add_argument(
        "--enable", dest="caching", action="store_const", const=True, help="cache read tools"
    )
    toggle.add_argument(
        "--disable",
        dest="caching",
        action="store_const",
        const=False,
        help="answer every read from PostgreSQL",
    )
    low, high = CACHE_TTL_RANGE
    cache_parser.add_argument(
        "--ttl",
        type=_cache_ttl,
        metavar="SECONDS",
        help=f"how long a cached answer is served ({low}..{high}; the guide's 300)",
    )
    cache_parser.add_argument(
        "--flush", action="store_true", help="make every cached answer stale now"
    )
    keys_parser = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys_parser.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="issue a new key (printed once)")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument(
        "--expires-minutes", type=float, help="the key stops working after this (default: never)"
    )
    rotate = keys_sub.add_parser(
        "rotate", help="issue a new key; the name's older keys expire after --grace-hours"
    )
    rotate.add_argument("--name", required=True)
    rotate.add_argument("--grace-hours", type=float, default=24.0)
    revoke = keys_sub.add_parser("revoke", help="revoke keys by their 8-character prefix")
    revoke.add_argument("prefix")
    keys_sub.add_parser("list", help="list keys (metadata only) as JSON")
    streams_parser = sub.add_parser(
        "streams",
        help="the SSE streams on GET /api/v1/mcp/ of this container: count, or close them",
    )
    streams_sub = streams_parser.add_subparsers(dest="streams_command", required=True)
    streams_sub.add_parser(
        "close",
        help="end every stream open now cleanly (within a second); later streams continue",
    )
    streams_sub.add_parser("count", help='print {"open": N}, across all workers')
    audit_parser = sub.add_parser("audit-cleanup", help="delete audit records past retention")
    audit_parser.add_argument(
        "--days", type=int, help="retention in days (default MCP_AUDIT_LOG_RETENTION_DAYS, 90)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a configuration or database problem prints one line and exits 2."""
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    try:
        return _run(command, args)
    except ConfigError as exc:
        print(f"mcp-service: configuration error: {exc}", file=sys.stderr)
        return 2
    except (MigrationError, psycopg.errors.UndefinedTable) as exc:
        print(f"mcp-service {command}: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"mcp-service {command}: cannot reach PostgreSQL: {_first(exc)}", file=sys.stderr)
        return 2
    except RedisError as exc:
        print(f"mcp-service {command}: cannot use Redis: {_first(exc)}", file=sys.stderr)
        return 2


def _first(exc: Exception) -> str:
    """The first line of an error's message (or its type): one line for an operator."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run(command: str, args: argparse.Namespace) -> int:
    if command == "serve":
        return serve()
    if command == "streams":
        from mcp_service.streams import StreamRegistry

        registry = StreamRegistry(Settings.from_env(required=()).stream_state_dir)
        if args.streams_command == "close":
            open_now = registry.count()
            flagged = datetime.fromtimestamp(registry.request_close(), UTC)
            _print({"closing": open_now, "opened_before": flagged.isoformat()})
        else:
            _print({"open": registry.count()})
        return 0
    settings = Settings.from_env(
        required=("DATABASE_URL", "SECRET_KEY_BASE") if command == "keys" else ("DATABASE_URL",)
    )
    configure_logging(settings.log_level)
    if command == "migrate":
        from mcp_service.migrate import migrate, plan

        if args.plan:
            _print(plan(settings.database_url))
        else:
            _print(
                {"applied": migrate(settings.database_url, settings.runtime_role, phase=args.phase)}
            )
    elif command == "seed":
        from mcp_service.seed import seed

        _print({"inserted": seed(settings.database_url)})
    elif command in ("enable", "disable", "status"):
        _print(
            kill_switch(settings.database_url, None if command == "status" else command == "enable")
        )
    elif command == "cache":
        _print(cache_command(settings, args.caching, args.ttl, args.flush))
    elif command == "keys":
        _print(manage_keys(settings, args))
    elif command == "audit-cleanup":
        days = args.days or settings.audit_retention_days
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            _print({"deleted": audit.cleanup(conn, days), "retention_days": days})
    return 0


def kill_switch(database_url: str, enabled: bool | None) -> dict[str, Any]:
    """Set (or with None, read) site_settings.mcp_enabled; changes are audited."""
    with psycopg.connect(database_url) as conn, conn.transaction():
        if enabled is not None:
            conn.execute(
                "INSERT INTO site_settings (key, value, updated_at)"
                " VALUES ('mcp_enabled', %s, now())"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                (Jsonb(enabled),),
            )
            audit.record_sync(conn, "mcp.enable" if enabled else "mcp.disable", ACTOR, {})
        row = conn.execute("SELECT value FROM site_settings WHERE key = 'mcp_enabled'").fetchone()
    return {"mcp_enabled": bool(row[0]) if row else True}


def _cache_ttl(text: str) -> int:
    """--ttl's type: whole seconds within CACHE_TTL_RANGE, or argparse's one-line error."""
    low, high = CACHE_TTL_RANGE
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of seconds ({low}..{high})"
        ) from None
    if not low <= seconds <= high:
        raise argparse.ArgumentTypeError(f"{seconds} is outside {low}..{high} seconds")
    return seconds


def cache_command(
    settings: Settings, caching: bool | None, ttl: int | None, flush: bool
) -> dict[str, Any]:
    """Set (when given) and read site_settings mcp_enable_caching / mcp_cache_ttl; flush.

    The flush (a new cache generation in Redis) happens inside the settings transaction,
    before the commit: when Redis cannot be reached, nothing changes. Turning caching on
    flushes too: while it was off, PostgreSQL may have changed under the entries left in
    Redis. Workers that still cache nothing until they re-read the row cannot refill the
    cache with old data in between.
    """
    changes: dict[str, Any] = {}
    if caching is not None:
        changes["mcp_enable_caching"] = caching
    if ttl is not None:
        changes["mcp_cache_ttl"] = ttl
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        was_enabled, _ = cache_settings(_cache_rows(conn))
        generation = None
        if flush or (caching is True and not was_enabled):
            generation = asyncio.run(_flush(settings))
        for key, value in changes.items():
            conn.execute(
                "INSERT INTO site_settings (key, value, updated_at) VALUES (%s, %s, now())"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                (key, Jsonb(value)),
            )
        if changes or generation is not None:
            details = dict(changes, flushed=generation is not None)
            audit.record_sync(conn, "cache.update", ACTOR, details)
        enabled, ttl_now = cache_settings(_cache_rows(conn))
    result: dict[str, Any] = {
        "mcp_enable_caching": enabled,
        "mcp_cache_ttl": ttl_now,
        "flushed": generation is not None,
    }
    if generation is not None:
        result["generation"] = generation
    return result


def _cache_rows(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT key, value FROM site_settings WHERE key IN ('mcp_enable_caching', 'mcp_cache_ttl')"
    ).fetchall()
    return {key: value for key, value in rows}


async def _flush(settings: Settings) -> int:
    """A new cache generation in Redis (``ResponseCache.invalidate``): the new number."""
    if not settings.redis_url:
        raise ConfigError("REDIS_URL", "is required to flush the cache (or REDIS_URL_FILE)")
    redis = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.health_timeout,
        socket_timeout=settings.health_timeout,
    )
    try:
        return await ResponseCache(redis).invalidate()
    finally:
        await redis.aclose()


def manage_keys(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Create, rotate, revoke or list API keys; the plaintext is shown only on creation."""
    secret = settings.secret_key_base
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        if args.keys_command == "create":
            expires = (
                datetime.now(UTC) + timedelta(minutes=args.expires_minutes)
                if args.expires_minutes
                else None
            )
            key = keys.create_key(conn, secret, args.name, expires_at=expires)
            audit.record_sync(conn, "key.create", ACTOR, {"name": args.name, "prefix": key[:8]})
            return {"name": args.name, "key": key, "prefix": key[:8]}
        if args.keys_command == "rotate":
            key = keys.rotate_key(conn, secret, args.name, timedelta(hours=args.grace_hours))
            audit.record_sync(
                conn,
                "key.rotate",
                ACTOR,
                {"name": args.name, "prefix": key[:8], "grace_hours": args.grace_hours},
            )
            return {"name": args.name, "key": key, "previous_valid_hours": args.grace_hours}
        if args.keys_command == "revoke":
            count = keys.revoke_key(conn, args.prefix)
            audit.record_sync(conn, "key.revoke", ACTOR, {"prefix": args.prefix})
            return {"revoked": count}
        return {"keys": keys.list_keys(conn)}


def serve() -> int:
    """Validate config, then run uvicorn with graceful SIGTERM draining."""
    from mcp_service.app import REQUIRED

    settings = Settings.from_env(required=REQUIRED)
    configure_logging(settings.log_level)
    metrics_dir = ""
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be set before any worker imports prometheus_client (workers are spawned).
        metrics_dir = tempfile.mkdtemp(prefix="mcp-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_config": None,
        # Client addresses are resolved by our middleware against MCP_TRUSTED_PROXIES.
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": settings.shutdown_timeout,
        "timeout_keep_alive": 5,
    }
    try:
        if settings.workers > 1:
            # What uvicorn.run does for workers, plus TCP_NODELAY: its shared socket is made
            # without IPPROTO_TCP, so asyncio never sets it on accepted connections, and every
            # answer on a kept-alive connection waited ~40 ms for the client's delayed ACK.
            # Accepted sockets inherit the option from the listening one.
            config = uvicorn.Config("mcp_service.app:create_app", **options)
            listener = config.bind_socket()
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            Multiprocess(config, sockets=[listener]).run()
        else:
            uvicorn.run("mcp_service.app:create_app", **options)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _print(value: Any) -> None:
    print(json.dumps(value, default=str))
