"""`mcpdeploy ops backup|restore|check|bundle` against the lab, through the CLI.

Restore really replaces the lab's database over live data, and is judged through the
edge: the rows written after the backup are gone, even from the service's response cache,
and the service still reads and writes with its runtime role; the database is put back as
it was before the test (another forced restore) afterwards. `check` is run on the healthy lab,
then with nginx stopped on the idle color's host (started again whatever happens). The
bundle test plants secret-shaped tokens in a host's journal and checks that neither they
nor any of the stack's credentials are in the extracted bundle, while every section is.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import ssl
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcpdeploy.credentials import DATABASE, stack_credentials
from mcpdeploy.fleet import lab_fleet
from mcpdeploy.lab import STATE_DIR
from mcpdeploy.settings import load_settings
from mcpdeploy.support import BACKUP_DIR

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
MCPDEPLOY = str(Path(sys.executable).with_name("mcpdeploy"))
SSH = ["ssh", "-F", str(STATE_DIR / "ssh_config")]
ROW_COUNTS = (
    "SELECT format('%I.%I', schemaname, tablename), (xpath('/row/c/text()', query_to_xml("
    "format('SELECT count(*) AS c FROM %I.%I', schemaname, tablename), false, true, '')))"
    "[1]::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
)
HEALTHY_WITHIN_SECONDS = 360  # mcp-perf-check clears a failure left by others on its next run


def mcpdeploy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MCPDEPLOY, *args], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )


def ssh(host: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SSH, host, command], capture_output=True, text=True, timeout=300, check=False
    )


def row_counts() -> dict[str, int]:
    """Rows of every table of the service's database, read on the data host."""
    result = ssh(
        "data",
        f"cd / && runuser -u postgres -- psql -X -At -F '|' -d {DATABASE} "
        f"-c {shlex.quote(ROW_COUNTS)}",
    )
    assert result.returncode == 0, result.stderr
    return {name: int(count) for name, count in (ln.split("|") for ln in result.stdout.split())}


