"""Secrets and TLS material for a deploy, from wherever the stack keeps them.

``deploy.py`` asks here and hands the values to roles as arguments; roles never read files
or environment themselves. Two sources, named by the inventory's ``credentials`` host data:

- ``file`` (the lab and self-hosted stacks): generated once on the operator machine under
  ``/var/lib/mcpdeploy/<stack>/`` (root only, outside git), with a CA that issues each
  host's certificate;
- ``aws`` (the AWS stack): Secrets Manager entries ``/mcpdeploy/<stack>/<name>`` written
  by ``infra/components/secrets.py`` and ``tls.py``, read in memory at deploy time.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mcpdeploy.lab.pki import LabCA

STATE_ROOT = Path("/var/lib/mcpdeploy")

# Names of the service's database objects, shared by the data role, the AWS migration step
# (docs/aws.md) and the service's environment.
DATABASE = "railspress_production"
OWNER_ROLE = "railspress_owner"  # owns the schema, runs migrations
RUNTIME_ROLE = "railspress_mcp"  # the service's login: DML only (guide: Database Security)

# Secret names, shared with infra/components/secrets.py.
NAMES = {
    "api_key": "mcp-api-key",
    "secret_key_base": "secret-key-base",
    "redis_password": "redis-auth-token",
    "db_owner_password": "db-owner-password",
    "db_runtime_password": "db-runtime-password",
}


@dataclass(frozen=True, repr=False)
class Credentials:
    """The stack's secrets. ``repr`` shows names only, so a log line never leaks one."""

    api_key: str
    secret_key_base: str
    redis_password: str
    db_owner_password: str
    db_runtime_password: str

    def __repr__(self) -> str:
        return f"Credentials({', '.join(f.name for f in fields(self))}: [secret])"


@dataclass(frozen=True, repr=False)
class HostTls:
    """A host's server certificate, its key and the CA that clients verify it with."""

    certificate: str
    key: str
    ca: str

    def __repr__(self) -> str:
        return "HostTls([secret])"


def state_dir(stack: str) -> Path:
    """The operator machine's root-only directory of a file-backed stack."""
    return STATE_ROOT / stack


def _write_private(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value)


def file_credentials(directory: Path) -> Credentials:
    """Read ``directory``'s secrets, generating each missing one once (0600, dir 0700)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    values = {}
    for attr, name in NAMES.items():
        path = directory / name
        if not path.exists():
            _write_private(path, secrets.token_urlsafe(48))
        values[attr] = path.read_text().strip()
    return Credentials(**values)


def file_host_tls(directory: Path, host: str, sans: list[str]) -> HostTls:
    """A certificate for ``sans`` from the stack's own CA in ``directory``."""
    (directory / "certs").mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = LabCA(directory)
    cert, key = ca.issue(directory / "certs", host, sans)
    return HostTls(cert.read_text(), key.read_text(), ca.cert_path.read_text())


def aws_credentials(stack: str, client: Any) -> Credentials:
    """The stack's secrets from Secrets Manager (``client``: a boto3 secretsmanager client)."""
    from mcpdeploy.aws_inventory import read_secret

    return Credentials(**{attr: read_secret(name, stack, client) for attr, name in NAMES.items()})


def aws_host_tls(stack: str, client: Any) -> HostTls:
    """The app hosts' nginx certificate issued by the stack's internal CA (``tls.py``)."""
    from mcpdeploy.aws_inventory import read_secret

    material = json.loads(read_secret("nginx-tls", stack, client))
    return HostTls(material["certificate"], material["private_key"], material["ca"])


def stack_credentials(stack: str, source: str) -> Credentials:
    """The stack's secrets from ``source`` (``file`` or ``aws``)."""
    if source == "aws":
        import boto3

        return aws_credentials(stack, boto3.client("secretsmanager"))
    return file_credentials(state_dir(stack) / "secrets")


def stack_ca(stack: str, source: str) -> str:
    """The CA certificate (PEM) the stack's internal certificates are issued by."""
    if source == "aws":
        import boto3

        return aws_host_tls(stack, boto3.client("secretsmanager")).ca
    return LabCA(state_dir(stack)).cert_path.read_text()


def host_tls(stack: str, source: str, host: str, sans: list[str]) -> HostTls:
    """The TLS material ``host`` serves with, from ``source`` (``file`` or ``aws``)."""
    if source == "aws":
        import boto3

        return aws_host_tls(stack, boto3.client("secretsmanager"))
    return file_host_tls(state_dir(stack), host, sans)
