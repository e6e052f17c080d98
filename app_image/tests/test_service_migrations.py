"""Expand/contract migrations: every file declares its phase, `migrate --plan` reports without
changing anything, `--phase` applies one phase only, and a file without a phase is refused.

Mixed phases run against a copy of the service whose migrations directory has extra files
(the service reads `migrations/` beside its package), through the real CLI and PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from mcp_service.migrate import PHASES, load_migrations
from service_harness import APP_DIR, PostgresServer, run_cli, service_env

SHIPPED = ["001_content", "002_operations"]
# A column added for new code (expand), then the table the old code used dropped (contract).
EXTRA = {
    "003_add_posts_subtitle.sql": "-- phase: expand\n"
    "ALTER TABLE posts ADD COLUMN subtitle text NOT NULL DEFAULT '';\n",
    "004_create_legacy_notes.sql": "-- phase: expand\n"
    "CREATE TABLE legacy_notes (id bigserial PRIMARY KEY, body text NOT NULL);\n",
    "005_drop_legacy_notes.sql": "-- phase: contract\nDROP TABLE legacy_notes;\n",
}


def last_json(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def service_copy(root: Path, extra: dict[str, str]) -> str:
    """A copy of the service with ``extra`` migration files; returns its PYTHONPATH."""
    shutil.copytree(APP_DIR / "mcp_service", root / "mcp_service")
    shutil.copytree(APP_DIR / "migrations", root / "migrations")
    for name, text in extra.items():
        (root / "migrations" / name).write_text(text)
    return str(root)


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {n for (n,) in conn.execute("SELECT tablename FROM pg_tables")}


@pytest.fixture
def fresh_url(postgres: PostgresServer) -> str:
    return postgres.create_database(f"phases_{uuid.uuid4().hex[:8]}")


def test_every_shipped_migration_declares_its_phase():
    migrations = load_migrations()
    assert [m.name for m in migrations] == SHIPPED
    assert all(m.phase in PHASES for m in migrations)
    # Written before phases existed: additive, so expand.
    assert {m.phase for m in migrations} == {"expand"}


def test_plan_on_an_empty_database_lists_all_pending_and_changes_nothing(fresh_url: str):
    plan = last_json(run_cli(service_env(fresh_url, ""), "migrate", "--plan"))
    assert plan == {
        "applied": [],
        "pending": [{"name": name, "phase": "expand"} for name in SHIPPED],
    }
    assert "schema_migrations" not in tables(fresh_url)


def test_plan_on_a_migrated_database_has_nothing_pending(database_url: str):
    plan = last_json(run_cli(service_env(database_url, ""), "migrate", "--plan"))
    assert plan == {"applied": SHIPPED, "pending": []}


def test_contract_phase_alone_applies_no_expand_migration(fresh_url: str):
    env = service_env(fresh_url, "")
    assert last_json(run_cli(env, "migrate", "--phase", "contract")) == {"applied": []}
    assert last_json(run_cli(env, "migrate", "--plan"))["applied"] == []


def test_expand_then_contract_applies_each_phase_in_turn(fresh_url: str, tmp_path: Path):
    env = service_env(fresh_url, "", PYTHONPATH=service_copy(tmp_path, EXTRA))
    before = last_json(run_cli(env, "migrate", "--plan"))
    assert before["pending"][-3:] == [
        {"name": "003_add_posts_subtitle", "phase": "expand"},
        {"name": "004_create_legacy_notes", "phase": "expand"},
        {"name": "005_drop_legacy_notes", "phase": "contract"},
    ]

    expanded = last_json(run_cli(env, "migrate", "--phase", "expand"))
    assert expanded == {"applied": [*SHIPPED, "003_add_posts_subtitle", "004_create_legacy_notes"]}
    assert last_json(run_cli(env, "migrate", "--plan")) == {
        "applied": expanded["applied"],
        "pending": [{"name": "005_drop_legacy_notes", "phase": "contract"}],
    }
    assert "legacy_notes" in tables(fresh_url)
    assert last_json(run_cli(env, "migrate", "--phase", "expand")) == {"applied": []}

    assert last_json(run_cli(env, "migrate", "--phase", "contract")) == {
        "applied": ["005_drop_legacy_notes"]
    }
    assert "legacy_notes" not in tables(fresh_url)
    assert last_json(run_cli(env, "migrate", "--plan"))["pending"] == []


def test_two_colors_running_expand_at_once_apply_each_migration_once(
    fresh_url: str, tmp_path: Path
):
    env = service_env(fresh_url, "", PYTHONPATH=service_copy(tmp_path, EXTRA))
    results: list = [None, None]

    def run(index: int) -> None:
        results[index] = run_cli(env, "migrate", "--phase", "expand")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    applied = sorted((last_json(r)["applied"] for r in results), key=len)
    assert applied == [[], [*SHIPPED, "003_add_posts_subtitle", "004_create_legacy_notes"]]
    with psycopg.connect(fresh_url) as conn:
        versions = sorted(v for (v,) in conn.execute("SELECT version FROM schema_migrations"))
    assert versions == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("first_line", "needle"),
    [
        ("-- add a subtitle", "the first line must declare the phase"),
        ("-- phase: shrink", "'shrink' is neither 'expand' nor 'contract'"),
    ],
)
@pytest.mark.parametrize("args", [("migrate",), ("migrate", "--plan")])
def test_migration_without_a_valid_phase_is_refused_before_anything_runs(
    fresh_url: str, tmp_path: Path, first_line: str, needle: str, args: tuple[str, ...]
):
    bad = {"003_add_posts_subtitle.sql": f"{first_line}\nALTER TABLE posts ADD COLUMN s text;\n"}
    env = service_env(fresh_url, "", PYTHONPATH=service_copy(tmp_path, bad))
    result = run_cli(env, *args)
    assert result.returncode == 2
    assert "003_add_posts_subtitle.sql" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr
    assert "schema_migrations" not in tables(fresh_url)


def test_plan_and_phase_cannot_be_combined(fresh_url: str):
    result = run_cli(service_env(fresh_url, ""), "migrate", "--plan", "--phase", "expand")
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr
