"""The pack as a whole: its shape, its robustness, and policies/ served as the CLI runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import grpc
import jsonschema
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from guardrails import PACK_NAME, POLICIES
from mocked_stack import REPO_POLICIES, Registered, Stack, resource_args, violations
from pulumi.runtime import proto
from pulumi.runtime.proto import analyzer_pb2_grpc
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE, UnknownValueError

RDS = "aws:rds/instance:Instance"


def test_policy_names_are_unique_and_described() -> None:
    names = [p.name for p in POLICIES]
    assert len(names) == len(set(names))
    assert all(p.description.endswith(".") for p in POLICIES)


def test_only_the_tag_policy_is_advisory() -> None:
    advisory = [p.name for p in POLICIES if p.enforcement_level == EnforcementLevel.ADVISORY]
    assert advisory == ["required-tags"]


def test_a_resource_type_without_a_policy_does_not_crash_the_pack(prod_stack: Stack) -> None:
    queue = {"name": "jobs", "tags": {"Project": "mcpdeploy", "Stack": "prod"},
             "redrivePolicy": None, "policy": {"odd": ["shape", 1.0, None]}}  # fmt: skip
    widget = {"ingress": "not a list", "tags": ["not", "a", "map"], "protocol": None}
    stack = prod_stack.plus("aws:sqs/queue:Queue", "jobs", queue, {})
    stack = stack.plus("example:index:Widget", "widget", widget, {})
    assert violations(POLICIES, stack) == []


def test_an_untagged_new_aws_type_is_still_asked_for_tags(prod_stack: Stack) -> None:
    stack = prod_stack.plus("aws:sqs/queue:Queue", "jobs", {"name": "jobs"}, {})
    assert [v.policy for v in violations(POLICIES, stack)] == ["required-tags"]


def test_a_value_unknown_during_preview_is_not_reported_as_a_violation(
    prod_stack: Stack,
) -> None:
    rds = prod_stack.one(RDS)
    previewed = replace(rds, inputs={**rds.inputs, "storageEncrypted": UNKNOWN_BOOLEAN_VALUE})
    policy = next(p for p in POLICIES if p.name == "rds-storage-encrypted")
    assert isinstance(policy, ResourceValidationPolicy)
    # The SDK turns this into "can't run policy during preview" (advisory), not a violation.
    with pytest.raises(UnknownValueError):
        policy.validate(resource_args(previewed), lambda message, urn=None: None)


@pytest.fixture(scope="module")
def served() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """``policies/`` running as the CLI starts it: a process that prints its gRPC port."""
    process = subprocess.Popen(
        [sys.executable, "-u", str(REPO_POLICIES)], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(process.stdout.readline())  # type: ignore[union-attr]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _analyze(stub: analyzer_pb2_grpc.AnalyzerStub, reg: Registered) -> list[str]:
    properties = struct_pb2.Struct()
    properties.update(reg.inputs)
    request = proto.AnalyzeRequest(type=reg.typ, properties=properties, urn=reg.urn, name=reg.name)
    return [d.policyName for d in stub.Analyze(request, timeout=30).diagnostics]


def test_served_pack_lists_every_policy(served: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = served.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == PACK_NAME
    assert sorted(p.name for p in info.policies) == sorted(p.name for p in POLICIES)
    levels = {p.name: p.enforcementLevel for p in info.policies}
    assert levels["rds-storage-encrypted"] == proto.MANDATORY
    assert levels["required-tags"] == proto.ADVISORY


def test_served_pack_passes_prod_and_refuses_a_broken_resource(
    served: analyzer_pb2_grpc.AnalyzerStub, prod_stack: Stack
) -> None:
    assert [name for reg in prod_stack for name in _analyze(served, reg)] == []
    broken = prod_stack.changed(RDS, storageEncrypted=False).one(RDS)
    assert _analyze(served, broken) == ["rds-storage-encrypted"]


def test_a_stack_waives_a_policy_through_config(
    served: analyzer_pb2_grpc.AnalyzerStub, prod_stack: Stack
) -> None:
    broken = prod_stack.changed(RDS, storageEncrypted=False).one(RDS)
    waiver = {"rds-storage-encrypted": proto.PolicyConfig(enforcementLevel=proto.DISABLED)}
    served.Configure(proto.ConfigureAnalyzerRequest(policyConfig=waiver), timeout=30)
    try:
        assert _analyze(served, broken) == []
    finally:
        served.Configure(proto.ConfigureAnalyzerRequest(), timeout=30)
    assert _analyze(served, broken) == ["rds-storage-encrypted"]


def test_readme_table_lists_every_policy() -> None:
    table = (REPO_POLICIES / "README.md").read_text().split("## The policies", 1)[1]
    listed = set(re.findall(r"^\| `([a-z0-9-]+)`", table, re.MULTILINE))
    assert listed == {p.name for p in POLICIES}


def test_prod_policy_config_fits_the_schemas_and_the_stack() -> None:
    config = json.loads((REPO_POLICIES / "prod.json").read_text())
    schemas = {p.name: p.config_schema for p in POLICIES}
    for policy, settings in config.items():
        schema = schemas[policy]
        assert schema is not None, policy
        properties = {"enforcementLevel": {"enum": ["advisory", "mandatory", "disabled"]}}
        jsonschema.validate(
            settings,
            {"type": "object", "additionalProperties": False,
             "properties": {**schema.properties, **properties}},
        )  # fmt: skip
    # The policy's admin networks are the stack's: one edit of either is caught here.
    stack = yaml.safe_load((REPO_POLICIES.parent / "Pulumi.prod.yaml").read_text())
    admins = config["security-group-ssh-admins-only"]["adminCidrs"]
    assert admins == stack["config"]["mcpdeploy:adminCidrs"]
