"""Security-group rules in every spelling the provider accepts (guide: Firewall)."""

from __future__ import annotations

from typing import Any

from guardrails import POLICIES
from mocked_stack import Stack, of_policy, violations

SG = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
TAGS = {"Project": "mcpdeploy", "Stack": "prod"}


def _with_rule(prod: Stack, typ: str, group: str, props: dict[str, Any]) -> Stack:
    target = prod.one(SG, f"mcpdeploy-prod-{group}")
    rule = {**props, "securityGroupId": target.outputs["id"], "tags": TAGS}
    return prod.plus(typ, f"extra-{group}", rule, {"securityGroupId": target})


def _policies(stack: Stack) -> set[str]:
    return {v.policy for v in violations(POLICIES, stack)}


def test_load_balancer_group_may_not_open_other_ports(prod_stack: Stack) -> None:
    rule = {"ipProtocol": "tcp", "fromPort": 8080.0, "toPort": 8080.0, "cidrIpv6": "::/0"}
    found = violations(POLICIES, _with_rule(prod_stack, INGRESS, "lb", rule))
    assert [v.policy for v in found] == ["security-group-no-world-ingress"]
    assert "tcp 8080 from ::/0" in found[0].message


def test_all_traffic_rule_from_internet_trips_every_port_rule(prod_stack: Stack) -> None:
    rule = {"type": "ingress", "protocol": "-1", "fromPort": 0.0, "toPort": 0.0,
            "cidrBlocks": ["0.0.0.0/0"]}  # fmt: skip
    stack = _with_rule(prod_stack, SG_RULE, "hosts", rule)
    found = violations(POLICIES, stack)
    assert {v.policy for v in found} == {
        "security-group-no-world-ingress",
        "security-group-private-ports",
        "security-group-ssh-admins-only",
    }
    private = of_policy(found, "security-group-private-ports")[0]
    assert "port(s) 3000, 5432, 6379" in private.message


def test_inline_ingress_of_a_group_is_read(prod_stack: Stack) -> None:
    stack = prod_stack.changed(
        SG,
        "mcpdeploy-prod-hosts",
        ingress=[{"protocol": "tcp", "fromPort": 3000.0, "toPort": 3000.0,
                  "cidrBlocks": ["198.51.100.7/32"]}],
    )  # fmt: skip
    assert _policies(stack) == {"security-group-private-ports"}


def test_egress_rules_are_not_ingress(prod_stack: Stack) -> None:
    rule = {"type": "egress", "protocol": "tcp", "fromPort": 5432.0, "toPort": 5432.0,
            "cidrBlocks": ["0.0.0.0/0"]}  # fmt: skip
    assert _policies(_with_rule(prod_stack, SG_RULE, "hosts", rule)) == set()


def test_private_networks_may_reach_private_ports(prod_stack: Stack) -> None:
    rule = {"ipProtocol": "tcp", "fromPort": 6379.0, "toPort": 6379.0, "cidrIpv4": "10.40.0.0/16"}
    assert _policies(_with_rule(prod_stack, INGRESS, "cache", rule)) == set()


def test_ports_are_configurable(prod_stack: Stack) -> None:
    rule = {"ipProtocol": "tcp", "fromPort": 9000.0, "toPort": 9100.0, "cidrIpv4": "192.0.2.0/24"}
    stack = _with_rule(prod_stack, INGRESS, "hosts", rule)
    assert _policies(stack) == set()
    config = {"security-group-private-ports": {"ports": [9090.0]}}
    found = violations(POLICIES, stack, config)
    assert [v.policy for v in found] == ["security-group-private-ports"]
