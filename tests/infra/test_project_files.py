"""Pulumi.yaml and Pulumi.prod.yaml: what the Pulumi CLI and the schema both read."""

from __future__ import annotations

import yaml
from pulumi_harness import REPO, run_program

from mcpdeploy.settings import Secret, Settings, load_settings

PULUMI_TYPES = {int: "integer", str: "string", list: "array", bool: "boolean"}


def project() -> dict:
    return yaml.safe_load((REPO / "Pulumi.yaml").read_text())


def test_project_runs_infra_with_the_projects_virtualenv():
    doc = project()
    assert doc["name"] == "mcpdeploy" and doc["main"] == "infra/"
    assert doc["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv"},
    }
    assert (REPO / "infra" / "__main__.py").is_file()


def test_declared_config_matches_the_schema_types_and_defaults():
    fields = {f.alias: f for f in Settings.model_fields.values()}
    for key, spec in project()["config"].items():
        assert ":" not in key, "provider keys cannot be typed in Pulumi.yaml"
        field = fields[key]
        if "default" in spec:
            assert spec["default"] == field.default, key
            assert spec["type"] == PULUMI_TYPES[type(field.default)], key
        else:
            assert field.is_required(), f"{key} has a schema default: give Pulumi.yaml the same"


def test_prod_stack_is_valid_and_keeps_secrets_encrypted():
    settings = load_settings("prod", REPO)
    assert isinstance(settings.alert_webhook, Secret)
    assert settings.aws.ssh_public_key and settings.aws.hosted_zone
    assert yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]["aws:region"]


def test_the_committed_prod_stack_runs_under_mocks():
    run = run_program(REPO)
    assert run.outputs["activeColor"] == "blue"
    assert len(run.outputs["hosts"]["blue"]) == 2
