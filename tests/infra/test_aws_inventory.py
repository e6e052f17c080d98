"""hosts/aws.py's logic against moto: EC2 tag discovery, data endpoints, groups, SSH
routes, secrets."""

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
    DataEndpoints,
    InventoryError,
    build_groups,
    endpoints_from_aws,
    endpoints_from_outputs,
    hosts_from_ec2_tags,
    hosts_from_outputs,
    read_secret,
    ssh_config,
)
from mcpdeploy.settings import parse_settings

REGION = "us-east-1"
ENDPOINTS = DataEndpoints(
    "mcpdeploy-prod.abc.us-east-1.rds.amazonaws.com",
    5432,
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1",
    "master.mcpdeploy-prod.abc.use1.cache.amazonaws.com",
)


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
    groups = build_groups(hosts, settings, "prod", tmp_path / "ssh_config", ENDPOINTS)
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
    # deploy.py's app section reads where the data is, and where the ALB connects from.
    assert data["database_address"] == ENDPOINTS.database_address
    assert (data["database_port"], data["redis_port"]) == (5432, 6379)
    assert data["database_master_secret_arn"] == ENDPOINTS.master_secret_arn
    assert data["redis_address"] == ENDPOINTS.redis_address
    assert data["load_balancer_cidrs"] == ["10.40.0.0/16"]  # the default aws.vpcCidr


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


def create_data_stores(stack: str = "prod") -> None:
    """RDS and ElastiCache named as infra/components/database.py and cache.py name them."""
    boto3.client("rds", region_name=REGION).create_db_instance(
        DBInstanceIdentifier=f"mcpdeploy-{stack}",
        Engine="postgres",
        DBInstanceClass="db.t4g.medium",
        DBName="railspress_production",
        MasterUsername="railspress_admin",
        ManageMasterUserPassword=True,
        AllocatedStorage=20,
    )
    boto3.client("elasticache", region_name=REGION).create_replication_group(
        ReplicationGroupId=f"mcpdeploy-{stack}",
        ReplicationGroupDescription="cache",
        Engine="redis",
        CacheNodeType="cache.t4g.small",
        NumCacheClusters=2,
        TransitEncryptionEnabled=True,
        AuthToken="a" * 32,
    )


def test_endpoints_from_stack_outputs():
    outputs = {
        "databaseEndpoint": "mcpdeploy-prod.abc.us-east-1.rds.amazonaws.com:5432",
        "databaseMasterSecretArn": ENDPOINTS.master_secret_arn,
        "redisEndpoint": "master.mcpdeploy-prod.abc.use1.cache.amazonaws.com",
    }
    assert endpoints_from_outputs(outputs, "prod") == ENDPOINTS


def test_outputs_without_endpoints_name_the_fix():
    outputs = {"databaseEndpoint": "db:5432", "hosts": {}}
    with pytest.raises(InventoryError) as error:
        endpoints_from_outputs(outputs, "prod")
    message = str(error.value)
    assert "databaseMasterSecretArn, redisEndpoint" in message
    assert "pulumi up -s prod" in message


def test_endpoints_from_rds_and_elasticache_by_the_stacks_identifiers(aws_env):
    create_data_stores("prod")
    create_data_stores("staging")
    endpoints = endpoints_from_aws(
        boto3.client("rds", region_name=REGION),
        boto3.client("elasticache", region_name=REGION),
        "prod",
    )
    assert endpoints.database_address.startswith("mcpdeploy-prod.")
    assert endpoints.database_port == 5432
    assert endpoints.master_secret_arn.startswith("arn:aws:secretsmanager:us-east-1:")
    assert endpoints.redis_address.startswith("master.mcpdeploy-prod.")
    assert endpoints.redis_port == 6379
    # The master secret is the RDS-managed one: it exists and holds the master user.
    secrets = boto3.client("secretsmanager", region_name=REGION)
    assert (
        "username" in secrets.get_secret_value(SecretId=endpoints.master_secret_arn)["SecretString"]
    )


def test_missing_data_stores_name_the_fix(aws_env):
    with pytest.raises(InventoryError) as error:
        endpoints_from_aws(
            boto3.client("rds", region_name=REGION),
            boto3.client("elasticache", region_name=REGION),
            "prod",
        )
    message = str(error.value)
    assert "mcpdeploy-prod" in message and "pulumi up -s prod" in message


def test_inventory_without_pulumi_cli_discovers_by_tags(aws_env, tmp_path, monkeypatch):
    root = write_project(tmp_path / "project", copy.deepcopy(PROD_LIKE))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MCPDEPLOY_STACK", "prod")
    monkeypatch.setattr(aws_inventory.shutil, "which", lambda _: None)
    ec2 = boto3.client("ec2", region_name=REGION)
    launch(ec2, {"Project": "mcpdeploy", "Stack": "prod", "Name": "blue1", "Color": "blue"})
    create_data_stores()
    groups = aws_inventory.aws_groups(root=root)
    assert [n for n, _ in groups["app_blue"]] == ["blue1"]
    assert groups["app_blue"][0][1]["redis_address"].startswith("master.mcpdeploy-prod.")
    assert (
        (tmp_path / "cache" / "mcpdeploy" / "prod" / "ssh_config")
        .read_text()
        .startswith("Host blue1 i-")
    )


def test_inventory_with_pulumi_cli_reads_hosts_and_endpoints_from_outputs(tmp_path, monkeypatch):
    root = write_project(tmp_path / "project", copy.deepcopy(PROD_LIKE))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(aws_inventory.shutil, "which", lambda _: "/usr/bin/pulumi")
    outputs = {
        "hosts": {"green": [{"name": "green1", "id": "i-0g1", "address": "10.40.160.10"}]},
        "databaseEndpoint": "db.example:5433",
        "databaseMasterSecretArn": ENDPOINTS.master_secret_arn,
        "redisEndpoint": "cache.example",
    }
    monkeypatch.setattr(aws_inventory, "stack_outputs", lambda stack: outputs)
    groups = aws_inventory.aws_groups("prod", root=root)
    _, data = groups["app_green"][0]
    assert (data["database_address"], data["database_port"]) == ("db.example", 5433)
    assert (data["redis_address"], data["redis_port"]) == ("cache.example", 6379)


def test_secrets_are_read_from_secrets_manager_by_stack_path(aws_env):
    client = boto3.client("secretsmanager", region_name=REGION)
    client.create_secret(Name="/mcpdeploy/prod/mcp-api-key", SecretString="k" * 64)
    assert read_secret("mcp-api-key", "prod", client) == "k" * 64
