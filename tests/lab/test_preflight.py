"""`mcpdeploy preflight` against the real lab, read-only: a healthy lab passes every check,
an image the registry lacks fails the image check, an unreachable host is reported as such.

Nothing here changes the lab: the unreachable host is a fleet whose ssh config sends that
host's connections to a closed port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from release_harness import psql

from mcpdeploy.fleet import Fleet, lab_fleet
from mcpdeploy.preflight import Check, run_preflight
from mcpdeploy.settings import COLORS, load_settings

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
LAB_IMAGE = "registry.mcp.lab.test:5000/mcpdeploy/app"
CLEAN_SCAN = {"Results": [{"Target": "app (debian 12)", "Vulnerabilities": []}]}


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def not_passing(checks: list[Check]) -> list[tuple[str, str, str]]:
    return [(c.name, c.status, c.detail) for c in checks if c.status != "pass"]


@pytest.fixture
def clean_scan(tmp_path: Path) -> Path:
    path = tmp_path / "scan.json"
    path.write_text(json.dumps(CLEAN_SCAN))
    return path


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_a_healthy_lab_passes_every_check(clean_scan: Path):
    fleet = lab_fleet()
    checks = run_preflight("lab", scan_file=clean_scan)
    assert not_passing(checks) == []
    found = by_name(checks)
    expected = {"settings", "image", "image scan", "postgres", "redis", "connections"}
    expected |= {"migrations"}
    expected |= {"certificate"} | {
        f"{what} {h.name}" for h in fleet.hosts for what in ("ssh", "memory")
    }
    assert expected <= set(found)
    assert any(name.startswith("disk data ") for name in found)
    # The runtime role over TLS, as the service connects.
    assert re.search(
        r"PostgreSQL 1[3-9]\S* .*as railspress_mcp from app-\w+, TLS$", found["postgres"].detail
    )
    assert re.search(r"Redis [6-9]\.\S+ as mcp from app-\w+, TLS$", found["redis"].detail)
    # The lab's budget: 20 per worker x 2 workers on each of its 2 app hosts, against the
    # data host's real max_connections (100, less the superuser's 3).
    assert found["connections"].detail.startswith("the pools need up to 80 (40 on each of 2")
    assert "PostgreSQL admits 97 (max_connections 100)" in found["connections"].detail
    # As many as the database records (earlier release tests may have added some).
    (applied,) = psql("SELECT count(*) FROM schema_migrations")
    assert found["migrations"].detail == f"none pending ({applied} applied)"
    assert found["certificate"].detail.startswith("mcp.lab.test")
    # The image checked is the one the lab's hosts run.
    digest = found["image"].detail.rpartition(" as ")[2]
    running = fleet.run(
        "app-blue", ["docker", "inspect", "--format", "{{.Config.Image}}", "mcp-service"]
    ).stdout
    assert running.strip() == f"{LAB_IMAGE}@{digest}"


def test_without_a_scan_report_the_scan_warns_and_the_command_still_passes():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("mcpdeploy")), "preflight", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    scan = next(c for c in doc["checks"] if c["name"] == "image scan")
    assert scan["status"] == "warn" and scan["detail"].startswith("no scan")
    assert [c["name"] for c in doc["checks"] if c["status"] != "pass"] == ["image scan"]


def test_an_image_the_registry_lacks_fails_the_image_check(clean_scan: Path):
    bogus = f"{LAB_IMAGE}:no-such-release"
    checks = run_preflight("lab", bogus, scan_file=clean_scan)
    found = by_name(checks)
    assert found["image"].status == "fail"
    assert found["image"].detail == f"{bogus} is not in the registry"
    assert found["migrations"].status == "fail"
    assert found["migrations"].detail == "not checked: the image is not in the registry"
    # The rest of the lab is as healthy as before.
    assert {name for name, _, _ in not_passing(checks)} == {"image", "migrations"}

    result = subprocess.run(
        [str(Path(sys.executable).with_name("mcpdeploy")), "preflight", "--image", bogus],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1
    assert "is not in the registry" in result.stdout and "Traceback" not in result.stderr


def test_an_unreachable_host_is_reported_as_such(tmp_path: Path, closed_port: int):
    active = load_settings("lab").active_color
    idle = next(color for color in COLORS if color != active)
    lab = lab_fleet()
    broken_host = next(h.name for h in lab.app_hosts(idle))
    # The lab's ssh config, with the idle host's connections sent to the closed port.
    config = Path(lab.ssh[lab.ssh.index("-F") + 1]).read_text()
    block = re.compile(rf"(Host {re.escape(broken_host)}\n(?:  .*\n)*?  Port )\d+")
    assert block.search(config), config
    broken_config = tmp_path / "ssh_config"
    broken_config.write_text(block.sub(rf"\g<1>{closed_port}", config, count=1))
    fleet = Fleet(lab.stack, ("ssh", "-F", str(broken_config)), lab.hosts, lab.inventory)

    checks = run_preflight("lab", fleet=fleet)
    found = by_name(checks)
    ssh = found[f"ssh {broken_host}"]
    assert ssh.status == "fail"
    assert ssh.detail.startswith("unreachable:") and "refused" in ssh.detail
    assert f"memory {broken_host}" not in found
    assert all(found[f"ssh {h.name}"].status == "pass" for h in lab.hosts if h.name != broken_host)
    # Nothing could be asked from the idle color, and preflight says so instead of guessing.
    for name in ("postgres", "redis", "migrations"):
        assert found[name].status == "fail"
        assert found[name].detail == f"not checked: no app host of the idle color ({idle}) answered"
