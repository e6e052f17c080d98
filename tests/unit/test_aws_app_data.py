"""The AWS app hosts' data: URLs to RDS and ElastiCache, the one-shot role bootstrap's
commands, private uploads under sudo, the load balancer in the firewall, the RDS CA bundle.
No host and no network: the real libraries parse what the service would be given."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from psycopg.conninfo import conninfo_to_dict
from pyinfra.api.command import FileUploadCommand
from redis.connection import parse_url

import roles.base.operations as base_operations
from mcpdeploy.credentials import (
    DATABASE,
    OWNER_ROLE,
    RUNTIME_ROLE,
    Credentials,
    MasterCredentials,
    check_ca_bundle,
    rds_ca_bundle,
)
from mcpdeploy.lab.pki import LabCA
from mcpdeploy.settings import parse_settings
from roles.app import CONTAINER_CA_FILE, env_file_text, service_environment
from roles.data import rds
from roles.firewall import firewall_rules

CREDENTIALS = Credentials(
    api_key="api-key-" + "k" * 40,
    secret_key_base="skb-" + "s" * 60,
    redis_password="redis/token:with+odd@chars",
    db_owner_password="owner:pass/word@1",
    db_runtime_password="runtime pass#2",
    metrics_token="metrics-token-" + "m" * 40,
)
MASTER = MasterCredentials("railspress_admin", "master:pa\\ss")
SECRETS = [
    CREDENTIALS.api_key,
    CREDENTIALS.secret_key_base,
    CREDENTIALS.redis_password,
    CREDENTIALS.db_owner_password,
    CREDENTIALS.db_runtime_password,
    CREDENTIALS.metrics_token,
    MASTER.password,
]
RDS_ADDRESS = "mcpdeploy-prod.abc.us-east-1.rds.amazonaws.com"
REDIS_ADDRESS = "master.mcpdeploy-prod.abc.use1.cache.amazonaws.com"


def aws_urls() -> dict[str, str]:
    return rds.managed_service_urls(
        database_address=RDS_ADDRESS,
        database_port=5432,
        redis_address=REDIS_ADDRESS,
        redis_port=6379,
        database=DATABASE,
        owner=OWNER_ROLE,
        runtime=RUNTIME_ROLE,
        credentials=CREDENTIALS,
        ca_file=CONTAINER_CA_FILE,
    )


def test_database_urls_verify_rds_fully_against_the_mounted_bundle():
    urls = aws_urls()
    runtime = conninfo_to_dict(urls["DATABASE_URL"])
    owner = conninfo_to_dict(urls["MIGRATION_DATABASE_URL"])
    for parsed in (runtime, owner):
        assert parsed["host"] == RDS_ADDRESS and parsed["port"] == "5432"
        assert parsed["dbname"] == DATABASE
        assert parsed["sslmode"] == "verify-full"
        assert parsed["sslrootcert"] == CONTAINER_CA_FILE
    assert (runtime["user"], runtime["password"]) == (
        RUNTIME_ROLE, CREDENTIALS.db_runtime_password,
    )  # fmt: skip
    assert (owner["user"], owner["password"]) == (OWNER_ROLE, CREDENTIALS.db_owner_password)
    assert urls["MCP_RUNTIME_ROLE"] == RUNTIME_ROLE


def test_redis_url_is_tls_with_the_auth_token_and_checks_the_certificate():
    url = aws_urls()["REDIS_URL"]
    assert urlsplit(url).scheme == "rediss"
    parsed = parse_url(url)
    assert parsed["host"] == REDIS_ADDRESS and parsed["port"] == 6379
    # ElastiCache AUTH: the token alone, as the default user.
    assert parsed["password"] == CREDENTIALS.redis_password and "username" not in parsed
    assert parsed["ssl_cert_reqs"] == "required" and parsed["ssl_check_hostname"] is True
    # The image's trust store verifies ElastiCache (Amazon's public roots), not the RDS file.
    assert "ssl_ca_certs" not in parse_qs(urlsplit(url).query)


def test_aws_urls_have_the_lab_shape():
    from roles.data import service_urls

    assert set(aws_urls()) == set(service_urls("172.30.77.20", CREDENTIALS, CONTAINER_CA_FILE))


def test_service_environment_on_aws_holds_the_runtime_role_only():
    settings = parse_settings(
        {
            "config": {
                "mcpdeploy:domain": "mcp.example.com",
                "mcpdeploy:activeColor": "blue",
                "mcpdeploy:image": "registry.example.com/railspress/mcp:1.4.2",
                "mcpdeploy:adminCidrs": ["203.0.113.0/24"],
            }
        }
    )
    urls = aws_urls()
    environment = service_environment(
        credentials=CREDENTIALS,
        urls=urls,
        trusted_proxy=settings.app.docker_bridge.ip,
        workers=2,
        stop_timeout_seconds=30,
        settings=settings,
    )
    assert environment["DATABASE_URL"] == urls["DATABASE_URL"]
    assert environment["REDIS_URL"] == urls["REDIS_URL"]
    assert CREDENTIALS.db_owner_password not in env_file_text(environment)
    # --env-file reads each line verbatim: the URLs survive it unchanged.
    lines = dict(line.split("=", 1) for line in env_file_text(environment).splitlines())
    assert conninfo_to_dict(lines["DATABASE_URL"])["password"] == CREDENTIALS.db_runtime_password


@pytest.fixture
def on_host(monkeypatch):
    """The pyinfra host as an operation sees it: with or without sudo."""

    def use(sudo: bool) -> None:
        fake = SimpleNamespace(current_op_global_arguments={"_sudo": sudo})
        monkeypatch.setattr(base_operations, "host", fake)

    return use


def bootstrap_commands() -> list[object]:
    return list(
        rds.service_roles._inner(  # type: ignore[attr-defined]
            address=RDS_ADDRESS,
            port=5432,
            database=DATABASE,
            master=lambda: MASTER,
            owner=OWNER_ROLE,
            owner_password=CREDENTIALS.db_owner_password,
            runtime=RUNTIME_ROLE,
            runtime_password=CREDENTIALS.db_runtime_password,
        )
    )


def uploads(commands: list[object]) -> dict[str, str]:
    return {c.dest: c.src.getvalue().decode() for c in commands if isinstance(c, FileUploadCommand)}


@pytest.mark.parametrize("sudo", [False, True])
def test_role_bootstrap_puts_no_secret_on_a_command_line(on_host, sudo):
    on_host(sudo)
    commands = bootstrap_commands()
    shell = [str(c) for c in commands if isinstance(c, str)]
    for secret in SECRETS:
        assert not any(secret in line for line in shell)
    # The passwords reach PostgreSQL as SCRAM verifiers only; the master's in a pgpass file.
    files = uploads(commands)
    assert set(files) == {f"{rds.BOOTSTRAP_DIR}/pgpass", f"{rds.BOOTSTRAP_DIR}/roles.sql"}
    sql = files[f"{rds.BOOTSTRAP_DIR}/roles.sql"]
    assert CREDENTIALS.db_owner_password not in sql and "SCRAM-SHA-256$" in sql
    assert files[f"{rds.BOOTSTRAP_DIR}/pgpass"] == (
        f"{RDS_ADDRESS}:5432:{DATABASE}:railspress_admin:master\\:pa\\\\ss\n"
    )


@pytest.mark.parametrize("sudo", [False, True])
def test_role_bootstrap_files_are_root_only_and_removed_by_the_same_command(on_host, sudo):
    on_host(sudo)
    commands = bootstrap_commands()
    shell = [c for c in commands if isinstance(c, str)]
    assert shell[0] == f"rm -rf {rds.BOOTSTRAP_DIR} && install -d -o root -g root -m 700 " + (
        rds.BOOTSTRAP_DIR
    )
    for path in uploads(commands):
        made = f"install -o root -g root -m 600 /dev/null {path}"
        # Each file exists empty, 0600 root, before any byte is uploaded into it.
        assert commands.index(made) < next(
            i for i, c in enumerate(commands) if isinstance(c, FileUploadCommand) and c.dest == path
        )
    psql = shell[-1]
    assert "sslmode=verify-full" in psql and f"sslrootcert={rds.RDS_CA_FILE}" in psql
    assert "--single-transaction" in psql and psql.endswith(
        f"rm -rf {rds.BOOTSTRAP_DIR}; exit $status"
    )


def test_upload_without_sudo_writes_the_prepared_file_itself(on_host):
    on_host(False)
    (upload,) = base_operations.upload_into(b"secret", "/etc/x/.env.new")
    assert isinstance(upload, FileUploadCommand)
    assert upload.dest == upload.remote_temp_filename == "/etc/x/.env.new"


def test_upload_with_sudo_stages_in_a_file_private_to_the_ssh_user(on_host):
    # SFTP writes as the SSH user: pyinfra's own staging file would take SFTP's default mode.
    on_host(True)
    prepare, upload = base_operations.upload_into(b"secret", "/etc/x/.env.new")
    stage = upload.remote_temp_filename
    assert stage.startswith("/tmp/.mcpdeploy-upload-") and upload.dest == "/etc/x/.env.new"
    assert prepare == f'rm -f {stage} && install -o "$SUDO_USER" -m 600 /dev/null {stage}'


def test_app_hosts_on_aws_open_https_to_the_load_balancers_network():
    admins = [ipaddress.ip_network("203.0.113.0/28")]
    rules = firewall_rules("app", admin_cidrs=admins, load_balancer_cidrs=["10.40.0.0/16"])
    https = [rule for rule in rules if rule.port == 443]
    assert [str(rule.source) for rule in https] == ["10.40.0.0/16"]
    assert https[0].ufw() == (
        "allow from 10.40.0.0/16 to any port 443 proto tcp comment 'https from load balancer'"
    )


def test_a_data_host_ignores_load_balancer_networks():
    admins = [ipaddress.ip_network("203.0.113.0/28")]
    rules = firewall_rules("data", admin_cidrs=admins, load_balancer_cidrs=["10.40.0.0/16"])
    assert 443 not in {rule.port for rule in rules}


def test_rds_bundle_is_fetched_once_and_must_hold_only_ca_certificates(tmp_path):
    (tmp_path / "ca").mkdir()
    ca = LabCA(tmp_path / "ca")
    bundle = ca.cert_path.read_text()
    calls = []

    def fetch(url: str) -> str:
        calls.append(url)
        return bundle

    assert rds_ca_bundle(fetch) == bundle and rds_ca_bundle(fetch) == bundle
    assert calls == ["https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"]
    leaf, _ = ca.issue(tmp_path / "ca", "db", ["db.example"])
    with pytest.raises(ValueError, match="is not a CA"):
        check_ca_bundle(leaf.read_text(), "bundle")
    with pytest.raises(ValueError, match="not a PEM certificate bundle"):
        check_ca_bundle("<html>captive portal</html>", "bundle")
