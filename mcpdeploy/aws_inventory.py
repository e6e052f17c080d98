"""pyinfra inventory of an AWS stack: its app hosts, found from stack outputs or EC2 tags.

``hosts/aws.py`` calls :func:`aws_groups`. Hosts have no public address: pyinfra reaches
them over SSH tunnelled through SSM Session Manager (``aws.access: ssm``) or through the
jump host ``aws.bastion`` (``aws.access: bastion``), by way of an ssh_config written to
the operator's cache directory (it holds no secret). Each app host's data also carries
where its data lives (RDS and ElastiCache endpoints, :class:`DataEndpoints`) and the
load balancer's network (the VPC). Secrets stay in Secrets Manager and are read at deploy
time with :func:`read_secret`, in memory only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.exceptions import BotoCoreError, ClientError

from mcpdeploy.settings import COLORS, PROJECT, Settings, SettingsError, load_settings, stack_file

HostEntry = tuple[str, dict[str, Any]]
SSH_USER = "admin"  # the login user of the official Debian AMIs
GROUPS = ("edge", "app", "app_blue", "app_green", "data")
# infra/components/cache.py: the replication group listens here (redisEndpoint has no port).
REDIS_PORT = 6379


class InventoryError(RuntimeError):
    """The stack's hosts or data endpoints cannot be found; the message names the fix."""


@dataclass(frozen=True)
class DataEndpoints:
    """Where an AWS stack's data lives: RDS PostgreSQL and the ElastiCache primary.

    ``master_secret_arn`` is the RDS-managed secret of the master user (used once per
    deploy to create the service's roles, never handed to the service).
    """

    database_address: str
    database_port: int
    master_secret_arn: str
    redis_address: str
    redis_port: int = REDIS_PORT

    def host_data(self) -> dict[str, Any]:
        """The app hosts' inventory data (plain values: pyinfra host data)."""
        return {
            "database_address": self.database_address,
            "database_port": self.database_port,
            "database_master_secret_arn": self.master_secret_arn,
            "redis_address": self.redis_address,
            "redis_port": self.redis_port,
        }


@dataclass(frozen=True)
class AwsHost:
    """One running app host of the stack."""

    name: str
    instance_id: str
    address: str
    color: str
    role: str = "app"


def stack_region(stack: str, root: Path | None = None) -> str:
    """``aws:region`` of ``Pulumi.<stack>.yaml`` (Pulumi's key), else the AWS environment."""
    document = yaml.safe_load(stack_file(stack, root).read_text()) or {}
    region = (document.get("config") or {}).get("aws:region")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise SettingsError(
            f"Pulumi.{stack}.yaml", [("aws:region", "(missing)", "the stack's AWS region")]
        )
    return region


def hosts_from_outputs(outputs: dict[str, Any]) -> list[AwsHost]:
    """Hosts from the ``hosts`` output of ``pulumi stack output --json``."""
    return [
        AwsHost(h["name"], h["id"], h["address"], color)
        for color in COLORS
        for h in outputs.get("hosts", {}).get(color, [])
    ]


def stack_outputs(stack: str) -> dict[str, Any]:
    """Ask the Pulumi CLI for the stack's outputs (the source of truth after `up`).

    ``--show-secrets`` is not passed: nothing the inventory reads is a Pulumi secret.
    """
    result = subprocess.run(
        ["pulumi", "stack", "output", "--json", "-s", stack],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout)


def _split_endpoint(endpoint: str, default_port: int) -> tuple[str, int]:
    address, _, port = endpoint.rpartition(":")
    if address and port.isdigit():
        return address, int(port)
    return endpoint, default_port


