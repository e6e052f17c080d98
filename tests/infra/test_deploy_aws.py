"""deploy.py on an AWS-shaped inventory (hosts/aws.py's host data), offline: pyinfra
generates every operation for three app hosts through its ``@fake`` connector, with
moto's Secrets Manager (deploy_aws_harness.py, in its own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKER = "s3cr3t-marker-7f1c"
ROLES_OP = "Create the roles railspress_owner and railspress_mcp"


@pytest.fixture(scope="module")
def deploy() -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "infra" / "deploy_aws_harness.py"), MARKER],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_every_app_host_is_deployed_without_a_data_host(deploy):
    assert set(deploy) == {"blue1", "blue2", "green1"}
    for host in deploy.values():
        assert any(op.startswith("Run the MCP service container") for op in host["ops"])
        assert any("RDS client | Install the RDS CA bundle" in op for op in host["ops"])


def test_the_rds_roles_are_made_once_per_deploy(deploy):
    runs = [name for name, host in deploy.items() if any(ROLES_OP in op for op in host["ops"])]
    assert len(runs) == 1


def test_no_secret_is_on_any_command_line(deploy):
    for name, host in deploy.items():
        leaked = [command for command in host["commands"] if MARKER in command]
        assert not leaked, f"{name}: a secret on a command line"


def test_private_files_are_staged_for_the_sudo_user(deploy):
    for host in deploy.values():
        assert any('install -o "$SUDO_USER" -m 600 /dev/null /tmp/.mcpdeploy-upload-' in c
                   for c in host["commands"])  # fmt: skip


def test_https_is_open_to_the_vpc_where_the_alb_is(deploy):
    rule = (
        "ufw allow from 10.40.0.0/16 to any port 443 proto tcp comment 'https from load balancer'"
    )
    for host in deploy.values():
        assert rule in host["commands"]


def uploaded(host: dict, operation: str) -> str:
    """The content one operation uploads, by part of its name."""
    (content,) = [text for name, text in host["uploads"].items() if operation in name]
    return content


def test_the_performance_check_reads_the_metrics_with_its_own_token_not_the_client_key(deploy):
    # The secrets are "<name>-<MARKER>" (deploy_aws_harness.py): metrics-token, mcp-api-key.
    token, key = f"metrics-token-{MARKER}", f"mcp-api-key-{MARKER}"
    for name, host in deploy.items():
        environment = uploaded(host, "Write the service's environment").splitlines()
        assert f"MCP_METRICS_TOKEN={token}" in environment, name
        assert f"MCP_API_KEY={key}" in environment, name
        assert uploaded(host, "Store the metrics token") == token, name
