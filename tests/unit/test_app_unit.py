"""roles/app's pure parts: the environment file, the systemd unit and its sandbox score."""

from __future__ import annotations

import re
import subprocess

import pytest

from mcpdeploy.credentials import Credentials
from mcpdeploy.settings import SettingsError, load_settings, parse_settings
from roles.app import env_file_text, image_repository, render_unit, service_environment

CREDENTIALS = Credentials(
    api_key="k" * 40,
    secret_key_base="s" * 64,
    redis_password="r" * 40,
    db_owner_password="o" * 40,
    db_runtime_password="p" * 40,
    metrics_token="m" * 40,
)
URLS = {
    "DATABASE_URL": "postgresql://railspress_mcp:pw@10.0.0.5:5432/railspress_production",
    "MIGRATION_DATABASE_URL": "postgresql://railspress_owner:ow@10.0.0.5:5432/railspress_production",
    "REDIS_URL": "rediss://mcp:pw@10.0.0.5:6379/0",
    "MCP_RUNTIME_ROLE": "railspress_mcp",
}


def environment() -> dict[str, str]:
    settings = load_settings("lab")
    return service_environment(
        credentials=CREDENTIALS,
        urls=URLS,
        trusted_proxy=settings.app.docker_bridge.ip,
        workers=settings.app.workers,
        stop_timeout_seconds=settings.app.stop_timeout_seconds,
        settings=settings,
    )


def test_environment_trusts_the_docker_bridge_and_never_holds_the_owner_url():
    env = environment()
    assert env["MCP_TRUSTED_PROXIES"] == "172.17.0.1/32"
    assert env["MCP_RUNTIME_ROLE"] == "railspress_mcp"
    assert env["DATABASE_URL"] == URLS["DATABASE_URL"]
    assert "railspress_owner" not in env_file_text(env)
    # The service drains before docker stop's deadline.
    assert int(env["MCP_SHUTDOWN_TIMEOUT_SECONDS"]) < load_settings("lab").app.stop_timeout_seconds
    # Streams keep alive within nginx's read timeout.
    keepalive = int(env["MCP_STREAM_KEEPALIVE_SECONDS"])
    assert keepalive == load_settings("lab").app.stream_keepalive_seconds
    cache_seconds = load_settings("lab").app.settings_cache_seconds
    assert float(env["MCP_SETTINGS_CACHE_SECONDS"]) == cache_seconds
    assert keepalive < load_settings("lab").timeouts.proxy_read_seconds


def test_environment_holds_a_metrics_token_of_its_own_beside_the_api_key():
    # The performance check authenticates with MCP_METRICS_TOKEN: a client key it shared
    # would lock it out once `ops rotate-key`'s grace period ends.
    lines = env_file_text(environment()).splitlines()
    assert f"MCP_METRICS_TOKEN={CREDENTIALS.metrics_token}" in lines
    assert f"MCP_API_KEY={CREDENTIALS.api_key}" in lines
    assert CREDENTIALS.metrics_token != CREDENTIALS.api_key


def test_env_file_refuses_a_line_break_without_showing_the_value():
    with pytest.raises(ValueError, match="SECRET_KEY_BASE") as error:
        env_file_text({"SECRET_KEY_BASE": "abc\nINJECTED=1"})
    assert "abc" not in str(error.value)


def unit() -> str:
    app = load_settings("lab").app
    return render_unit(
        image="registry.example:5000/team/app@sha256:" + "0" * 64,
        memory=app.memory,
        pids_limit=app.pids_limit,
        stop_timeout_seconds=app.stop_timeout_seconds,
        mount_ca=True,
    )


def test_unit_runs_the_hardened_container_from_the_env_file():
    text = unit()
    for flag in (
        "--read-only",
        "--cap-drop ALL",
        "--security-opt no-new-privileges",
        "--init",
        "--publish 127.0.0.1:3000:3000",
        "--env-file /etc/mcp-service/env",
        "--pids-limit 256",
        "--memory 1g --memory-swap 1g",
        "--user 10001:10001",
    ):
        assert flag in text, flag
    for directive in ("Restart=always", "RestartSec=5", "LimitNOFILE=65536", "ExecStop="):
        assert directive in text


def test_unit_sandbox_scores_at_most_1_5_offline(tmp_path):
    """The guide's unit scores 8.9 (EXPOSED); ours drives a docker client and nothing else."""
    path = tmp_path / "mcp-service.service"
    path.write_text(unit())
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(path)],
        capture_output=True,
        text=True,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score, result.stdout[-500:] + result.stderr[-500:]
    assert float(score[1]) <= 1.5, result.stdout


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("reg.example:5000/team/app:1.2", "reg.example:5000/team/app"),
        ("reg.example:5000/team/app@sha256:" + "a" * 64, "reg.example:5000/team/app"),
        ("reg.example:5000/team/app", "reg.example:5000/team/app"),
        ("app:1", "app"),
    ],
)
def test_image_repository(image, repository):
    assert image_repository(image) == repository


@pytest.mark.parametrize(
    ("key", "value"),
    [("stopTimeoutSeconds", 5), ("memory", "lots"), ("pidsLimit", 0), ("keepImages", 0)],
)
def test_bad_app_settings_are_named(key, value):
    document = {
        "config": {
            "mcpdeploy:domain": "mcp.example.com",
            "mcpdeploy:activeColor": "blue",
            "mcpdeploy:image": "app:1",
            "mcpdeploy:adminCidrs": ["10.0.0.0/8"],
            "mcpdeploy:app": {key: value},
        }
    }
    with pytest.raises(SettingsError, match=re.escape(f"mcpdeploy:app.{key}")):
        parse_settings(document)


def test_environment_names_the_hosts_and_origins_the_service_accepts():
    env = service_environment(
        credentials=CREDENTIALS,
        urls=URLS,
        trusted_proxy=load_settings("lab").app.docker_bridge.ip,
        workers=1,
        stop_timeout_seconds=30,
        settings=load_settings("lab"),
        extra_names=("localhost", "127.0.0.1"),
        client_origins=["https://127.0.0.1:8443"],
    )
    hosts = env["MCP_ALLOWED_HOSTS"].split(",")
    for name in ("mcp.lab.test", "127.0.0.1", "localhost", "[::1]"):
        assert {name, f"{name}:*"} <= set(hosts), hosts
    assert len(hosts) == len(set(hosts)) == 8  # the edge's names are loopback ones here
    assert env["MCP_ALLOWED_ORIGINS"] == "https://mcp.lab.test,https://127.0.0.1:8443"


def test_a_stack_without_extra_names_still_answers_its_domain_and_loopback():
    hosts = environment()["MCP_ALLOWED_HOSTS"].split(",")
    assert hosts[:2] == ["mcp.lab.test", "mcp.lab.test:*"]
    assert "127.0.0.1:*" in hosts
    assert environment()["MCP_ALLOWED_ORIGINS"] == "https://mcp.lab.test"