def endpoints_from_outputs(outputs: dict[str, Any], stack: str) -> DataEndpoints:
    """The data endpoints from the stack outputs ``databaseEndpoint`` (``host:port``),
    ``databaseMasterSecretArn`` and ``redisEndpoint`` (infra/__main__.py)."""
    keys = ("databaseEndpoint", "databaseMasterSecretArn", "redisEndpoint")
    missing = [key for key in keys if not outputs.get(key)]
    if missing:
        raise InventoryError(
            f"stack {stack}: the outputs lack {', '.join(missing)}; run `pulumi up -s {stack}` "
            "(the stack creates RDS and ElastiCache and exports them)"
        )
    address, port = _split_endpoint(outputs["databaseEndpoint"], 5432)
    redis_address, redis_port = _split_endpoint(outputs["redisEndpoint"], REDIS_PORT)
    return DataEndpoints(
        address, port, outputs["databaseMasterSecretArn"], redis_address, redis_port
    )


def endpoints_from_aws(rds: Any, elasticache: Any, stack: str) -> DataEndpoints:
    """The data endpoints asked of RDS and ElastiCache (boto3 clients) without the Pulumi
    CLI: both are named ``mcpdeploy-<stack>`` by infra/__main__.py (the RDS instance
    identifier, the replication group id)."""
    identifier = f"{PROJECT}-{stack}"
    fix = (
        f"run `pulumi up -s {stack}` first, or check that the AWS credentials and region "
        "are the stack's"
    )
    try:
        instances = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
        groups = elasticache.describe_replication_groups(ReplicationGroupId=identifier)[
            "ReplicationGroups"
        ]
    except (ClientError, BotoCoreError) as exc:
        raise InventoryError(f"stack {stack}: cannot find its data stores: {exc}; {fix}") from exc
    instance = instances[0]
    endpoint = instance.get("Endpoint") or {}
    secret_arn = (instance.get("MasterUserSecret") or {}).get("SecretArn")
    if not endpoint.get("Address") or not secret_arn:
        raise InventoryError(
            f"stack {stack}: RDS instance {identifier} has no endpoint or no RDS-managed "
            f"master secret yet (status {instance.get('DBInstanceStatus')}); wait until it "
            f"is available, or {fix}"
        )
    primary = (groups[0].get("NodeGroups") or [{}])[0].get("PrimaryEndpoint") or {}
    if not primary.get("Address"):
        raise InventoryError(
            f"stack {stack}: ElastiCache replication group {identifier} has no primary "
            f"endpoint yet (status {groups[0].get('Status')}); wait until it is available, "
            f"or {fix}"
        )
    return DataEndpoints(
        endpoint["Address"],
        int(endpoint.get("Port", 5432)),
        secret_arn,
        primary["Address"],
        int(primary.get("Port", REDIS_PORT)),
    )


