"""Run ``infra/`` under ``pulumi.runtime.set_mocks`` with the real provider types.

Each run gets fresh mocks that record every resource registration (type, name, inputs)
and answer the provider functions the program calls with realistic shapes. The program
is executed from a project directory holding ``Pulumi.yaml`` and a ``Pulumi.<stack>.yaml``
written by the test, exactly as ``pulumi up`` finds them (cwd upward).
"""

from __future__ import annotations

import copy
import os
import runpy
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.settings import get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
ACCOUNT = "123456789012"
REGION = "us-east-1"

PROD_LIKE: dict[str, Any] = {
    "aws:region": REGION,
    "mcpdeploy:domain": "mcp.example.com",
    "mcpdeploy:activeColor": "blue",
    "mcpdeploy:image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mcpdeploy/prod:1.4.2",
    "mcpdeploy:appHostsPerColor": 2,
    "mcpdeploy:adminCidrs": ["203.0.113.0/28"],
    "mcpdeploy:alertWebhook": {"secure": "v1:ciphertext"},
    "mcpdeploy:aws": {
        "hostedZone": "example.com",
        "availabilityZones": 3,
        "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKey ops@example.com",
        "alertEmail": "oncall@example.com",
    },
}


@dataclass
class Registration:
    typ: str
    name: str
    inputs: dict[str, Any]


@dataclass
class Recorder(pulumi.runtime.Mocks):
    """Records resources; answers invokes; fails on an invoke it does not know."""

    resources: list[Registration] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.resources.append(Registration(args.typ, args.name, copy.deepcopy(args.inputs)))
        service = args.typ.split(":")[1].split("/")[0]
        state = {
            **args.inputs,
            "arn": f"arn:aws:{service}:{REGION}:{ACCOUNT}:{args.name}",
            "name": args.inputs.get("name", args.name),
        }
        state.update(_extra_state(args.typ, args.name, args.inputs, len(self.resources)))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        self.calls.append(args.token)
        if args.token not in INVOKES:
            raise NotImplementedError(f"no mock for invoke {args.token}")
        return INVOKES[args.token], []

    def of_type(self, typ: str) -> list[Registration]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Registration:
        found = self.of_type(typ)
        assert len(found) == 1, (typ, [r.name for r in found])
        return found[0]


def _extra_state(typ: str, name: str, inputs: dict, n: int) -> dict[str, Any]:
    if typ == "aws:ec2/instance:Instance":
        return {"privateIp": f"10.40.{128 + n % 64}.{10 + n % 200}"}
    if typ == "aws:acm/certificate:Certificate":
        return {
            "status": "PENDING_VALIDATION",
            "domainValidationOptions": [
                {
                    "domainName": inputs["domainName"],
                    "resourceRecordName": f"_a1b2.{inputs['domainName']}.",
                    "resourceRecordType": "CNAME",
                    "resourceRecordValue": "_c3d4.acm-validations.aws.",
                }
            ],
        }
    if typ == "aws:rds/instance:Instance":
        address = f"{inputs['identifier']}.abc123.{REGION}.rds.amazonaws.com"
        return {
            "address": address,
            "endpoint": f"{address}:5432",
            "port": 5432,
            "masterUserSecrets": [
                {
                    "secretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-1",
                    "secretStatus": "active",
                    "kmsKeyId": "key",
                }
            ],
        }
    if typ == "aws:elasticache/replicationGroup:ReplicationGroup":
        rg = inputs["replicationGroupId"]
        return {
            "primaryEndpointAddress": f"master.{rg}.abc123.use1.cache.amazonaws.com",
            "readerEndpointAddress": f"replica.{rg}.abc123.use1.cache.amazonaws.com",
        }
    if typ == "aws:ecr/repository:Repository":
        return {
            "registryId": ACCOUNT,
            "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{inputs['name']}",
        }
    if typ == "docker:index/image:Image":
        repo = inputs["imageName"].rsplit(":", 1)[0]
        return {"repoDigest": f"{repo}@sha256:{'ab' * 32}"}
    if typ == "aws:lb/loadBalancer:LoadBalancer":
        return {
            "dnsName": f"{name}-123.{REGION}.elb.amazonaws.com",
            "zoneId": "Z35SXDOTRQ7X7K",
            "arnSuffix": f"app/{name}/50dc6c495c0c9188",
        }
    if typ == "aws:lb/targetGroup:TargetGroup":
        return {"arnSuffix": f"targetgroup/{name}/73e2d6bc24d8a067"}
    if typ == "aws:s3/bucket:Bucket":
        return {"bucket": f"{inputs['bucketPrefix']}20261101"}
    if typ == "aws:route53/record:Record":
        return {"fqdn": inputs["name"].rstrip(".")}
    if typ == "random:index/randomPassword:RandomPassword":
        return {"result": "r" * int(inputs["length"])}
    if typ.startswith("tls:index/"):
        return {
            "privateKeyPem": "-----BEGIN PRIVATE KEY-----",
            "certPem": "-----BEGIN CERTIFICATE-----",
            "certRequestPem": "-----BEGIN CERTIFICATE REQUEST-----",
        }
    if typ == "aws:ec2/keyPair:KeyPair":
        return {"keyName": name}
    if typ == "aws:kms/key:Key":
        return {"keyId": f"{name}-key-id"}
    return {}


