"""Secrets and TLS material for a deploy, from wherever the stack keeps them.

``deploy.py`` asks here and hands the values to roles as arguments; roles never read files
or environment themselves. Two sources, named by the inventory's ``credentials`` host data:

- ``file`` (the lab and self-hosted stacks): generated once on the operator machine under
  ``/var/lib/mcpdeploy/<stack>/`` (root only, outside git), with a CA that issues each
  host's certificate;
- ``aws`` (the AWS stack): Secrets Manager entries ``/mcpdeploy/<stack>/<name>`` written
  by ``infra/components/secrets.py`` and ``tls.py``, read in memory at deploy time; the
  RDS-managed master secret (:func:`rds_master_credentials`) and the RDS CA bundle
  (:func:`rds_ca_bundle`, public, fetched over HTTPS) likewise.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cryptography import x509

from mcpdeploy.lab.pki import LabCA

STATE_ROOT = Path("/var/lib/mcpdeploy")

# Names of the service's database objects, shared by the data role, the AWS migration step
# (docs/aws.md) and the service's environment.
DATABASE = "railspress_production"
OWNER_ROLE = "railspress_owner"  # owns the schema, runs migrations
RUNTIME_ROLE = "railspress_mcp"  # the service's login: DML only (guide: Database Security)

# Every RDS region's CAs in one bundle (AWS: "Using SSL/TLS to encrypt a connection to a DB
# instance"); the app hosts verify RDS's certificate and name against it (verify-full).
RDS_CA_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"

# Secret names, shared with infra/components/secrets.py.
NAMES = {
    "api_key": "mcp-api-key",
    "secret_key_base": "secret-key-base",
    "redis_password": "redis-auth-token",
    "db_owner_password": "db-owner-password",
    "db_runtime_password": "db-runtime-password",
    # The performance check's own credential for /api/v1/mcp/metrics (MCP_METRICS_TOKEN):
    # never a client key, so rotating the API key cannot lock the check out.
    "metrics_token": "metrics-token",
}


@dataclass(frozen=True, repr=False)
class Credentials:
    """The stack's secrets. ``repr`` shows names only, so a log line never leaks one."""

    api_key: str
    secret_key_base: str
    redis_password: str
    db_owner_password: str
    db_runtime_password: str
    metrics_token: str

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


@dataclass(frozen=True, repr=False)
class MasterCredentials:
    """The RDS master user: used once per deploy to create the service's roles."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"MasterCredentials({self.username}: [secret])"


def rds_master_credentials(secret_arn: str, client: Any | None = None) -> MasterCredentials:
    """The RDS-managed master secret (``databaseMasterSecretArn``: JSON with ``username``
    and ``password``), read in memory; ``client`` defaults to the ARN's region."""
    if client is None:
        import boto3

        client = boto3.client("secretsmanager", region_name=secret_arn.split(":")[3])
    value = json.loads(client.get_secret_value(SecretId=secret_arn)["SecretString"])
    return MasterCredentials(value["username"], value["password"])


def _fetch(url: str) -> str:
    # The operator machine's trust store verifies truststore.pki.rds.amazonaws.com.
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - a fixed https URL
        return response.read().decode()


def check_ca_bundle(pem: str, source: str) -> str:
    """``pem`` if it holds only CA certificates (not an error page, not a leaf)."""
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise ValueError(f"{source}: not a PEM certificate bundle ({exc})") from exc
    for certificate in certificates:
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ValueError(f"{source}: {certificate.subject.rfc4514_string()} is not a CA")
    return pem


@functools.cache
def rds_ca_bundle(fetch: Callable[[str], str] = _fetch) -> str:
    """The RDS global CA bundle (PEM), fetched once per deploy over HTTPS and shipped to
    the app hosts as a file (public data: no secret). A changed bundle (AWS adds CAs
    ahead of a rotation) reaches the hosts with the next deploy."""
    try:
        pem = fetch(RDS_CA_BUNDLE_URL)
    except OSError as exc:
        raise RuntimeError(
            f"cannot fetch the RDS CA bundle from {RDS_CA_BUNDLE_URL}: {exc}; the operator "
            "machine needs HTTPS access to it for a deploy to AWS"
        ) from exc
    return check_ca_bundle(pem, RDS_CA_BUNDLE_URL)


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
