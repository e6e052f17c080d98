"""`mcpdeploy switch`: traffic moves to a ready color and back; a color that is not ready
is refused and the active one keeps serving.

Changes ``activeColor`` in ``Pulumi.lab.yaml`` through the CLI; the fixture restores the
file and the edge whatever happens.
"""

from __future__ import annotations

import json

import pytest
from mcp_endpoint import check_endpoint
from release_harness import (
    BIN,
    READY,
    SSH,
    STACK_FILE,
    lab_status,
    run,
    served,
    switched_colors,
)

from mcpdeploy.lab import STATE_DIR
from mcpdeploy.settings import load_settings
from roles.edge import SITE_CONF as SITE

pytestmark = pytest.mark.lab


@pytest.fixture
def colors():
    """(active, idle) colors; the stack file and the edge are restored afterwards."""
    yield from switched_colors()


def test_switch_moves_traffic_to_the_other_color_and_back(colors):
    """While the other color serves, the MCP endpoint checks run on it too (the active
    color's run in tests/lab/test_endpoint.py): a few seconds, no switch of its own."""
    active, idle = colors
    assert served() == (active, 200)
    # A switch runs the edge's own deploy (deploy_edge.py), not deploy.py: it moves the flag
    # and brings the nginx site (both colors' upstreams) back to the stack's, and nothing
    # else. A drifted site and a drifted maintenance unit show which part ran.
    drift = "# drifted by test_switch"
    unit = "/etc/systemd/system/mcp-health-check.timer"
    for path in (SITE, unit):
        assert run(*SSH, "edge", f"echo '{drift}' >> {path}").returncode == 0
    try:
        for color in (idle, active):
            result = run(str(BIN / "mcpdeploy"), "switch", "--to", color)
            assert result.returncode == 0, result.stderr
            if color == idle:
                assert drift not in run(*SSH, "edge", "nginx", "-T").stdout
                assert drift in run(*SSH, "edge", "cat", unit).stdout
            assert served() == (color, 200)
            assert load_settings("lab").active_color == color
            if color == idle:
                assert check_endpoint(lab_status()) == idle
    finally:
        for path in (SITE, unit):  # the unit as deploy.py left it; the site if a switch failed
            run(*SSH, "edge", f"sed -i '/{drift}/d' {path}")


def test_switch_to_a_color_that_is_not_ready_is_refused_and_changes_nothing(colors):
    active, idle = colors
    before = STACK_FILE.read_text()
    idle_hosts = [f"app-{idle}"]
    ssh = ["ssh", "-F", str(STATE_DIR / "ssh_config")]
    for name in idle_hosts:
        assert run(*ssh, name, "systemctl stop mcp-service").returncode == 0
    try:
        result = run(str(BIN / "mcpdeploy"), "switch", "--to", idle)
    finally:
        for name in idle_hosts:
            run(*ssh, name, "systemctl start mcp-service")
            run(*ssh, name, READY)
    assert result.returncode == 1
    assert f"{idle} is not ready" in result.stderr and f"{active} keeps serving" in result.stderr
    assert "Traceback" not in result.stderr
    assert STACK_FILE.read_text() == before
    assert served() == (active, 200)


def status() -> tuple[int, dict]:
    result = run(str(BIN / "mcpdeploy"), "status", "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout else {}


def test_status_reports_each_hosts_health_and_pinned_image():
    code, doc = status()
    assert code == 0, doc
    assert doc["active_color"] == load_settings("lab").active_color
    assert {h["color"] for h in doc["hosts"]} == {"blue", "green"}
    for entry in doc["hosts"]:
        assert entry["health"] == 200, entry
        assert "@sha256:" in entry["image"], entry


def test_status_fails_while_the_active_color_is_down(colors):
    active, _ = colors
    ssh = ["ssh", "-F", str(STATE_DIR / "ssh_config"), f"app-{active}"]
    assert run(*ssh, "systemctl stop mcp-service").returncode == 0
    try:
        code, doc = status()
    finally:
        run(*ssh, "systemctl start mcp-service")
        run(*ssh, READY)
    assert code == 1
    down = next(h for h in doc["hosts"] if h["color"] == active)
    assert down["health"] != 200 and down["image"] is None
