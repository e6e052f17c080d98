"""The expand/contract rule and how an image's migration plan is asked for and read."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

import roles.app
from mcpdeploy import migrations
from mcpdeploy.fleet import FleetError
from mcpdeploy.migrations import (
    MigrationPlanError,
    PendingMigration,
    Plan,
    PlanNotSupported,
    contract_violations,
    migration_plan,
    one_shot_command,
)

IMAGE = "registry.mcp.lab.test:5000/mcpdeploy/app@sha256:" + "a" * 64


def plan(applied: list[str], pending: list[tuple[str, str]]) -> Plan:
    return Plan(tuple(applied), tuple(PendingMigration(n, p) for n, p in pending))


class FakeFleet:
    """Answers every command with one fixed result; records what it was asked."""

    def __init__(self, returncode: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.result = (returncode, stdout, stderr)
        self.commands: list[tuple[str, str]] = []

    def run(self, host, command, timeout=120, check=True):
        self.commands.append((host, command))
        code, out, err = self.result
        return subprocess.CompletedProcess([host], code, out, err)


def test_paths_and_user_are_those_roles_app_uses():
    assert migrations.MIGRATE_ENV_FILE == roles.app.MIGRATE_ENV_FILE
    assert migrations.RUNTIME_ENV_FILE == roles.app.ENV_FILE
    assert migrations.CA_FILE == roles.app.CA_FILE
    assert migrations.CONTAINER_CA_FILE == roles.app.CONTAINER_CA_FILE
    assert migrations.CONTAINER_USER == roles.app.CONTAINER_USER


def test_a_contract_migration_new_in_this_release_is_refused():
    new = plan(["001_content"], [("002_add_col", "expand"), ("003_drop_col", "contract")])
    violations = contract_violations(new, {"001_content"})
    assert len(violations) == 1
    assert violations[0].startswith("003_drop_col is a contract migration new in this release")
    assert "Release the code that stops using it first" in violations[0]
    assert "next release" in violations[0]


def test_a_contract_migration_the_active_image_already_ships_may_run():
    new = plan(["001_content"], [("003_drop_col", "contract"), ("004_add", "expand")])
    active = plan(["001_content"], [("003_drop_col", "contract")])
    assert contract_violations(new, active.migrations) == []


def test_expand_migrations_and_applied_contracts_are_never_violations():
    new = plan(["001_content", "002_drop_old", "003_add"], [("004_add_more", "expand")])
    assert contract_violations(new, set()) == []


def test_only_the_new_contract_migrations_are_named():
    new = plan([], [("003_drop_a", "contract"), ("005_drop_b", "contract")])
    violations = contract_violations(new, {"003_drop_a"})
    assert [v.split()[0] for v in violations] == ["005_drop_b"]


def test_an_images_migrations_are_applied_and_pending():
    assert plan(["001"], [("002", "expand")]).migrations == {"001", "002"}


def test_plan_is_read_from_the_last_line_of_the_output():
    text = '{"level": "info"}\n' + json.dumps(
        {"applied": ["001_content"], "pending": [{"name": "002_x", "phase": "contract"}]}
    )
    parsed = Plan.from_output(text)
    assert parsed == plan(["001_content"], [("002_x", "contract")])
    assert parsed.pending_in("contract") == ["002_x"] and parsed.pending_in("expand") == []


@pytest.mark.parametrize(
    "text",
    ["", "not json", '{"applied": []}', '{"applied": [], "pending": [{"name": "x"}]}'],
)
def test_output_without_a_plan_is_an_error(text):
    with pytest.raises(MigrationPlanError, match="printed no plan"):
        Plan.from_output(text)


def test_an_unknown_phase_in_a_plan_is_an_error():
    text = json.dumps({"applied": [], "pending": [{"name": "002_x", "phase": "shrink"}]})
    with pytest.raises(MigrationPlanError, match="shrink"):
        Plan.from_output(text)


def test_one_shot_runs_the_image_as_roles_app_runs_migrate():
    command = one_shot_command(IMAGE, migrations.MIGRATE_ENV_FILE, ["migrate", "--plan"])
    words = shlex.split(command.rpartition("exec ")[2])
    assert words[:3] == ["docker", "run", "--rm"]
    for flag in ("--read-only", "--cap-drop", "no-new-privileges", "10001:10001"):
        assert flag in words
    assert words[words.index("--env-file") + 1] == "/etc/mcp-service/migrate.env"
    assert words[-3:] == [IMAGE, "migrate", "--plan"]
    # The CA is mounted only where the host has one (the lab); on AWS the image's store.
    assert "if [ -f /etc/mcp-service/ca.crt ]" in command
    assert "/etc/mcp-service/ca.crt:/etc/mcpdeploy/ca.crt:ro" in command


def test_one_shot_quotes_what_it_passes_to_the_remote_shell():
    command = one_shot_command("img", "/env", ["-c", "print('a b'); $HOME"], entrypoint="python")
    words = shlex.split(command.rpartition("exec ")[2])
    assert words[-3:] == ["img", "-c", "print('a b'); $HOME"]
    assert words[words.index("--entrypoint") + 1] == "python"


def test_migration_plan_asks_the_host_and_parses_the_answer():
    fleet = FakeFleet(stdout=json.dumps({"applied": ["001_content"], "pending": []}))
    assert migration_plan(fleet, "app-green", IMAGE) == plan(["001_content"], [])
    host, command = fleet.commands[0]
    assert host == "app-green" and command.endswith(f"{IMAGE} migrate --plan")


def test_an_image_without_plan_support_is_told_apart():
    fleet = FakeFleet(2, stderr="mcp-service: error: unrecognized arguments: --plan\n")
    with pytest.raises(PlanNotSupported, match="app-blue"):
        migration_plan(fleet, "app-blue", IMAGE)


def test_a_failing_plan_names_the_host_the_image_and_the_error():
    fleet = FakeFleet(2, stderr="mcp-service migrate: 002_x: already applied but changed\n")
    with pytest.raises(MigrationPlanError) as caught:
        migration_plan(fleet, "app-green", IMAGE)
    assert "app-green" in str(caught.value) and IMAGE in str(caught.value)
    assert "already applied" in str(caught.value)


def test_an_unreachable_host_is_a_plan_error():
    class Unreachable(FakeFleet):
        def run(self, host, command, timeout=120, check=True):
            raise FleetError(f"{host}: did not finish within {timeout} s")

    with pytest.raises(MigrationPlanError, match="did not finish"):
        migration_plan(Unreachable(), "app-green", IMAGE)