def hosts_from_ec2_tags(ec2: Any, stack: str) -> list[AwsHost]:
    """Running instances tagged ``Project=mcpdeploy``, ``Stack=<stack>`` (boto3 EC2 client)."""
    filters = [
        {"Name": "tag:Project", "Values": [PROJECT]},
        {"Name": "tag:Stack", "Values": [stack]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ]
    hosts = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                if tags.get("Color") not in COLORS:
                    continue
                hosts.append(
                    AwsHost(
                        name=tags.get("Name", instance["InstanceId"]),
                        instance_id=instance["InstanceId"],
                        address=instance["PrivateIpAddress"],
                        color=tags["Color"],
                        role=tags.get("Role", "app"),
                    )
                )
    return sorted(hosts, key=lambda h: (h.color, h.name))


def ssh_target(host: AwsHost, settings: Settings) -> str:
    """What ssh connects to: the instance id through SSM, the private address via a jump."""
    return host.instance_id if settings.aws.access == "ssm" else host.address


def ssh_config(hosts: list[AwsHost], settings: Settings, region: str) -> str:
    """ssh_config blocks routing each host through SSM Session Manager or the jump host."""
    blocks = []
    for host in hosts:
        if settings.aws.access == "ssm":
            route = (
                "ProxyCommand aws ssm start-session --target %h "
                f"--document-name AWS-StartSSHSession --parameters portNumber=%p --region {region}"
            )
        else:
            route = f"ProxyJump {settings.aws.bastion}"
        # The inventory name too: `ssh <name>` (mcpdeploy release, testinfra) finds the block.
        target = ssh_target(host, settings)
        blocks.append(
            f"Host {host.name} {target}\n    HostName {target}\n    User {SSH_USER}\n    {route}\n"
        )
    return "\n".join(blocks)


def build_groups(
    hosts: list[AwsHost],
    settings: Settings,
    stack: str,
    config_file: Path,
    endpoints: DataEndpoints,
) -> dict[str, list[HostEntry]]:
    """Groups and host data in the contract of ``hosts/lab.py`` (role, color, address,
    stack, deploy_authorized_keys, ssh_*); AWS stacks have no edge or data hosts (the
    ALB, RDS and ElastiCache do those jobs), so those groups are empty. Instead each app
    host knows the data ``endpoints`` and ``load_balancer_cidrs``: the ALB's connections
    come from its subnets, inside the VPC (``aws.vpcCidr``)."""
    keys = [settings.aws.ssh_public_key] if settings.aws.ssh_public_key else []
    groups: dict[str, list[HostEntry]] = {name: [] for name in GROUPS}
    for host in hosts:
        data: dict[str, Any] = {
            "ssh_hostname": ssh_target(host, settings),
            "ssh_user": SSH_USER,
            # The AMI's login user is not root: every operation runs through sudo.
            "_sudo": True,
            "ssh_config_file": str(config_file),
            "role": host.role,
            "color": host.color,
            "address": host.address,
            "stack": stack,
            "deploy_authorized_keys": keys,
            "credentials": "aws",
            "instance_id": host.instance_id,
            "load_balancer_cidrs": [str(settings.aws.vpc_cidr)],
            **endpoints.host_data(),
        }
        if os.environ.get("MCPDEPLOY_SSH_KEY"):
            data["ssh_key"] = os.environ["MCPDEPLOY_SSH_KEY"]
        entry = (host.name, data)
        groups[host.role].append(entry)
        groups[f"app_{host.color}"].append(entry)
    return groups


def aws_groups(stack: str | None = None, root: Path | None = None) -> dict[str, list[HostEntry]]:
    """The inventory of ``stack`` (default: env ``MCPDEPLOY_STACK``, else ``prod``)."""
    stack = stack or os.environ.get("MCPDEPLOY_STACK", "prod")
    settings = load_settings(stack, root)
    region = stack_region(stack, root)
    if shutil.which("pulumi"):
        outputs = stack_outputs(stack)
        hosts = hosts_from_outputs(outputs)
        endpoints = endpoints_from_outputs(outputs, stack)
    else:
        hosts = hosts_from_ec2_tags(boto3.client("ec2", region_name=region), stack)
        endpoints = endpoints_from_aws(
            boto3.client("rds", region_name=region),
            boto3.client("elasticache", region_name=region),
            stack,
        )
    config_file = write_ssh_config(stack, hosts, settings, region)
    return build_groups(hosts, settings, stack, config_file, endpoints)


def write_ssh_config(stack: str, hosts: list[AwsHost], settings: Settings, region: str) -> Path:
    """:func:`ssh_config` written to the operator's cache directory (it holds no secret)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / PROJECT / stack
    cache.mkdir(parents=True, exist_ok=True)
    config_file = cache / "ssh_config"
    config_file.write_text(ssh_config(hosts, settings, region))
    return config_file


def read_secret(name: str, stack: str, client: Any) -> str:
    """The current value of ``/<project>/<stack>/<name>`` from Secrets Manager, returned
    to the caller only: deploys hand it to the host, never to a file on this machine."""
    response = client.get_secret_value(SecretId=f"/{PROJECT}/{stack}/{name}")
    return response["SecretString"]
