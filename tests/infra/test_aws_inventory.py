"""hosts/aws.py's logic against moto: EC2 tag discovery, groups, SSH routes, secrets."""

from __future__ import annotations

import copy
import subprocess

import boto3
import pytest
from moto import mock_aws
from pulumi_harness import PROD_LIKE, write_project

from mcpdeploy import aws_inventory
from mcpdeploy.aws_inventory import (
    AwsHost,
    build_groups,
    hosts_from_ec2_tags,
    hosts_from_outputs,
    read_secret,
    ssh_config,
)
from mcpdeploy.settings import parse_settings

REGION = "us-east-1"


@pytest.fixture
def aws_env(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def launch(ec2, tags: dict[str, str], state: str = "running") -> str:
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.128.0/19")["Subnet"]["SubnetId"]
    instance = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )["Instances"][0]["InstanceId"]
    if state == "stopped":
        ec2.stop_instances(InstanceIds=[instance])
    return instance


def test_tag_discovery_finds_only_this_stacks_running_hosts(aws_env):
    ec2 = boto3.client("ec2", region_name=REGION)
    base = {"Project": "mcpdeploy", "Stack": "prod", "Role": "app"}
    blue = launch(ec2, {**base, "Name": "blue1", "Color": "blue"})
    green = launch(ec2, {**base, "Name": "green1", "Color": "green"})
    launch(ec2, {**base, "Name": "green2", "Color": "green"}, state="stopped")
    launch(ec2, {**base, "Stack": "staging", "Name": "blue1", "Color": "blue"})
    launch(ec2, {"Project": "other", "Stack": "prod", "Name": "x", "Color": "blue"})
    hosts = hosts_from_ec2_tags(ec2, "prod")
    assert [(h.name, h.instance_id, h.color) for h in hosts] == [
        ("blue1", blue, "blue"),
        ("green1", green, "green"),
    ]
    assert all(h.address.startswith("10.40.") for h in hosts)


def test_stack_outputs_give_the_same_hosts():
    outputs = {"hosts": {"blue": [{"name": "blue1", "id": "i-1", "address": "10.40.128.10"}]}}
    assert hosts_from_outputs(outputs) == [AwsHost("blue1", "i-1", "10.40.128.10", "blue")]


def test_groups_follow_the_lab_inventory_contract(tmp_path):
    settings = parse_settings({"config": PROD_LIKE})
    hosts = [
        AwsHost("blue1", "i-0b1", "10.40.128.10", "blue"),
        AwsHost("green1", "i-0g1", "10.40.160.10", "green"),
    ]
    groups = build_groups(hosts, settings, "prod", tmp_path / "ssh_config")
    assert set(groups) == {"edge", "app", "app_blue", "app_green", "data"}
    assert [n for n, _ in groups["app"]] == ["blue1", "green1"]
    assert [n for n, _ in groups["app_green"]] == ["green1"]
    _, data = groups["app_blue"][0]
    assert {"role", "color", "address", "stack", "deploy_authorized_keys", "ssh_user"} <= set(data)
    assert (data["role"], data["color"], data["address"], data["stack"]) == (
        "app", "blue", "10.40.128.10", "prod",
    )  # fmt: skip
    assert data["ssh_hostname"] == "i-0b1"  # SSM sessions target the instance id
    assert data["ssh_user"] == "admin" and data["_sudo"] is True  # the AMI user, via sudo
    assert data["credentials"] == "aws"
    assert data["deploy_authorized_keys"] == [PROD_LIKE["mcpdeploy:aws"]["sshPublicKey"]]


def resolved(config: str, name: str, tmp_path) -> dict[str, str]:
    """What ssh itself makes of ``ssh <name>`` with ``config`` (``ssh -G``)."""
    path = tmp_path / "ssh_config"
    path.write_text(config)
    out = subprocess.run(
        ["ssh", "-G", "-F", str(path), name], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_ssh_goes_through_ssm_or_the_jump_host(tmp_path):
    hosts = [AwsHost("blue1", "i-0b1", "10.40.128.10", "blue")]
    ssm = ssh_config(hosts, parse_settings({"config": PROD_LIKE}), REGION)
    # pyinfra dials the instance id, mcpdeploy release and testinfra the inventory name.
    for name in ("i-0b1", "blue1"):
        seen = resolved(ssm, name, tmp_path)
        assert (seen["hostname"], seen["user"]) == ("i-0b1", "admin")
        # %h is the hostname above: the session goes to the instance.
        assert seen["proxycommand"].startswith("aws ssm start-session --target %h ")
        assert "AWS-StartSSHSession" in seen["proxycommand"] and REGION in seen["proxycommand"]
    config = copy.deepcopy(PROD_LIKE)
    config["mcpdeploy:aws"].update(access="bastion", bastion="ops@jump.example.com")
    jump = ssh_config(hosts, parse_settings({"config": config}), REGION)
    for name in ("10.40.128.10", "blue1"):
        seen = resolved(jump, name, tmp_path)
        assert (seen["hostname"], seen["proxyjump"]) == ("10.40.128.10", "ops@jump.example.com")


def test_inventory_without_pulumi_cli_discovers_by_tags(aws_env, tmp_path, monkeypatch):
    root = write_project(tmp_path / "project", copy.deepcopy(PROD_LIKE))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MCPDEPLOY_STACK", "prod")
    monkeypatch.setattr(aws_inventory.shutil, "which", lambda _: None)
    ec2 = boto3.client("ec2", region_name=REGION)
    launch(ec2, {"Project": "mcpdeploy", "Stack": "prod", "Name": "blue1", "Color": "blue"})
    groups = aws_inventory.aws_groups(root=root)
    assert [n for n, _ in groups["app_blue"]] == ["blue1"]
    assert (
        (tmp_path / "cache" / "mcpdeploy" / "prod" / "ssh_config")
        .read_text()
        .startswith("Host blue1 i-")
    )


def test_secrets_are_read_from_secrets_manager_by_stack_path(aws_env):
    client = boto3.client("secretsmanager", region_name=REGION)
    client.create_secret(Name="/mcpdeploy/prod/mcp-api-key", SecretString="k" * 64)
    assert read_secret("mcp-api-key", "prod", client) == "k" * 64
