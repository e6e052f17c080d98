"""`mcpdeploy switch`: traffic moves to a ready color and back; a color that is not ready
is refused and the active one keeps serving.

Changes ``activeColor`` in ``Pulumi.lab.yaml`` through the CLI; the fixture restores the
file and the edge whatever happens.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from mcpdeploy.lab import STATE_DIR
from mcpdeploy.settings import load_settings

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "Pulumi.lab.yaml"
# Remote shell: wait (bounded) until the service answers its readiness check again.
READY = (
    "for i in $(seq 60); do python3 -c 'import urllib.request; "
    'urllib.request.urlopen("http://127.0.0.1:3000/health/mcp", timeout=2)\' && exit 0; '
    "sleep 1; done; exit 1"
)
BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)


def served_color() -> tuple[str, int]:
    settings = load_settings("lab")
    context = ssl.create_default_context(cafile=str(STATE_DIR / "ca.crt"))
    with httpx2.Client(verify=context, timeout=10) as client:
        response = client.get(f"https://127.0.0.1:{settings.lab.https_port}/health/mcp")
    return response.headers["x-mcp-color"], response.status_code


@pytest.fixture
def colors():
    """(active, idle) colors; the stack file and the edge are restored afterwards."""
    original = STACK_FILE.read_text()
    active = load_settings("lab").active_color
    yield active, "green" if active == "blue" else "blue"
    if STACK_FILE.read_text() != original:
        STACK_FILE.write_text(original)
        result = run(str(BIN / "pyinfra"), "-y", "--limit", "edge", "hosts/lab.py", "deploy.py")
        assert result.returncode == 0, result.stdout[-2000:]


def test_switch_moves_traffic_to_the_other_color_and_back(colors):
    active, idle = colors
    assert served_color() == (active, 200)
    for color in (idle, active):
        result = run(str(BIN / "mcpdeploy"), "switch", "--to", color)
        assert result.returncode == 0, result.stderr
        assert served_color() == (color, 200)
        assert load_settings("lab").active_color == color


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
    assert served_color() == (active, 200)


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