INVOKES: dict[str, dict[str, Any]] = {
    "aws:index/getAvailabilityZones:getAvailabilityZones": {
        "id": REGION,
        "names": [f"{REGION}a", f"{REGION}b", f"{REGION}c", f"{REGION}d"],
        "zoneIds": ["use1-az1", "use1-az2", "use1-az4", "use1-az6"],
        "groupNames": [REGION],
        "state": "available",
    },
    "aws:ec2/getAmi:getAmi": {
        "id": "ami-0fec2c2e2017f4e7b",
        "imageId": "ami-0fec2c2e2017f4e7b",
        "name": "debian-12-amd64-20261101-2100",
        "ownerId": "136693071363",
        "architecture": "x86_64",
        "virtualizationType": "hvm",
        "rootDeviceName": "/dev/xvda",
    },
    "aws:elb/getServiceAccount:getServiceAccount": {
        "id": "127311923021",
        "arn": "arn:aws:iam::127311923021:root",
    },
    "aws:route53/getZone:getZone": {
        "id": "Z0123456789ABCDEFGHIJ",
        "zoneId": "Z0123456789ABCDEFGHIJ",
        "name": "example.com",
        "privateZone": False,
    },
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": {
        "id": REGION,
        "userName": "AWS",
        "password": "ecr-token",
        "authorizationToken": "QVdTOmVjci10b2tlbg==",
        "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com",
        "expiresAt": "2026-11-26T09:00:00Z",
    },
}


@dataclass
class Run:
    mocks: Recorder
    outputs: dict[str, Any]


def write_project(directory: Path, config: dict[str, Any], stack: str = "prod") -> Path:
    """A project directory as a user has it: Pulumi.yaml and the stack's settings."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Pulumi.yaml", directory / "Pulumi.yaml")
    (directory / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return directory


def run_program(directory: Path, stack: str = "prod", secrets: dict[str, str] | None = None) -> Run:
    """Run infra/__main__.py for ``stack`` from ``directory`` under fresh mocks."""
    mocks = Recorder()
    pulumi.runtime.set_mocks(mocks, project="mcpdeploy", stack=stack, preview=False)
    secrets = secrets if secrets is not None else {"mcpdeploy:alertWebhook": "https://x.test/a"}
    pulumi.runtime.set_all_config(dict(secrets), secret_keys=list(secrets))
    outputs: dict[str, Any] = {}

    def program() -> None:
        runpy.run_path(str(INFRA), run_name="__main__")
        exported = get_root_resource().outputs
        outputs.update(_sync_await(pulumi.Output.from_input(exported).future()))

    cwd = Path.cwd()
    os.chdir(directory)
    try:
        _sync_await(run_pulumi_func(program))
    finally:
        os.chdir(cwd)
    return Run(mocks, outputs)
