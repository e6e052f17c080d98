"""A blue-green switch in the lab is one settings edit and an edge deploy.

Edits ``activeColor`` in ``Pulumi.lab.yaml`` (restored afterwards, whatever happens),
deploys the edge, and checks that traffic through https://127.0.0.1:8443 now comes from
the other color, then switches back.
"""

from __future__ import annotations

import re
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
PYINFRA = Path(sys.executable).with_name("pyinfra")


def deploy_edge() -> None:
    result = subprocess.run(
        [str(PYINFRA), "-y", "--limit", "edge", "hosts/lab.py", "deploy.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def served_color() -> tuple[str, int]:
    settings = load_settings("lab")
    context = ssl.create_default_context(cafile=str(STATE_DIR / "ca.crt"))
    with httpx2.Client(verify=context, timeout=10) as client:
        response = client.get(f"https://127.0.0.1:{settings.lab.https_port}/health/mcp")
    return response.headers["x-mcp-color"], response.status_code


@pytest.fixture
def lab_stack_file():
    original = STACK_FILE.read_text()
    yield original
    STACK_FILE.write_text(original)
    deploy_edge()


def test_switching_active_color_moves_traffic_and_back(lab_stack_file):
    active = load_settings("lab").active_color
    other = "green" if active == "blue" else "blue"
    assert served_color() == (active, 200)
    switched = re.sub(
        r"^(  mcpdeploy:activeColor:) \w+$", rf"\1 {other}", lab_stack_file, flags=re.M
    )
    assert switched != lab_stack_file
    STACK_FILE.write_text(switched)
    deploy_edge()
    assert served_color() == (other, 200)
