"""The CLI's promises: clear errors, exit codes, no tracebacks for a user's mistake."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mcpdeploy.cli import app

runner = CliRunner()


def test_config_check_prints_effective_settings_and_exits_0():
    result = runner.invoke(app, ["config", "check", "--stack", "prod"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["activeColor"] == "blue"
    assert shown["rateLimits"]["perDay"] == 10000
    assert shown["alertWebhook"] == "[secret]"
    assert "REPLACE_WITH" not in result.stdout


def test_config_check_lists_every_error_without_traceback(tmp_path, monkeypatch):
    (tmp_path / "Pulumi.yaml").write_text("name: mcpdeploy\nruntime: python\n")
    (tmp_path / "Pulumi.bad.yaml").write_text(
        "config:\n  mcpdeploy:domain: mcp.example.com\n  mcpdeploy:activeColor: purple\n"
        "  mcpdeploy:image: a/b:1\n  mcpdeploy:adminCidrs: [10.0.0.0/33]\n"
        "  mcpdeploy:rateLimits: {perMinute: -1}\n"
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["config", "check", "--stack", "bad"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    for key in ("activeColor", "adminCidrs.0", "rateLimits.perMinute"):
        assert f"mcpdeploy:{key}" in result.stderr
    assert "purple" in result.stderr and "'blue' or 'green'" in result.stderr


def test_unknown_stack_is_a_clear_error():
    result = runner.invoke(app, ["config", "check", "--stack", "nosuchstack"])
    assert result.exit_code == 2
    assert "Pulumi.nosuchstack.yaml" in result.stderr
    assert "Traceback" not in result.output


def test_lab_ssh_to_an_unknown_host_names_the_real_ones():
    result = runner.invoke(app, ["lab", "ssh", "app-purple"])
    assert result.exit_code == 2
    assert "app-blue" in result.stderr and "data" in result.stderr


def test_switch_to_an_unknown_color_is_refused_before_anything_runs():
    result = runner.invoke(app, ["switch", "--to", "purple"])
    assert result.exit_code == 2 and "blue or green" in result.stderr


def test_switch_on_an_aws_stack_without_the_pulumi_cli_is_one_error_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = runner.invoke(app, ["switch", "--to", "green", "--stack", "prod"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the Pulumi CLI is not installed")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "command",
    [["release", "--image", "x"], ["rollback"], ["status"], ["deploy", "--color", "blue"]],
)
def test_release_commands_on_an_unreachable_aws_stack_are_one_error_line(monkeypatch, command):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = runner.invoke(app, [*command, "--stack", "prod"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot reach prod: the Pulumi CLI is not installed")
    assert "Traceback" not in result.output
