"""Every policy passes on the mocked prod stack and fires on a stack broken its way.

Each case breaks a copy of the prod stack the way a careless change would, and names the
one policy that must refuse it and a piece of the message that says what to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from guardrails import POLICIES
from mocked_stack import Stack, of_policy, violations

RDS = "aws:rds/instance:Instance"
PARAMS = "aws:rds/parameterGroup:ParameterGroup"
REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
EC2 = "aws:ec2/instance:Instance"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ECR = "aws:ecr/repository:Repository"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
NAME = "mcpdeploy-prod"
BACKUPS, LOGS = NAME, f"{NAME}-logs"
ALL_POLICY_NAMES = sorted(p.name for p in POLICIES)


def _ingress_rule(group: str, port: int, cidr: str) -> Callable[[Stack], Stack]:
    def add(stack: Stack) -> Stack:
        target = stack.one(SG, f"{NAME}-{group}")
        props = {"securityGroupId": f"{target.name}-id", "ipProtocol": "tcp",
                 "fromPort": port, "toPort": port, "cidrIpv4": cidr,
                 "tags": {"Project": "mcpdeploy", "Stack": "prod"}}  # fmt: skip
        return stack.plus(
            INGRESS, f"{NAME}-{group}-{port}-open", props, {"securityGroupId": target}
        )

    return add


def _weights(blue: int, green: int) -> Callable[[Stack], Stack]:
    def split(stack: Stack) -> Stack:
        listener = stack.one(LISTENER, f"{NAME}-https")
        action = listener.inputs["defaultActions"][0]
        groups = action["forward"]["targetGroups"]
        for group, weight in zip(groups, (blue, green), strict=True):
            group["weight"] = float(weight)
        return stack.changed(LISTENER, f"{NAME}-https", defaultActions=[action])

    return split


def _tls_policy_without_deny(stack: Stack) -> Stack:
    return stack.changed(
        BUCKET_POLICY, BACKUPS, policy='{"Version": "2012-10-17", "Statement": []}'
    )


@dataclass(frozen=True)
class Case:
    policy: str
    breaks: Callable[[Stack], Stack]
    says: str
    also: frozenset[str] = frozenset()  # policies the same mistake rightly trips too


CASES = [
    Case("rds-storage-encrypted", lambda s: s.changed(RDS, storageEncrypted=False),
         "set storage_encrypted=True"),
    Case("rds-not-public", lambda s: s.changed(RDS, publiclyAccessible=True),
         "set publicly_accessible=False"),
    Case("rds-backup-retention", lambda s: s.changed(RDS, backupRetentionPeriod=3.0),
         "set backup_retention_period >= 7"),
    Case("rds-deletion-protection", lambda s: s.changed(RDS, deletionProtection=False),
         "aws.database.deletionProtection: true in Pulumi.prod.yaml"),
    Case("rds-postgres-version", lambda s: s.changed(RDS, engineVersion="14.9"),
         "aws.database.engineVersion to 15 or newer"),
    Case("rds-force-ssl",
         lambda s: s.changed(PARAMS, parameters=[{"name": "rds.force_ssl", "value": "0"}]),
         "sets rds.force_ssl=1"),
    Case("elasticache-transit-encryption",
         lambda s: s.changed(REDIS, transitEncryptionEnabled=False),
         "set transit_encryption_enabled=True"),
    Case("elasticache-at-rest-encryption",
         lambda s: s.changed(REDIS, atRestEncryptionEnabled=False),
         "set at_rest_encryption_enabled=True"),
    Case("elasticache-auth-token", lambda s: s.changed(REDIS, authToken=None),
         "set auth_token"),
    Case("security-group-no-world-ingress", _ingress_rule("hosts", 443, "0.0.0.0/0"),
         "only the load balancer's group may admit 0.0.0.0/0"),
    Case("security-group-private-ports", _ingress_rule("database", 5432, "0.0.0.0/0"),
         "exposing port(s) 5432 to the internet",
         also=frozenset({"security-group-no-world-ingress"})),
    Case("security-group-ssh-admins-only", _ingress_rule("hosts", 22, "198.51.100.0/24"),
         "SSH may come only from the admin CIDRs"),
    Case("alb-tls-policy",
         lambda s: s.changed(LISTENER, f"{NAME}-https", sslPolicy="ELBSecurityPolicy-2016-08"),
         "set ssl_policy to one of ELBSecurityPolicy-TLS13-1-2-2021-06"),
    Case("alb-https-listener", lambda s: s.without(LISTENER, f"{NAME}-https"),
         "has no HTTPS listener", also=frozenset({"blue-green-one-active-color"})),
    Case("alb-http-redirects-only",
         lambda s: s.changed(LISTENER, f"{NAME}-http", defaultActions=[
             {"type": "fixed-response", "fixedResponse": {"contentType": "text/plain"}}]),
         'default action must be type="redirect"'),
    Case("alb-access-logs",
         lambda s: s.changed(LB, accessLogs={"bucket": "logs", "enabled": False}),
         "set access_logs with enabled=True"),
    Case("ec2-imdsv2-required",
         lambda s: s.changed(EC2, f"{NAME}-blue1", metadataOptions={"httpTokens": "optional"}),
         'http_tokens="required"'),
    Case("ec2-root-volume-encrypted",
         lambda s: s.changed(EC2, f"{NAME}-green2", rootBlockDevice={"volumeSize": 20.0}),
         "encrypted=True"),
    Case("ec2-no-public-ip",
         lambda s: s.changed(EC2, f"{NAME}-blue2", associatePublicIpAddress=True),
         "set associate_public_ip_address=False"),
    Case("s3-encryption", lambda s: s.without(SSE, BACKUPS),
         "add an aws.s3.BucketServerSideEncryptionConfiguration"),
    Case("s3-public-access-block", lambda s: s.changed(BLOCK, LOGS, blockPublicPolicy=False),
         "add an aws.s3.BucketPublicAccessBlock"),
    Case("s3-backup-versioning", lambda s: s.without(VERSIONING, BACKUPS),
         'aws.s3.BucketVersioning for it with status "Enabled"'),
    Case("s3-tls-only", _tls_policy_without_deny, '"aws:SecureTransport": "false"'),
    Case("ecr-scan-on-push",
         lambda s: s.changed(ECR, imageScanningConfiguration={"scanOnPush": False}),
         "scan_on_push=True"),
    Case("ecr-immutable-tags", lambda s: s.changed(ECR, imageTagMutability=None),
         'set image_tag_mutability="IMMUTABLE"'),
    Case("required-tags", lambda s: s.changed(SG, f"{NAME}-cache", tags=None),
         "lacks tag(s) Project, Stack"),
    Case("blue-green-one-active-color", _weights(50, 50), "has no single active color"),
    Case("blue-green-target-group-per-color", lambda s: s.without(TARGET_GROUP, f"{NAME}-green"),
         "0 target groups are tagged Color=green"),
    Case("alarms-5xx-and-latency", lambda s: s.without(ALARM, f"{NAME}-p99-latency"),
         "No alarm with alarm_actions watches the latency"),
]  # fmt: skip


def test_every_policy_has_a_broken_variant() -> None:
    assert sorted(case.policy for case in CASES) == ALL_POLICY_NAMES


@pytest.mark.parametrize("policy", ALL_POLICY_NAMES)
def test_prod_stack_passes(prod_stack: Stack, policy: str) -> None:
    assert of_policy(violations(POLICIES, prod_stack), policy) == []


@pytest.mark.parametrize("case", CASES, ids=[case.policy for case in CASES])
def test_broken_variant_is_refused_with_the_fix(prod_stack: Stack, case: Case) -> None:
    found = violations(POLICIES, case.breaks(prod_stack))
    assert {v.policy for v in found} == {case.policy, *case.also}, found
    assert any(case.says in v.message for v in of_policy(found, case.policy)), found
