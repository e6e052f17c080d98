"""Network: a VPC with public and private subnets across AZs, NAT, flow logs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from . import assume_role_policy, log_retention, policy_json


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    """``cidr`` is split into equal subnets: public ones first, then private ones."""

    cidr: ipaddress.IPv4Network
    az_count: int
    nat_per_az: bool
    flow_log_days: int
    tags: dict[str, str]


class Network(pulumi.ComponentResource):
    """VPC, one public and one private subnet per AZ, NAT gateway(s), VPC flow logs.

    Outputs: ``vpc_id``, ``public_subnet_ids`` and ``private_subnet_ids`` (one per AZ, in
    ``azs`` order), ``azs`` (zone names), ``flow_log_group`` (CloudWatch log group name).
    """

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags
        zones = aws.get_availability_zones(
            state="available", opts=pulumi.InvokeOptions(parent=self)
        )
        self.azs: list[str] = list(zones.names[: args.az_count])
        # Eight equal blocks: room for three AZs of public + private with two spare.
        blocks = list(args.cidr.subnets(prefixlen_diff=3))

        vpc = aws.ec2.Vpc(
            name,
            cidr_block=str(args.cidr),
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**tags, "Name": name},
            opts=child,
        )
        # CIS AWS 5.4: the default security group admits nothing.
        aws.ec2.DefaultSecurityGroup(f"{name}-default", vpc_id=vpc.id, tags=tags, opts=child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=child)

        public_rt = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags={**tags, "Name": f"{name}-public"},
            opts=child,
        )
        public, private, nats = [], [], []
        for i, az in enumerate(self.azs):
            subnet = aws.ec2.Subnet(
                f"{name}-public-{az}",
                vpc_id=vpc.id,
                availability_zone=az,
                cidr_block=str(blocks[i]),
                # Only the ALB and NAT gateways live here; nothing gets a public IP by default.
                map_public_ip_on_launch=False,
                tags={**tags, "Name": f"{name}-public-{az}", "Tier": "public"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{az}", subnet_id=subnet.id, route_table_id=public_rt.id, opts=child
            )
            public.append(subnet)
            if args.nat_per_az or i == 0:
                eip = aws.ec2.Eip(f"{name}-nat-{az}", domain="vpc", tags=tags, opts=child)
                nats.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{az}",
                        allocation_id=eip.id,
                        subnet_id=subnet.id,
                        tags={**tags, "Name": f"{name}-nat-{az}"},
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                    )
                )
        for i, az in enumerate(self.azs):
            subnet = aws.ec2.Subnet(
                f"{name}-private-{az}",
                vpc_id=vpc.id,
                availability_zone=az,
                cidr_block=str(blocks[4 + i]),
                map_public_ip_on_launch=False,
                tags={**tags, "Name": f"{name}-private-{az}", "Tier": "private"},
                opts=child,
            )
            # With one NAT gateway every AZ routes through it (cheaper, not AZ-independent).
            nat = nats[i] if args.nat_per_az else nats[0]
            rt = aws.ec2.RouteTable(
                f"{name}-private-{az}",
                vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags={**tags, "Name": f"{name}-private-{az}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{az}", subnet_id=subnet.id, route_table_id=rt.id, opts=child
            )
            private.append(subnet)

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            retention_in_days=log_retention(args.flow_log_days),
            tags=tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-flow-logs",
            assume_role_policy=assume_role_policy("vpc-flow-logs.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=policy_json(
                [
                    {
                        "Effect": "Allow",
                        "Action": [
                            "logs:CreateLogStream",
                            "logs:PutLogEvents",
                            "logs:DescribeLogGroups",
                            "logs:DescribeLogStreams",
                        ],
                        "Resource": [log_group.arn, pulumi.Output.concat(log_group.arn, ":*")],
                    }
                ]
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            name,
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=role.arn,
            tags=tags,
            opts=child,
        )

        self.vpc_id = vpc.id
        self.public_subnet_ids = [s.id for s in public]
        self.private_subnet_ids = [s.id for s in private]
        self.flow_log_group = log_group.name
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
                "azs": self.azs,
                "flow_log_group": self.flow_log_group,
            }
        )
