"""The `aws` settings: defaults for a production AWS stack, every bad value named."""

from __future__ import annotations

import copy
import ipaddress

import pytest

from mcpdeploy.settings import SettingsError, parse_settings

VALID = {
    "config": {
        "mcpdeploy:domain": "mcp.example.com",
        "mcpdeploy:activeColor": "blue",
        "mcpdeploy:image": "registry.example.com/railspress/mcp:1.4.2",
        "mcpdeploy:adminCidrs": ["203.0.113.0/24"],
    }
}


def with_aws(**aws: object) -> dict:
    doc = copy.deepcopy(VALID)
    doc["config"]["mcpdeploy:aws"] = aws
    return doc


def test_defaults_are_highly_available_and_private():
    aws = parse_settings(VALID).aws
    assert aws.vpc_cidr == ipaddress.IPv4Network("10.40.0.0/16")
    assert (aws.availability_zones, aws.nat_gateways, aws.access) == (2, "perAz", "ssm")
    assert (aws.database.engine_version, aws.database.multi_az) == ("16", True)
    assert aws.database.backup_retention_days >= 7 and aws.database.deletion_protection
    assert aws.cache.nodes == 2 and aws.canary_weight == 0


def test_a_zone_that_owns_the_domain_is_accepted():
    assert parse_settings(with_aws(hostedZone="example.com")).aws.hosted_zone == "example.com"


BAD = [
    ("canary above 100", {"canaryWeight": 101}, "mcpdeploy:aws.canaryWeight", "less than or equal"),
    ("negative canary", {"canaryWeight": -1}, "mcpdeploy:aws.canaryWeight", "greater than"),
    ("one AZ", {"availabilityZones": 1}, "mcpdeploy:aws.availabilityZones", "greater than"),
    ("public VPC", {"vpcCidr": "8.8.0.0/16"}, "mcpdeploy:aws.vpcCidr", "private"),
    ("tiny VPC", {"vpcCidr": "10.0.0.0/28"}, "mcpdeploy:aws.vpcCidr", "/16 and /24"),
    ("NAT typo", {"natGateways": "each"}, "mcpdeploy:aws.natGateways", "'perAz' or 'one'"),
    (
        "old postgres",
        {"database": {"engineVersion": "14"}},
        "mcpdeploy:aws.database.engineVersion",
        "15 or newer",
    ),
    (
        "short backups",
        {"database": {"backupRetentionDays": 1}},
        "mcpdeploy:aws.database.backupRetentionDays",
        "greater than or equal to 7",
    ),
    (
        "bad DB class",
        {"database": {"instanceClass": "t3.micro"}},
        "mcpdeploy:aws.database.instanceClass",
        "pattern",
    ),
    (
        "zero redis nodes",
        {"cache": {"nodes": 0}},
        "mcpdeploy:aws.cache.nodes",
        "greater than or equal to 1",
    ),
    ("bastion without host", {"access": "bastion"}, "mcpdeploy:aws", "jump host"),
    (
        "host with ssm",
        {"bastion": "jump.example.com"},
        "mcpdeploy:aws",
        "only used with access: bastion",
    ),
    ("unknown access", {"access": "vpn"}, "mcpdeploy:aws.access", "'ssm' or 'bastion'"),
    ("foreign zone", {"hostedZone": "example.org"}, "mcpdeploy:aws", "parent of it"),
    ("bad ssh key", {"sshPublicKey": "hunter2"}, "mcpdeploy:aws.sshPublicKey", "pattern"),
    ("bad email", {"alertEmail": "oncall"}, "mcpdeploy:aws.alertEmail", "pattern"),
    (
        "zero ECR images",
        {"ecrKeepImages": 0},
        "mcpdeploy:aws.ecrKeepImages",
        "greater than or equal to 1",
    ),
    ("unknown aws key", {"region": "us-east-1"}, "mcpdeploy:aws.region", "not a known setting"),
]


@pytest.mark.parametrize(("case", "aws", "key", "allowed"), BAD, ids=[b[0] for b in BAD])
def test_bad_aws_value_is_named_with_what_is_allowed(case, aws, key, allowed):
    with pytest.raises(SettingsError) as caught:
        parse_settings(with_aws(**aws))
    problems = {k: a for k, _, a in caught.value.problems}
    assert key in problems, caught.value
    assert allowed in problems[key], caught.value
