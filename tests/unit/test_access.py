"""Access operations without hosts: which host runs the service's command, what travels on
a command line, how the key file is replaced, the maintenance flag's shell commands, what
the cache command asks and believes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcpdeploy import access
from mcpdeploy.access import (
    AccessError,
    KeyFile,
    Maintenance,
    cache_arguments,
    flag_command,
    parse_rotated_key,
    read_flag,
    rotate_key,
    run_service,
    service_hosts,
    set_cache,
    set_kill_switch,
    store_key,
)
from mcpdeploy.cli import app
from mcpdeploy.fleet import Fleet, FleetHost
from mcpdeploy.settings import SettingsError, load_settings, parse_settings

NEW_KEY = "f" * 8 + "0123456789abcdef" * 3 + "a" * 8
OLD_KEY = "oldkey12" + "x" * 56


@dataclass(frozen=True)
class ScriptedFleet(Fleet):
    """A fleet whose hosts answer from a script: {host: (exit code, stdout, stderr)}."""

    replies: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)

    def run(self, host, command, timeout=120, check=True):
        self.calls.append((host, command))
        code, stdout, stderr = self.replies.get(host, (0, "", ""))
        return subprocess.CompletedProcess([host], code, stdout, stderr)


def fleet(**replies) -> ScriptedFleet:
    hosts = (
        FleetHost("edge", "edge", None, "10.0.0.10"),
        FleetHost("app-green", "app", "green", "10.0.0.120"),
        FleetHost("app-blue", "app", "blue", "10.0.0.100"),
        FleetHost("data", "data", None, "10.0.0.20"),
    )
    return ScriptedFleet("lab", ("ssh",), hosts, "hosts/lab.py", replies=dict(replies))


def command_lines(f: ScriptedFleet) -> str:
    return " ".join(c if isinstance(c, str) else " ".join(c) for _, c in f.calls)


def test_the_active_colors_hosts_are_asked_first():
    assert [h.name for h in service_hosts(fleet(), "blue")] == ["app-blue", "app-green"]
    assert [h.name for h in service_hosts(fleet(), "green")] == ["app-green", "app-blue"]


def test_a_failing_active_host_falls_back_to_the_other_color():
    f = fleet(**{"app-blue": (1, "", "Error: No such container: mcp-service")})
    host, _ = run_service(f, "blue", ["status"])
    assert host == "app-green"
    assert [h for h, _ in f.calls] == ["app-blue", "app-green"]
    assert f.calls[0][1] == ["docker", "exec", "mcp-service", "mcp-service", "status"]


def test_when_no_host_can_run_it_each_is_named_and_stdout_never_shown():
    f = fleet(
        **{
            "app-blue": (2, json.dumps({"key": NEW_KEY}), "cannot reach PostgreSQL"),
            "app-green": (255, "", "ssh: connect to host app-green: Connection refused"),
        }
    )
    with pytest.raises(AccessError) as caught:
        run_service(f, "blue", ["keys", "rotate"])
    message = str(caught.value)
    assert "app-blue: exit 2: cannot reach PostgreSQL" in message
    assert "app-green: exit 255" in message and "journalctl -u mcp-service" in message
    assert NEW_KEY not in message


@pytest.mark.parametrize("enabled", [True, False])
def test_the_kill_switch_reports_the_state_the_service_printed(enabled):
    f = fleet(**{"app-blue": (0, json.dumps({"mcp_enabled": enabled}) + "\n", "")})
    state = set_kill_switch(f, "blue", enabled)
    assert (state.enabled, state.host) == (enabled, "app-blue")
    assert f.calls[0][1][-1] == ("enable" if enabled else "disable")


def test_a_kill_switch_that_did_not_change_is_an_error():
    f = fleet(**{"app-blue": (0, '{"mcp_enabled": true}\n', "")})
    with pytest.raises(AccessError, match="mcp_enabled=True, not False"):
        set_kill_switch(f, "blue", False)


def cache_reply(enabled: bool = True, ttl: int = 300, flushed: bool = False) -> tuple:
    state = {"mcp_enable_caching": enabled, "mcp_cache_ttl": ttl, "flushed": flushed}
    if flushed:
        state["generation"] = 7
    return (0, "log noise\n" + json.dumps(state) + "\n", "")


@pytest.mark.parametrize(
    ("on", "ttl", "flush", "expected"),
    [
        (None, None, False, ["cache"]),
        (False, None, False, ["cache", "--disable"]),
        (True, 60, True, ["cache", "--enable", "--ttl", "60", "--flush"]),
        (None, 86400, False, ["cache", "--ttl", "86400"]),
        (None, 1, True, ["cache", "--ttl", "1", "--flush"]),
    ],
)
def test_the_cache_options_become_the_services_arguments(on, ttl, flush, expected):
    assert cache_arguments(on, ttl, flush) == expected


@pytest.mark.parametrize("ttl", [0, -5, 86401])
def test_a_ttl_outside_the_services_range_is_refused(ttl):
    with pytest.raises(AccessError, match=f"--ttl {ttl} is outside 1..86400 seconds"):
        cache_arguments(None, ttl, False)


def test_the_cache_state_is_what_the_service_printed_on_the_active_host():
    f = fleet(**{"app-blue": cache_reply(False, 60, True)})
    state = set_cache(f, "blue", False, 60, True)
    assert (state.enabled, state.ttl, state.flushed, state.host) == (False, 60, True, "app-blue")
    assert state.generation == 7
    (call,) = f.calls
    assert call == (
        "app-blue",
        [
            "docker",
            "exec",
            "mcp-service",
            "mcp-service",
            "cache",
            "--disable",
            "--ttl",
            "60",
            "--flush",
        ],
    )


@pytest.mark.parametrize(
    ("asked", "reply", "complaint"),
    [
        ({"on": False}, cache_reply(enabled=True), "mcp_enable_caching=True, not False"),
        ({"ttl": 60}, cache_reply(ttl=300), "mcp_cache_ttl=300, not 60"),
        ({"flush": True}, cache_reply(flushed=False), "flushed=False, not True"),
    ],
)
def test_a_cache_change_the_service_did_not_report_is_an_error(asked, reply, complaint):
    with pytest.raises(AccessError, match=complaint):
        set_cache(fleet(**{"app-blue": reply}), "blue", **asked)


@pytest.mark.parametrize(
    "stdout", ["", '{"mcp_enabled": true}', '{"mcp_enable_caching": "yes", "mcp_cache_ttl": 5}']
)
def test_output_without_cache_settings_is_an_error_not_a_state(stdout):
    with pytest.raises(AccessError, match="printed no cache settings"):
        set_cache(fleet(**{"app-blue": (0, stdout, "")}), "blue")


def test_an_image_without_the_cache_command_is_named_on_every_host():
    old = (2, "", "mcp-service: error: argument command: invalid choice: 'cache'")
    with pytest.raises(AccessError) as caught:
        set_cache(fleet(**{"app-blue": old, "app-green": old}), "blue", on=False)
    assert "app-blue: exit 2: mcp-service: error: argument command: invalid choice" in str(
        caught.value
    )
    assert "app-green: exit 2" in str(caught.value)


def test_the_rotated_key_is_read_from_the_last_json_line():
    output = 'log noise\n{"name": "env:current", "key": "%s", "previous_valid_hours": 1}\n'
    assert parse_rotated_key(output % NEW_KEY) == NEW_KEY


@pytest.mark.parametrize(
    "output",
    ["", "not json", '{"key": 5}', '{"key": "short"}', '{"key": "has a space in it......."}'],
)
def test_output_without_a_usable_key_is_refused_without_echoing_it(output):
    with pytest.raises(AccessError, match="printed no usable key") as caught:
        parse_rotated_key(output)
    assert output not in str(caught.value) or not output


def test_rotation_stores_the_new_key_root_only_and_never_puts_a_key_on_a_command_line(
    tmp_path,
):
    path = tmp_path / "mcp-api-key"
    path.write_text(OLD_KEY)
    path.chmod(0o644)
    f = fleet(**{"app-blue": (0, json.dumps({"name": "env:current", "key": NEW_KEY}), "")})
    before = datetime.now(UTC)
    rotation = rotate_key(f, "blue", KeyFile(path), 0.5)
    assert path.read_text() == NEW_KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]
    assert (rotation.host, rotation.new_prefix, rotation.old_prefix) == (
        "app-blue",
        NEW_KEY[:8],
        OLD_KEY[:8],
    )
    assert before + timedelta(minutes=30) <= rotation.old_valid_until
    assert rotation.old_valid_until <= datetime.now(UTC) + timedelta(minutes=30)
    (call,) = f.calls
    assert call[1][-4:] == ["--name", "env:current", "--grace-hours", "0.5"]
    assert NEW_KEY not in command_lines(f) and OLD_KEY not in command_lines(f)


def test_rotation_without_a_key_file_changes_nothing(tmp_path):
    f = fleet()
    with pytest.raises(AccessError, match="deploy the stack first"):
        rotate_key(f, "blue", KeyFile(tmp_path / "missing"), 24)
    assert f.calls == []


def test_a_key_that_cannot_be_parsed_leaves_the_old_file_in_place(tmp_path):
    path = tmp_path / "mcp-api-key"
    path.write_text(OLD_KEY)
    f = fleet(**{"app-blue": (0, "{}", "")})
    with pytest.raises(AccessError):
        rotate_key(f, "blue", KeyFile(path), 24)
    assert path.read_text() == OLD_KEY


def test_store_key_is_0600_whatever_the_umask_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "key"
    previous = os.umask(0)
    try:
        store_key(path, NEW_KEY)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == NEW_KEY
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)


def test_the_flag_commands_set_and_clear_the_file_nginx_tests(tmp_path):
    flag = tmp_path / "mcp-edge" / "maintenance"
    flag.parent.mkdir()
    assert (
        sh(flag_command(True, "2026-01-01T00:00:00+00:00", "root@ops", str(flag))).returncode == 0
    )
    assert json.loads(flag.read_text()) == {"since": "2026-01-01T00:00:00+00:00", "by": "root@ops"}
    assert stat.S_IMODE(flag.stat().st_mode) == 0o644
    assert sh(flag_command(True, "later", "root@ops", str(flag))).returncode == 0
    assert json.loads(flag.read_text())["since"] == "later"
    assert [p.name for p in flag.parent.iterdir()] == ["maintenance"]
    for _ in range(2):  # clearing twice is fine
        assert sh(flag_command(False, "", "", str(flag))).returncode == 0
        assert not flag.exists()


def test_the_flag_is_refused_where_the_edge_role_never_made_its_directory(tmp_path):
    command = flag_command(True, "now", "me", str(tmp_path / "absent" / "maintenance"))
    assert sh(command).returncode == 3


def test_a_quote_in_who_set_the_flag_stays_data(tmp_path):
    flag = tmp_path / "maintenance"
    assert sh(flag_command(True, "now", "o'brien $(touch x)", str(flag))).returncode == 0
    assert json.loads(flag.read_text())["by"] == "o'brien $(touch x)"
    assert not (Path.cwd() / "x").exists()


def test_status_output_is_read_as_on_or_off():
    shown = 'on\n{"since": "2026-01-01T00:00:00+00:00", "by": "root@ops"}\n'
    assert read_flag("edge", shown) == Maintenance(
        "edge", True, "2026-01-01T00:00:00+00:00", "root@ops"
    )
    assert read_flag("edge", "off\n") == Maintenance("edge", False)
    assert read_flag("edge", "on\n") == Maintenance("edge", True)


def test_the_grace_period_setting_defaults_to_a_day_and_must_be_positive():
    assert load_settings("lab").api_key_grace_hours == 24
    document = {
        "config": {
            "mcpdeploy:domain": "mcp.example.com",
            "mcpdeploy:activeColor": "blue",
            "mcpdeploy:image": "a/b:1",
            "mcpdeploy:adminCidrs": ["10.0.0.0/8"],
            "mcpdeploy:apiKeyGraceHours": 0,
        }
    }
    with pytest.raises(SettingsError, match="mcpdeploy:apiKeyGraceHours"):
        parse_settings(document)


runner = CliRunner()


@pytest.mark.parametrize(
    "verb",
    [["disable"], ["enable"], ["rotate-key"], ["maintenance", "on"], ["maintenance", "status"]],
)
def test_ops_on_an_unreachable_aws_stack_is_one_error_line(verb, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no Pulumi CLI to read the stack outputs
    result = runner.invoke(app, ["ops", *verb, "--stack", "prod"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: cannot reach prod: the Pulumi CLI is not installed")
    assert "Traceback" not in result.output


def test_ops_cache_on_an_unreachable_aws_stack_is_one_error_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no Pulumi CLI to read the stack outputs
    result = runner.invoke(app, ["ops", "cache", "--off", "--stack", "prod"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: cannot reach prod: the Pulumi CLI is not installed")
    assert "Traceback" not in result.output


def test_ops_cache_shows_the_settings_without_changing_them(monkeypatch):
    f = fleet(**{"app-blue": cache_reply()})
    monkeypatch.setattr(access, "lab_fleet", lambda: f)
    result = runner.invoke(app, ["ops", "cache"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "read-tool cache on, TTL 300 s (read on app-blue)"
    assert f.calls[0][1][4:] == ["cache"]


def test_ops_cache_changes_say_when_every_host_follows(monkeypatch):
    f = fleet(**{"app-blue": cache_reply(False, 30, True)})
    monkeypatch.setattr(access, "lab_fleet", lambda: f)
    result = runner.invoke(app, ["ops", "cache", "--off", "--ttl", "30", "--flush"])
    assert result.exit_code == 0, result.output
    first, second = result.stdout.strip().splitlines()
    assert first == (
        "read-tool cache off, TTL 30 s (set from app-blue): every app host follows within 5 s"
    )
    assert second.startswith("every cached answer is stale now")
    assert f.calls[0][1][4:] == ["cache", "--disable", "--ttl", "30", "--flush"]


def test_ops_cache_json_is_the_state_and_the_host(monkeypatch):
    monkeypatch.setattr(access, "lab_fleet", lambda: fleet(**{"app-blue": cache_reply(ttl=45)}))
    result = runner.invoke(app, ["ops", "cache", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "enabled": True,
        "ttl": 45,
        "flushed": False,
        "host": "app-blue",
        "generation": None,
    }


def test_a_bad_ttl_is_one_error_line_before_any_host_is_asked(monkeypatch):
    f = fleet()
    monkeypatch.setattr(access, "lab_fleet", lambda: f)
    result = runner.invoke(app, ["ops", "cache", "--on", "--ttl", "0"])
    assert result.exit_code == 2
    assert result.stderr == "error: --ttl 0 is outside 1..86400 seconds; nothing changed\n"
    assert f.calls == []


def test_a_failed_cache_change_is_one_error_line(monkeypatch):
    redis_down = (2, "", "mcp-service cache: cannot use Redis: Error 111 connecting")
    f = fleet(**{"app-blue": redis_down, "app-green": redis_down})
    monkeypatch.setattr(access, "lab_fleet", lambda: f)
    result = runner.invoke(app, ["ops", "cache", "--flush"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot use Redis" in errors[0]
    assert "Traceback" not in result.output


def test_a_negative_grace_period_is_refused_before_anything_runs():
    result = runner.invoke(app, ["ops", "rotate-key", "--grace-hours", "-1"])
    assert result.exit_code == 2


def test_rotate_key_prints_where_the_key_is_and_never_the_key(tmp_path, monkeypatch):
    path = tmp_path / "mcp-api-key"
    path.write_text(OLD_KEY)
    f = fleet(**{"app-blue": (0, json.dumps({"key": NEW_KEY}), "")})
    monkeypatch.setattr(access, "lab_fleet", lambda: f)
    monkeypatch.setattr(access, "key_file", lambda stack: path)
    result = runner.invoke(app, ["ops", "rotate-key", "--grace-hours", "2"])
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout and "0600" in result.stdout
    assert NEW_KEY not in result.output and OLD_KEY not in result.output
    assert path.read_text() == NEW_KEY
    # Nothing on the hosts needs the new key: no deploy to remember at 3 a.m.
    assert "no deploy is needed" in result.stdout and "pyinfra" not in result.stdout


def test_a_failed_rotation_is_one_error_line(tmp_path, monkeypatch):
    path = tmp_path / "mcp-api-key"
    path.write_text(OLD_KEY)
    f = fleet(**{"app-blue": (2, "", "cannot reach PostgreSQL"), "app-green": (2, "", "same")})
    monkeypatch.setattr(access, "lab_fleet", lambda: f)
    monkeypatch.setattr(access, "key_file", lambda stack: path)
    result = runner.invoke(app, ["ops", "rotate-key"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "app-blue: exit 2: cannot reach PostgreSQL; trying app-green" in result.stderr
    assert path.read_text() == OLD_KEY
    assert f.calls[0][1][-1] == "24"  # the setting's default grace period
