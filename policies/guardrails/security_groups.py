"""Security groups (guide: Firewall Configuration — 22, 80, 443 open; 3000 closed).

Done right on AWS: only the load balancer's group admits the internet, on 80 and 443;
the service's 3000 and the data stores' 5432 / 6379 never see the internet; SSH comes
from the admins' networks only. Rules are read wherever the program can write them:
inline ``ingress`` of a group, ``aws.ec2.SecurityGroupRule`` and
``aws.vpc.SecurityGroupIngressRule`` (what infra/components/security.py uses).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from .config import schema, setting, string_list
from .resources import listed, of_type, related

GROUP = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
EC2_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
RULE_TYPES = (GROUP, DEFAULT_GROUP, EC2_RULE, INGRESS_RULE)
LOAD_BALANCERS = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
WEB_PORTS = (80, 443)
SSH = 22
# Addresses that never come from the internet: RFC 1918 and IPv6 unique-local.
INTERNAL = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
WHERE = "in infra/components/security.py"


@dataclass(frozen=True)
class Ingress:
    """One ingress permission, whichever resource spelled it."""

    protocol: str
    from_port: int
    to_port: int
    cidrs: tuple[str, ...]

    def covers(self, port: int) -> bool:
        """Whether traffic to ``port`` over TCP is admitted."""
        if self.protocol in ("-1", "all"):
            return True
        return self.protocol in ("tcp", "6") and self.from_port <= port <= self.to_port

    def shown(self) -> str:
        """The rule as a person reads it."""
        ports = (
            "all ports"
            if self.protocol in ("-1", "all")
            else f"{self.protocol} {self.from_port}"
            + (f"-{self.to_port}" if self.to_port != self.from_port else "")
        )
        return f"{ports} from {', '.join(self.cidrs)}"


def _ingress(protocol: Any, from_port: Any, to_port: Any, *cidrs: Any) -> Ingress:
    return Ingress(
        str(protocol if protocol is not None else "-1").lower(),
        int(from_port or 0),
        int(to_port if to_port is not None else 65535),
        tuple(str(c) for c in cidrs if c),
    )


def ingress_rules(resource_type: str, props: Mapping[str, Any]) -> list[Ingress]:
    """The ingress permissions a group or rule resource grants to CIDRs (group-to-group
    references are internal by construction and are left out)."""
    if resource_type in (GROUP, DEFAULT_GROUP):
        return [
            _ingress(
                r.get("protocol"),
                r.get("fromPort"),
                r.get("toPort"),
                *listed(r.get("cidrBlocks")),
                *listed(r.get("ipv6CidrBlocks")),
            )
            for r in listed(props.get("ingress"))
        ]
    if resource_type == EC2_RULE and props.get("type") == "ingress":
        cidrs = [*listed(props.get("cidrBlocks")), *listed(props.get("ipv6CidrBlocks"))]
        rule = _ingress(props.get("protocol"), props.get("fromPort"), props.get("toPort"), *cidrs)
        return [rule]
    if resource_type == INGRESS_RULE:
        cidrs = [props.get("cidrIpv4"), props.get("cidrIpv6")]
        rule = _ingress(props.get("ipProtocol"), props.get("fromPort"), props.get("toPort"), *cidrs)
        return [rule]
    return []


def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


def _whole_internet(cidr: str) -> bool:
    return _network(cidr).prefixlen == 0


def _from_internet(cidr: str) -> bool:
    net = _network(cidr)
    return not any(net.version == i.version and net.subnet_of(i) for i in INTERNAL)  # type: ignore[arg-type]


def _group_of(rule: PolicyResource, groups: list[PolicyResource]) -> list[PolicyResource]:
    if rule.resource_type in (GROUP, DEFAULT_GROUP):
        return [rule]
    return related(rule, "securityGroupId", groups, "id")


def _no_world_ingress(args: StackValidationArgs, report: ReportViolation) -> None:
    groups = of_type(args.resources, GROUP, DEFAULT_GROUP)
    lb_groups = {
        g.urn
        for lb in of_type(args.resources, *LOAD_BALANCERS)
        for g in related(lb, "securityGroups", groups, "id")
    }
    for resource in of_type(args.resources, *RULE_TYPES):
        on_lb = any(g.urn in lb_groups for g in _group_of(resource, groups))
        for rule in ingress_rules(resource.resource_type, resource.props):
            if not any(_whole_internet(c) for c in rule.cidrs):
                continue
            web_only = (
                rule.protocol == "tcp"
                and rule.from_port == rule.to_port
                and rule.to_port in WEB_PORTS
            )
            if not (on_lb and web_only):
                report(
                    f"{resource.name} admits {rule.shown()}: only the load balancer's group "
                    f"may admit 0.0.0.0/0 or ::/0, and only on tcp 80 or 443. Remove the rule "
                    f"or name the networks that need it {WHERE}.",
                    resource.urn,
                )


PRIVATE = schema(
    ports={
        "type": "array", "items": {"type": "integer"}, "default": [3000, 5432, 6379],
        "description": "Ports only the VPC may reach (service, PostgreSQL, Redis)",
    },
)  # fmt: skip


def _private_ports(args: ResourceValidationArgs, report: ReportViolation) -> None:
    ports = [int(p) for p in setting(args, PRIVATE, "ports")]
    for rule in ingress_rules(args.resource_type, args.props):
        exposed = [p for p in ports if rule.covers(p)]
        public = [c for c in rule.cidrs if _from_internet(c)]
        if exposed and public:
            report(
                f"{args.name} admits {rule.shown()}, exposing port(s) "
                f"{', '.join(map(str, exposed))} to the internet: admit them only from a "
                f"security group (referenced_security_group_id) or a private CIDR {WHERE}.",
                None,
            )


ADMINS = schema(
    adminCidrs=string_list(
        "Networks SSH may come from (mcpdeploy:adminCidrs of the stack); none by default",
        [],
    ),
)


def _ssh_admins_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    admins = [_network(c) for c in setting(args, ADMINS, "adminCidrs")]
    for rule in ingress_rules(args.resource_type, args.props):
        if not rule.covers(SSH):
            continue
        strangers = [
            c
            for c in rule.cidrs
            if not any(
                _network(c).version == a.version and _network(c).subnet_of(a)  # type: ignore[arg-type]
                for a in admins
            )
        ]
        if strangers:
            allowed = ", ".join(map(str, admins)) or "none configured"
            report(
                f"{args.name} admits {rule.shown()}, which reaches SSH from "
                f"{', '.join(strangers)}: SSH may come only from the admin CIDRs ({allowed}). "
                "Set mcpdeploy:adminCidrs in Pulumi.<stack>.yaml, and the policy's adminCidrs "
                "to the same networks.",
                None,
            )


POLICIES = [
    StackValidationPolicy(
        name="security-group-no-world-ingress",
        description="Only the load balancer's security group admits 0.0.0.0/0 or ::/0, "
        "and only on 80/443.",
        validate=_no_world_ingress,
    ),
    ResourceValidationPolicy(
        name="security-group-private-ports",
        description="Ports 3000, 5432 and 6379 are never reachable from the internet.",
        validate=_private_ports,
        config_schema=PRIVATE,
    ),
    ResourceValidationPolicy(
        name="security-group-ssh-admins-only",
        description="SSH (22) is admitted only from the configured admin CIDRs.",
        validate=_ssh_admins_only,
        config_schema=ADMINS,
    ),
]
