"""Versioned SQL migrations applied under a PostgreSQL advisory lock, plus runtime-role grants."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# One fixed lock id for "schema changes of this service": blue and green may both run
# `migrate` at a release; the second waits, then finds nothing to do.
ADVISORY_LOCK_ID = 0x6D63_7064_6570_6C6F  # "mcpdeplo"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class MigrationError(Exception):
    """A migration file set or database state that `migrate` refuses to act on."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version (the NNN prefix), name, text and checksum."""

    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read `NNN_name.sql` files in version order; reject stray names and duplicate versions."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{path.name}: version {version:03d} is used twice")
        migrations[version] = Migration(version, path.stem, path.read_text(encoding="utf-8"))
    return [migrations[v] for v in sorted(migrations)]


def migrate(
    database_url: str, runtime_role: str = "", directory: Path = MIGRATIONS_DIR
) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the names applied.

    Safe to run concurrently: a session-level advisory lock serialises runs, and an applied
    migration whose file changed since is an error rather than silently skipped.
    """
    migrations = load_migrations(directory)
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
            applied = {version: (name, checksum) for version, name, checksum in rows}
            for migration in migrations:
                if migration.version in applied:
                    if applied[migration.version][1] != migration.checksum:
                        raise MigrationError(
                            f"{migration.name}: already applied but the file has changed;"
                            " add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.text.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info("applied migration", extra={"migration": migration.name})
                applied_now.append(migration.name)
            if runtime_role:
                grant_runtime_role(conn, runtime_role)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
    return applied_now


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
