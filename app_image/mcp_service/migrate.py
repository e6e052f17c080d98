"""Versioned SQL migrations applied under a PostgreSQL advisory lock, plus runtime-role grants.

Every migration declares its phase on its first line, so a blue-green release can split
them around the switch (app_image/README.md, "Expand and contract"):

- ``-- phase: expand``: additive; safe while the previous release still runs, so it runs
  before the new color takes traffic;
- ``-- phase: contract``: removes what an older release may still use, so it runs only
  once no color (and no rollback target) runs such a release.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# One fixed lock id for "schema changes of this service": blue and green may both run
# `migrate` at a release; the second waits, then finds nothing to do.
ADVISORY_LOCK_ID = 0x6D63_7064_6570_6C6F  # "mcpdeplo"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_PHASE = re.compile(r"^--\s*phase:\s*(\S+)\s*$")
PHASES = ("expand", "contract")


class MigrationError(Exception):
    """A migration file set or database state that `migrate` refuses to act on."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version (the NNN prefix), name, phase, SQL (after the phase line)."""

    version: int
    name: str
    phase: str
    text: str

    @property
    def checksum(self) -> str:
        # Of the SQL only: marking the migrations written before phases existed kept their
        # recorded checksums, and the phase of an applied migration no longer matters.
        return hashlib.sha256(self.text.encode()).hexdigest()


def parse_phase(filename: str, text: str) -> tuple[str, str]:
    """Split a migration file into (phase, SQL); refuse a missing or unknown phase line."""
    first, _, rest = text.partition("\n")
    match = _PHASE.match(first)
    if not match:
        raise MigrationError(
            f"{filename}: the first line must declare the phase: '-- phase: expand' (additive,"
            " safe while the previous release runs) or '-- phase: contract' (removes what an"
            " older release may still use)"
        )
    if match.group(1) not in PHASES:
        raise MigrationError(
            f"{filename}: phase {match.group(1)!r} is neither 'expand' nor 'contract'"
        )
    return match.group(1), rest


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read `NNN_name.sql` files in version order; reject stray names, duplicate versions and
    files without a phase line."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{path.name}: version {version:03d} is used twice")
        phase, text = parse_phase(path.name, path.read_text(encoding="utf-8"))
        migrations[version] = Migration(version, path.stem, phase, text)
    return [migrations[v] for v in sorted(migrations)]


_CREATE_HISTORY = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())"
)


def _applied(conn: psycopg.Connection, migrations: list[Migration]) -> dict[int, str]:
    """{version: name} recorded in ``schema_migrations`` (none when the table does not exist);
    refuses an applied migration whose file has changed since."""
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
        return {}
    rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    checksums = {version: checksum for version, _, checksum in rows}
    for migration in migrations:
        recorded = checksums.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"{migration.name}: already applied but the file has changed;"
                " add a new migration instead of editing an applied one"
            )
    return {version: name for version, name, _ in sorted(rows)}


def migrate(
    database_url: str,
    runtime_role: str = "",
    directory: Path = MIGRATIONS_DIR,
    phase: str = "all",
) -> list[str]:
    """Apply pending migrations of ``phase`` (expand, contract or all), each in its own
    transaction, in version order; return the names applied.

    Safe to run concurrently: a session-level advisory lock serialises runs, and an applied
    migration whose file changed since is an error rather than silently skipped.
    """
    if phase not in (*PHASES, "all"):
        raise MigrationError(f"phase {phase!r}: expand, contract or all")
    migrations = load_migrations(directory)
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_ID,))
        try:
            conn.execute(_CREATE_HISTORY)
            applied = _applied(conn, migrations)
            for migration in migrations:
                if migration.version in applied or phase not in ("all", migration.phase):
                    continue
                with conn.transaction():
                    conn.execute(migration.text.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info(
                    "applied migration",
                    extra={"migration": migration.name, "phase": migration.phase},
                )
                applied_now.append(migration.name)
            if runtime_role:
                grant_runtime_role(conn, runtime_role)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
    return applied_now


def plan(database_url: str, directory: Path = MIGRATIONS_DIR) -> dict[str, Any]:
    """What ``migrate`` would do, changing nothing: the names the database records as
    applied (including any this image does not ship) and this image's pending migrations
    with their phases, in version order.

    Read-only transaction; it waits for a ``migrate`` in progress (a shared hold on the
    same advisory lock), so it never reports a half-applied run.
    """
    migrations = load_migrations(directory)
    with psycopg.connect(database_url) as conn:
        conn.read_only = True
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ADVISORY_LOCK_ID,))
            applied = _applied(conn, migrations)
    return {
        "applied": list(applied.values()),
        "pending": [
            {"name": m.name, "phase": m.phase} for m in migrations if m.version not in applied
        ],
    }


def grant_runtime_role(conn: psycopg.Connection, role: str) -> None:
    """Give the runtime role exactly the DML rights it needs, now and for future tables.

    The guide's "Database Security" grants, done right: the owner (who runs migrations)
    keeps DDL; ALTER DEFAULT PRIVILEGES covers tables later migrations create.
    """
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        raise MigrationError(f"MCP_RUNTIME_ROLE {role!r} does not exist; create it first")
    ident = sql.Identifier(role)
    statements = [
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(conn.info.dbname), ident
        ),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(
            ident
        ),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(ident),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
            " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}"
        ).format(ident),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {}"
        ).format(ident),
        # The runtime role must not rewrite migration history.
        sql.SQL("REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM {}").format(ident),
    ]
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)
    log.info("granted runtime privileges", extra={"role": role})
