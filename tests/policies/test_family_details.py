"""Finer points of single policies: what they accept, what they tell apart."""

from __future__ import annotations

import json

from guardrails import POLICIES
from mocked_stack import Stack, of_policy, violations

EC2 = "aws:ec2/instance:Instance"
SG = "aws:ec2/securityGroup:SecurityGroup"
LISTENER = "aws:lb/listener:Listener"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
RDS = "aws:rds/instance:Instance"
NAME = "mcpdeploy-prod"


def _names(stack: Stack, config: dict | None = None) -> list[str]:
    return [v.policy for v in violations(POLICIES, stack, config)]


def test_rds_on_the_default_parameter_group_is_refused(prod_stack: Stack) -> None:
    stack = prod_stack.changed(RDS, parameterGroupName="default.postgres16")
    assert _names(stack) == ["rds-force-ssl"]


def test_rds_other_engines_are_refused(prod_stack: Stack) -> None:
    stack = prod_stack.changed(RDS, engine="mysql", engineVersion="8.0")
    assert _names(stack) == ["rds-postgres-version"]


def test_approved_tls_policies_are_configurable(prod_stack: Stack) -> None:
    stack = prod_stack.changed(
        LISTENER, f"{NAME}-https", sslPolicy="ELBSecurityPolicy-FS-1-2-2019-08"
    )
    assert _names(stack) == ["alb-tls-policy"]
    config = {"alb-tls-policy": {"approvedTlsPolicies": ["ELBSecurityPolicy-FS-1-2-2019-08"]}}
    assert _names(stack, config) == []


def test_https_listener_without_certificate_is_refused(prod_stack: Stack) -> None:
    stack = prod_stack.changed(LISTENER, f"{NAME}-https", certificateArn=None)
    found = of_policy(violations(POLICIES, stack), "alb-tls-policy")
    assert "set certificate_arn" in found[0].message


def test_only_the_backup_bucket_must_be_versioned(prod_stack: Stack) -> None:
    assert _names(prod_stack.without(VERSIONING, f"{NAME}-logs")) == []


def test_tls_only_statement_may_stand_alone(prod_stack: Stack) -> None:
    deny = {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "s3:*",
            "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": False}}}  # fmt: skip
    document = json.dumps({"Version": "2012-10-17", "Statement": deny})
    assert _names(prod_stack.changed(BUCKET_POLICY, NAME, policy=document)) == []


def test_per_color_hosts_need_their_color_tag(prod_stack: Stack) -> None:
    stack = prod_stack.changed(
        EC2, f"{NAME}-green1", tags={"Project": "mcpdeploy", "Stack": "prod"}
    )
    found = violations(POLICIES, stack)
    assert [v.policy for v in found] == ["required-tags"]
    assert "add Color=<its color>" in found[0].message


def test_stack_tag_must_name_this_stack(prod_stack: Stack) -> None:
    stack = prod_stack.changed(SG, f"{NAME}-lb", tags={"Project": "mcpdeploy", "Stack": "staging"})
    found = violations(POLICIES, stack)
    assert [v.message for v in found] == [
        f"{NAME}-lb is tagged Stack=staging in stack prod: tag it prod."
    ]


def test_an_alarm_that_notifies_nobody_does_not_count(prod_stack: Stack) -> None:
    stack = prod_stack.changed(ALARM, f"{NAME}-5xx-rate", alarmActions=[])
    found = violations(POLICIES, stack)
    assert [v.policy for v in found] == ["alarms-5xx-and-latency"]
    assert "watches the 5xx error rate" in found[0].message
