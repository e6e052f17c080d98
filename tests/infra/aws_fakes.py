"""Fakes of the AWS side of a switch and a release: a moto ALB shaped like infra/'s and
an Automation API stack whose ``up`` does to the listener what infra/ does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import boto3
from moto import mock_aws
from pulumi import automation as auto
from pulumi.automation._cmd import CommandResult

from mcpdeploy.aws_switch import ACTIVE_KEY
from mcpdeploy.settings import COLORS

REGION = "us-east-1"
HOSTS_PER_COLOR = 2


@dataclass
class Alb:
    """A moto ALB shaped like infra/'s: a target group per color, an HTTPS listener."""

    client: Any
    ec2: Any
    listener: str
    groups: dict[str, str]
    hosts: dict[str, list[dict[str, str]]]

    def forward(self, color: str) -> list[dict[str, Any]]:
        """The listener's default action for ``color`` (loadbalancer.py's weights)."""
        groups = [
            {"TargetGroupArn": self.groups[c], "Weight": 100 if c == color else 0} for c in COLORS
        ]
        return [{"Type": "forward", "ForwardConfig": {"TargetGroups": groups}}]

    def outputs(self, active: str) -> dict[str, Any]:
        """The stack outputs infra/__main__.py exports, for these resources."""
        return {
            "activeColor": active,
            "hosts": self.hosts,
            "targetGroupArns": self.groups,
            "httpsListenerArn": self.listener,
        }

    def host(self, color: str, index: int) -> dict[str, str]:
        return self.hosts[color][index]


@dataclass
class FakeStack:
    """The Automation API stack: records set_config and up; ``up`` applies activeColor to
    the listener as infra/ would, or fails (the up numbers in ``failing``), or does nothing
    to the listener (``inert``)."""

    alb: Alb
    config: dict[str, str]
    failing: set[int] = field(default_factory=set)
    inert: bool = False
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def get_config(self, key: str) -> auto.ConfigValue:
        return auto.ConfigValue(self.config[key])

    def set_config(self, key: str, value: auto.ConfigValue) -> None:
        self.calls.append(("set_config", key, value.value))
        self.config[key] = value.value

    def outputs(self) -> dict[str, auto.OutputValue]:
        active = self.config[ACTIVE_KEY]
        return {k: auto.OutputValue(v, False) for k, v in self.alb.outputs(active).items()}

    def up(self, *, on_output: Any = None) -> SimpleNamespace:
        active = self.config[ACTIVE_KEY]
        self.calls.append(("up", active))
        if len([c for c in self.calls if c[0] == "up"]) in self.failing:
            stderr = "error: update failed: creating ELBv2 Listener: AccessDenied\n"
            raise auto.errors.CommandError(CommandResult("Updating (prod)\n", stderr, 255))
        if not self.inert:
            self.alb.client.modify_listener(
                ListenerArn=self.alb.listener, DefaultActions=self.alb.forward(active)
            )
        if on_output:
            on_output("Updating (prod)\n ~ aws:lb:Listener mcpdeploy-prod-https updated\n")
        return SimpleNamespace(outputs=self.outputs())

    def opener(self, stack: str) -> FakeStack:
        assert stack == "prod"
        return self


def moto_alb() -> Iterator[Alb]:
    """Inside ``mock_aws``: the ALB, a target group per color with its hosts registered,
    the listener forwarding to blue."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        client = boto3.client("elbv2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{i}.0/24", AvailabilityZone=az)[
                "Subnet"
            ]["SubnetId"]
            for i, az in enumerate((f"{REGION}a", f"{REGION}b"))
        ]
        lb = client.create_load_balancer(Name="mcpdeploy-prod", Subnets=subnets)
        groups, hosts = {}, {}
        for color in COLORS:
            groups[color] = client.create_target_group(
                Name=f"mcpdeploy-prod-{color}",
                Protocol="HTTPS",
                Port=443,
                VpcId=vpc,
                TargetType="instance",
            )["TargetGroups"][0]["TargetGroupArn"]
            instances = ec2.run_instances(
                ImageId="ami-12c6146b",
                MinCount=HOSTS_PER_COLOR,
                MaxCount=HOSTS_PER_COLOR,
                SubnetId=subnets[0],
            )["Instances"]
            hosts[color] = [
                {"name": f"{color}{n}", "id": i["InstanceId"], "address": i["PrivateIpAddress"]}
                for n, i in enumerate(instances, start=1)
            ]
            client.register_targets(
                TargetGroupArn=groups[color],
                Targets=[{"Id": i["InstanceId"], "Port": 443} for i in instances],
            )
        alb = Alb(client, ec2, "", groups, hosts)
        alb.listener = client.create_listener(
            LoadBalancerArn=lb["LoadBalancers"][0]["LoadBalancerArn"],
            Protocol="HTTP",  # moto's HTTPS listener wants an ACM certificate; same action
            Port=443,
            DefaultActions=alb.forward("blue"),
        )["Listeners"][0]["ListenerArn"]
        yield alb
