"""Hosts: the app hosts of each color, private, reachable through SSM or a jump host."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mcpdeploy.settings import COLORS

from . import assume_role_policy, policy_json

DEBIAN_OWNER = "136693071363"  # the Debian cloud team's AWS account
DEBIAN_12_AMIS = "debian-12-amd64-*"


@dataclass(frozen=True, kw_only=True)
class HostsArgs:
    """``per_color`` hosts of each color, spread over ``subnet_ids`` (one per AZ).

    The instance role may read ``secret_arns``, pull from ``repository_arn`` and put
    into ``backup_bucket_arn`` (encrypting with ``backup_key_arn``); nothing more.
    """

    per_color: int
    instance_type: str
    root_volume_gb: int
    subnet_ids: list[pulumi.Output[str]]
    security_group_id: pulumi.Input[str]
    target_group_arns: dict[str, pulumi.Output[str]]
    ssh_public_key: str
    secret_arns: list[pulumi.Input[str]]
    repository_arn: pulumi.Input[str]
    backup_bucket_arn: pulumi.Input[str]
    backup_key_arn: pulumi.Input[str]
    tags: dict[str, str]


class Hosts(pulumi.ComponentResource):
    """EC2 instances per color from the latest official Debian 12 AMI: IMDSv2 only,
    encrypted gp3 root, no public address, tagged ``Project``/``Stack``/``Color``/
    ``Role``, each registered to its color's target group on 443. ``pyinfra
    hosts/aws.py deploy.py`` then makes them app hosts with the same roles as the lab.

    Outputs: ``by_color`` (color → list of ``{"name", "id", "address"}``), ``role_arn``.
    """

    def __init__(
        self, name: str, args: HostsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mcpdeploy:aws:Hosts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        ami = aws.ec2.get_ami(
            owners=[DEBIAN_OWNER],
            most_recent=True,
            filters=[
                aws.ec2.GetAmiFilterArgs(name="name", values=[DEBIAN_12_AMIS]),
                aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"]),
                aws.ec2.GetAmiFilterArgs(name="virtualization-type", values=["hvm"]),
            ],
            opts=pulumi.InvokeOptions(parent=self),
        )
        role = aws.iam.Role(
            name,
            assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
            tags=args.tags,
            opts=child,
        )
        # Session Manager (shell and SSH tunnel) without inbound ports.
        aws.iam.RolePolicyAttachment(
            f"{name}-ssm",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
            opts=child,
        )
        aws.iam.RolePolicy(
            name,
            role=role.id,
            policy=policy_json(
                [
                    {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                    {
                        "Effect": "Allow",
                        "Action": [
                            "ecr:BatchCheckLayerAvailability",
                            "ecr:BatchGetImage",
                            "ecr:GetDownloadUrlForLayer",
                        ],
                        "Resource": args.repository_arn,
                    },
                    {
                        "Effect": "Allow",
                        "Action": "secretsmanager:GetSecretValue",
                        "Resource": args.secret_arns,
                    },
                    {
                        "Effect": "Allow",
                        "Action": "s3:PutObject",
                        "Resource": pulumi.Output.concat(args.backup_bucket_arn, "/*"),
                    },
                    {
                        "Effect": "Allow",
                        "Action": "kms:GenerateDataKey",
                        "Resource": args.backup_key_arn,
                    },
                ]
            ),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(name, role=role.name, tags=args.tags, opts=child)
        key = aws.ec2.KeyPair(name, public_key=args.ssh_public_key, tags=args.tags, opts=child)

        self.by_color: dict[str, list[dict[str, pulumi.Output[str] | str]]] = {}
        for color in COLORS:
            self.by_color[color] = []
            for i in range(args.per_color):
                host = f"{color}{i + 1}"
                instance = aws.ec2.Instance(
                    f"{name}-{host}",
                    ami=ami.id,
                    instance_type=args.instance_type,
                    subnet_id=args.subnet_ids[i % len(args.subnet_ids)],
                    vpc_security_group_ids=[args.security_group_id],
                    associate_public_ip_address=False,
                    iam_instance_profile=profile.name,
                    key_name=key.key_name,
                    metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                        http_endpoint="enabled",
                        http_tokens="required",  # IMDSv2 only
                        # 1 hop: containers on the host cannot reach the instance's credentials.
                        http_put_response_hop_limit=1,
                    ),
                    root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                        volume_type="gp3",
                        volume_size=args.root_volume_gb,
                        encrypted=True,
                        delete_on_termination=True,
                    ),
                    monitoring=True,
                    tags={**args.tags, "Name": host, "Color": color, "Role": "app"},
                    volume_tags={**args.tags, "Name": host, "Color": color, "Role": "app"},
                    opts=child,
                )
                aws.lb.TargetGroupAttachment(
                    f"{name}-{host}",
                    target_group_arn=args.target_group_arns[color],
                    target_id=instance.id,
                    port=443,
                    opts=child,
                )
                self.by_color[color].append(
                    {"name": host, "id": instance.id, "address": instance.private_ip}
                )
        self.role_arn = role.arn
        self.register_outputs({"by_color": self.by_color, "role_arn": self.role_arn})
