"""Run deploy.py's operation generation for an AWS-shaped inventory, offline, and print
JSON {host: {"ops": [names], "commands": [shell commands], "uploads": {op name: content}}}
for test_deploy_aws.py (the uploads hold only this harness's fake secrets).

pyinfra's ``@fake`` connector answers facts (a Debian 12 host with nothing installed);
moto stands in for Secrets Manager; the RDS CA bundle is a local CA. Runs in its own
process: pyinfra_cli monkey-patches ssl with gevent on import.
"""

# ruff: noqa: I001 - pyinfra_cli first: it patches ssl with gevent when imported.
from pyinfra_cli.util import load_deploy_file

import json
import os
import sys
import tempfile
from pathlib import Path

import boto3
from moto import mock_aws
from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import FileUploadCommand, StringCommand
from pyinfra.api.connect import connect_all
from pyinfra.context import ctx_host, ctx_inventory, ctx_state

import mcpdeploy.credentials as credentials
from mcpdeploy.aws_inventory import AwsHost, DataEndpoints, build_groups
from mcpdeploy.lab.pki import LabCA
from mcpdeploy.settings import load_settings

DEBIAN = ["/etc/os-release", "ID=debian", 'VERSION_ID="12"', "VERSION_CODENAME=bookworm", "---"]
FAKE = {"-v useradd": ["/usr/sbin/useradd"], "uname -s": ["Linux"], "*-release": DEBIAN}
HOSTS = [
    AwsHost("blue1", "i-1", "10.40.128.10", "blue"),
    AwsHost("blue2", "i-2", "10.40.128.11", "blue"),
    AwsHost("green1", "i-3", "10.40.160.10", "green"),
]


def main(secret_marker: str) -> None:
    """Secrets are ``<name>-<secret_marker>``: the test looks for the marker."""
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
                      AWS_DEFAULT_REGION="us-east-1", PYINFRA_FAKE_DELAY="0",
                      PYINFRA_FAKE_DELAY_JITTER="0")  # fmt: skip
    with mock_aws():
        work = Path(tempfile.mkdtemp())
        ca = LabCA(work)
        cert, key = ca.issue(work, "app", ["mcp.example.com"])
        credentials.rds_ca_bundle = lambda: ca.cert_path.read_text()
        client = boto3.client("secretsmanager")
        for name in (*credentials.NAMES.values(),):
            client.create_secret(
                Name=f"/mcpdeploy/prod/{name}", SecretString=f"{name}-{secret_marker}"
            )
        tls = {"certificate": cert.read_text(), "private_key": key.read_text(),
               "ca": ca.cert_path.read_text()}  # fmt: skip
        client.create_secret(Name="/mcpdeploy/prod/nginx-tls", SecretString=json.dumps(tls))
        master = client.create_secret(
            Name="rds!db-1",
            SecretString=json.dumps(
                {"username": "railspress_admin", "password": f"master-{secret_marker}"}
            ),
        )["ARN"]
        endpoints = DataEndpoints("db.example", 5432, master, "cache.example")
        groups = build_groups(HOSTS, load_settings("prod"), "prod", work / "ssh", endpoints)
        hosts = [(f"@fake/{name}", {**data, "fake_delay": 0, "fake_responses": FAKE})
                 for name, data in groups["app"]]  # fmt: skip
        members = {g: ([f"@fake/{n}" for n, _ in e], {}) for g, e in groups.items() if g != "app"}
        inventory = Inventory((hosts, {}), **members)
        state = State(inventory, Config())
        ctx_state.set(state)
        ctx_inventory.set(inventory)
        connect_all(state)
        load_deploy_file(state, "deploy.py")
        report = {}
        for host in inventory:
            ops, commands, uploads = [], [], {}
            for op_hash in state.get_op_order():
                if op_hash not in state.ops[host]:
                    continue
                name = next(iter(state.op_meta[op_hash].names))
                ops.append(name)
                with ctx_host.use(host):
                    for command in state.ops[host][op_hash].command_generator():
                        if isinstance(command, StringCommand):
                            commands.append(command.get_raw_value())
                        elif isinstance(command, FileUploadCommand) and hasattr(
                            command.src, "getvalue"
                        ):
                            content = command.src.getvalue()
                            uploads[name] = (
                                content.decode() if isinstance(content, bytes) else content
                            )
            report[host.name.removeprefix("@fake/")] = {
                "ops": ops,
                "commands": commands,
                "uploads": uploads,
            }
        print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