def backup() -> dict[str, Any]:
    result = mcpdeploy("ops", "backup", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def backup_names() -> set[str]:
    return set(ssh("data", f"ls {BACKUP_DIR}").stdout.split())


@pytest.fixture(scope="module")
def api_key() -> Iterator[str]:
    """A key of the test's own, so other tests' traffic on the lab's key cannot exhaust its
    rate limits; revoked afterwards. Created before any backup, so restores keep it."""
    host = f"app-{load_settings('lab').active_color}"
    name = f"ops-support-test-{secrets.token_hex(4)}"
    created = ssh(host, f"docker exec mcp-service mcp-service keys create --name {name}")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    yield key
    ssh(host, f"docker exec mcp-service mcp-service keys revoke {key[:8]}")


def mcp_call(key: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One MCP tool call through the edge with ``key``; its structured result."""
    settings = load_settings("lab")
    trust = ssl.create_default_context(cafile=str(STATE_DIR / "ca.crt"))
    url = f"https://127.0.0.1:{settings.lab.https_port}/api/v1/mcp/"

    async def call() -> dict[str, Any]:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, verify=trust, timeout=30
        )
        async with http, Client(streamable_http_client(url, http_client=http)) as client:  # type: ignore[arg-type]
            result = await client.call_tool(tool, arguments)
            assert not result.is_error, result.content
            return result.structured_content or json.loads(result.content[0].text)

    return asyncio.run(call())


def draft_titles(key: str) -> set[str]:
    posts = mcp_call(key, "list_posts", {"status": "draft", "limit": 100})["posts"]
    return {post["title"] for post in posts}


# --- backup and restore --------------------------------------------------------------------


def test_backup_writes_a_checksummed_dump_of_the_size_it_reports():
    written = backup()
    assert written["host"] == "data" and written["file"].startswith(f"{BACKUP_DIR}/{DATABASE}_")
    size = ssh("data", f"stat -c %s {written['file']}").stdout.strip()
    assert int(size) == written["bytes"] > 0
    verified = ssh("data", f"cd {BACKUP_DIR} && sha256sum --check {written['file']}.sha256")
    assert verified.returncode == 0, verified.stdout
    shown = mcpdeploy("ops", "backup")
    assert shown.returncode == 0 and "backup written on data:" in shown.stdout
    assert "configuration:" in shown.stdout


def test_restore_refuses_a_database_with_rows_without_force():
    name = Path(backup()["file"]).name
    before, files = row_counts(), backup_names()
    rows, tables = sum(before.values()), sum(1 for count in before.values() if count)
    assert rows > 0, "the lab's database holds rows (settings, keys, migrations)"
    result = mcpdeploy("ops", "restore", "--from", name)
    assert result.returncode == 1
    assert f"holds {rows} rows in {tables} tables" in result.stderr and "--force" in result.stderr
    assert result.stderr.startswith("error:") or "\nerror:" in result.stderr
    assert "Traceback" not in result.stderr
    assert row_counts() == before
    assert backup_names() == files, "a refused restore takes no safety backup"


def test_restore_of_an_absent_backup_names_the_newest_ones():
    result = mcpdeploy("ops", "restore", "--from", f"{DATABASE}_19990101T000000Z.dump")
    assert result.returncode == 1
    assert "no backup" in result.stderr and f"{DATABASE}_2" in result.stderr


@pytest.fixture
def database_put_back(api_key: str) -> Iterator[str]:
    """The service's seed content present (an author for drafts); afterwards the database
    is restored to what it was before the test, seeding included. Yields the active app
    host."""
    host = f"app-{load_settings('lab').active_color}"
    before = backup()
    seeded = ssh(host, "docker exec mcp-service mcp-service seed")
    assert seeded.returncode == 0, seeded.stderr
    yield host
    put_back = mcpdeploy("ops", "restore", "--from", before["file"], "--force")
    assert put_back.returncode == 0, put_back.stderr


def test_forced_restore_brings_back_the_backup_and_the_service_keeps_working(
    api_key, database_put_back
):
    written = backup()
    at_backup = row_counts()
    marker = f"ops-restore-marker-{secrets.token_hex(6)}"
    draft = {"title": marker, "body": "written after the backup", "author": "editor"}
    mcp_call(api_key, "create_draft_post", draft)
    # Read once more so the service caches a response that holds the marker.
    assert marker in draft_titles(api_key)
    assert row_counts() != at_backup

    result = mcpdeploy("ops", "restore", "--from", written["file"], "--force", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    assert report["restored"] is True and report["file"] == written["file"]
    assert report["tables"] == {table: at_backup[table] for table in report["tables"]}
    assert set(report["tables"]) == set(at_backup)
    assert row_counts() == at_backup, "the database is the backup again"
    safety = report["safety_backup"]
    assert safety.startswith(f"{BACKUP_DIR}/") and safety != written["file"]
    in_safety = ssh("data", f"pg_restore --data-only --file=- {safety} | grep -q {marker}")
    assert in_safety.returncode == 0, "the safety backup holds what the restore replaced"
    assert report["cache_invalidated_on"] and all(s == 200 for s in report["health"].values())

    # The restored rows are what clients see (no stale cached answer), and the service
    # still writes as its runtime role: its grants came back with the tables.
    assert marker not in draft_titles(api_key)
    after = f"ops-restore-after-{secrets.token_hex(6)}"
    mcp_call(api_key, "create_draft_post", {**draft, "title": after})
    assert after in draft_titles(api_key)


# --- check -----------------------------------------------------------------------------------


def check_report(*args: str) -> tuple[int, dict[str, Any]]:
    result = mcpdeploy("ops", "check", "--json", *args)
    return result.returncode, json.loads(result.stdout)


def test_check_passes_every_check_on_a_healthy_lab():
    # Errors logged while the lab was deployed or broken by an earlier test age out of
    # the one-minute window, and a failed maintenance run clears on its next success.
    deadline = time.monotonic() + HEALTHY_WITHIN_SECONDS
    code, report = check_report("--minutes", "1")
    while report["counts"]["pass"] != len(report["checks"]) and time.monotonic() < deadline:
        time.sleep(10)
        code, report = check_report("--minutes", "1")
    not_passing = [c for c in report["checks"] if c["status"] != "pass"]
    assert not_passing == [] and code == 0 and report["ok"] is True
    names = {c["name"] for c in report["checks"]}
    assert names >= {"mcp-enabled", "health", "units", "disk", "log-errors", "db-connections"}
    assert names >= {"rate-limits", "certificate", "image", "failed-units", "firewall"}
    hosts = {h for c in report["checks"] for h in c["host"].split(", ")}
    assert hosts == {"edge", "app-blue", "app-green", "data"}


@pytest.fixture
def idle_nginx_stopped() -> Iterator[str]:
    """nginx stopped on the idle color's host; started again (and healthy) afterwards."""
    settings = load_settings("lab")
    idle = next(h for h in lab_fleet().app_hosts() if h.color != settings.active_color)
    assert ssh(idle.name, "systemctl stop nginx.service").returncode == 0
    try:
        yield idle.name
    finally:
        ssh(idle.name, "systemctl start nginx.service")
        fleet = lab_fleet()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            health = fleet.health_from_edge(settings.domain, [idle])
            if health[idle.name] == 200:
                break
            time.sleep(1)
        # The edge's minutely health check may have failed meanwhile.
        ssh("edge", "systemctl reset-failed mcp-health-check.service")


def test_check_fails_naming_the_host_and_the_fix_when_nginx_stops(idle_nginx_stopped):
    host = idle_nginx_stopped
    code, report = check_report()
    assert code == 1 and report["ok"] is False
    units = next(c for c in report["checks"] if c["name"] == "units" and c["host"] == host)
    assert units["status"] == "fail"
    assert "nginx.service is inactive" in units["detail"]
    assert units["fix"].startswith(f"on {host}: systemctl start nginx.service")
    health = next(c for c in report["checks"] if c["name"] == "health" and c["host"] == host)
    assert health["status"] == "fail"
    others = [c for c in report["checks"] if c["name"] == "units" and c["host"] != host]
    assert others and all(c["status"] == "pass" for c in others)

    text = mcpdeploy("ops", "check")
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    failed = next(i for i, ln in enumerate(lines) if ln.startswith("FAIL") and " units " in ln)
    assert host in lines[failed] and "fix: on " in lines[failed + 1]


# --- bundle ----------------------------------------------------------------------------------


def test_bundle_has_every_section_and_no_secret(tmp_path):
    settings = load_settings("lab")
    active = f"app-{settings.active_color}"
    credentials = stack_credentials("lab", "file")
    known = [getattr(credentials, f.name) for f in fields(credentials)]
    inspected = ssh(active, "docker inspect mcp-service").stdout
    present = credentials.api_key in inspected
    assert present, "a known credential (MCP_API_KEY) is in what the bundle collects"
    planted = [secrets.token_urlsafe(24) for _ in range(3)]
    line = (
        f"mcpdeploy-bundle-test retry with password={planted[0]} "
        f"Authorization: Bearer {planted[1]} url postgresql://probe:{planted[2]}@10.9.9.9/db"
    )
    assert ssh(active, f"logger -t mcpdeploy-bundle-test {shlex.quote(line)}").returncode == 0

    path = tmp_path / "support.tar.gz"
    result = mcpdeploy("ops", "bundle", "--output", str(path), "--minutes", "30")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    [root] = (tmp_path / "x").iterdir()
    texts = {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}

    leaked = [name for name, text in texts.items() if any(s in text for s in [*known, *planted])]
    assert leaked == [], "secrets in the bundle (values not shown)"
    journal = texts[f"{active}/logs/journal.txt"]
    assert "mcpdeploy-bundle-test retry with password=[redacted]" in journal
    assert "Bearer [redacted]" in journal and "postgresql://[redacted]@10.9.9.9/db" in journal
    assert "MCP_API_KEY=[redacted]" in texts[f"{active}/docker/inspect.json"]

    manifest = json.loads(texts["MANIFEST.json"])
    assert set(manifest["hosts"]) == {"edge", "app-blue", "app-green", "data"}
    assert manifest["not_collected"] == {}
    for host, entry in manifest["hosts"].items():
        for section in ("system/disk.txt", "system/memory.txt", "system/ufw.txt"):
            assert texts[f"{host}/{section}"].strip(), (host, section)
        for section in ("units/status.txt", "units/list.txt", "logs/journal.txt"):
            assert texts[f"{host}/{section}"].strip(), (host, section)
        versions = texts[f"{host}/versions.txt"]
        assert "Debian GNU/Linux 12" in versions, host
        if entry["role"] in ("edge", "app"):
            assert "server_name" in texts[f"{host}/nginx/nginx-T.txt"], host
            assert "nginx version" in versions, host
        if entry["role"] == "app":
            assert texts[f"{host}/logs/mcp-service.log"].strip(), host
            assert "Engine:" in versions and "sha256:" in texts[f"{host}/docker/images.txt"]
        if entry["role"] == "data":
            assert "PostgreSQL 15" in versions and "Redis server" in versions
            assert texts[f"{host}/logs/postgresql.log"].strip()
    assert "checks:" in texts["check.txt"]
    assert json.loads(texts["settings.json"])["domain"] == settings.domain
