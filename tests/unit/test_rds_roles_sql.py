"""The RDS role bootstrap (roles/data/rds.py) against a real, throwaway PostgreSQL shaped
like RDS: the database owned by a master user that has CREATEROLE and CREATEDB but is no
superuser, TLS with SCRAM only over TCP. The bootstrap's own files and psql command run
twice; the privileges must be the lab's, and the roles must really work over verify-full."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from pyinfra.api.command import FileUploadCommand

import roles.base.operations as base_operations
from mcpdeploy.credentials import DATABASE, OWNER_ROLE, RUNTIME_ROLE, Credentials, MasterCredentials
from mcpdeploy.lab.pki import LabCA
from roles.data import rds
from roles.data.postgresql import PRIVILEGES_QUERY, WANTED_PRIVILEGES

MASTER = MasterCredentials("railspress_admin", "master:pa\\ss word")
CREDENTIALS = Credentials(
    api_key="unused",
    secret_key_base="unused",
    redis_password="unused",
    db_owner_password="owner:pass/word@1",
    db_runtime_password="runtime pass#2",
    metrics_token="unused",
)


@dataclass
class RdsLike:
    """A running cluster: TCP on 127.0.0.1 (name ``localhost`` in its certificate)."""

    port: int
    root: Path
    ca_file: Path
    bin: Path

    def superuser_psql(self, sql: str, *variables: str) -> str:
        """``sql`` as the bootstrap superuser over the socket (what RDS keeps to itself)."""
        command = [str(self.bin / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
        for variable in variables:
            command += ["-v", variable]
        command += ["-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", DATABASE]
        result = subprocess.run(
            [*command, "-f", "-"], input=sql, capture_output=True, text=True, check=True
        )
        return result.stdout.strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[RdsLike]:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    assert candidates, "PostgreSQL server binaries missing: apt-get install -y postgresql"
    bin_dir = Path(candidates[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="mcpdeploy-rds-like-"))
    as_postgres = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    (root / "ca").mkdir()
    ca = LabCA(root / "ca", "rds-like CA")
    cert, key = ca.issue(root / "ca", "server", ["localhost"])
    tls = root / "tls"
    tls.mkdir()
    shutil.copy(cert, tls / "server.crt")
    shutil.copy(key, tls / "server.key")
    if as_postgres:
        user = pwd.getpwnam("postgres")
        for path in (root, tls, tls / "server.crt", tls / "server.key"):
            os.chown(path, user.pw_uid, user.pw_gid)
    (tls / "server.key").chmod(0o600)
    port = _free_port()
    data = root / "data"

    def run(*command: str) -> None:
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
        "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")  # fmt: skip
    # Like RDS with rds.force_ssl=1: TCP only over TLS, passwords as SCRAM.
    (data / "pg_hba.conf").write_text(
        "local all postgres trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "hostnossl all all 0.0.0.0/0 reject\n"
    )
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on "
        f"-c ssl_cert_file={tls / 'server.crt'} -c ssl_key_file={tls / 'server.key'}"
    )
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", options,
        "start")  # fmt: skip
    server = RdsLike(port, root, ca.cert_path, bin_dir)
    # What `pulumi up` leaves: the database, owned by the master user, who is no superuser.
    for sql in (
        f"CREATE ROLE {MASTER.username} LOGIN CREATEROLE CREATEDB PASSWORD '{MASTER.password}'",
        f"CREATE DATABASE {DATABASE} OWNER {MASTER.username}",
    ):
        subprocess.run(
            [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(root), "-p",
             str(port), "-U", "postgres", "-d", "postgres", "-c", sql],
            check=True, capture_output=True,
        )  # fmt: skip
    try:
        yield server
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def bootstrap(
    server: RdsLike, credentials: Credentials, workdir: Path
) -> subprocess.CompletedProcess:
    """The operation's files written as the host would get them, then its psql command."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base_operations, "host", SimpleNamespace(current_op_global_arguments={}))
        commands = list(
            rds.service_roles._inner(  # type: ignore[attr-defined]
                address="localhost",
                port=server.port,
                database=DATABASE,
                master=lambda: MASTER,
                owner=OWNER_ROLE,
                owner_password=credentials.db_owner_password,
                runtime=RUNTIME_ROLE,
                runtime_password=credentials.db_runtime_password,
            )
        )
    directory = workdir / "bootstrap"
    directory.mkdir(mode=0o700)
    for command in commands:
        if isinstance(command, FileUploadCommand):
            path = directory / Path(command.dest).name
            path.write_bytes(command.src.getvalue())
            path.chmod(0o600)
    psql = rds.bootstrap_command(
        address="localhost",
        port=server.port,
        database=DATABASE,
        master_user=MASTER.username,
        ca_file=str(server.ca_file),
        directory=str(directory),
    )
    assert psql == str(commands[-1]).replace(rds.BOOTSTRAP_DIR, str(directory)).replace(
        rds.RDS_CA_FILE, str(server.ca_file)
    )
    return subprocess.run(["bash", "-c", psql], capture_output=True, text=True, check=False)


def urls(server: RdsLike, credentials: Credentials) -> dict[str, str]:
    return rds.managed_service_urls(
        database_address="localhost",
        database_port=server.port,
        redis_address="unused",
        redis_port=6379,
        database=DATABASE,
        owner=OWNER_ROLE,
        runtime=RUNTIME_ROLE,
        credentials=credentials,
        ca_file=str(server.ca_file),
    )


def privileges(server: RdsLike) -> dict:
    import json

    row = server.superuser_psql(PRIVILEGES_QUERY, f"owner={OWNER_ROLE}", f"runtime={RUNTIME_ROLE}")
    return json.loads(row)


@pytest.fixture(scope="module")
def bootstrapped(postgres: RdsLike, tmp_path_factory: pytest.TempPathFactory) -> RdsLike:
    # A table from before the grants (a restored dump): the runtime role must get it too.
    postgres.superuser_psql(
        f"CREATE TABLE early (id int); ALTER TABLE early OWNER TO {MASTER.username}"
    )
    for attempt in ("first", "second"):
        workdir = tmp_path_factory.mktemp(attempt)
        result = bootstrap(postgres, CREDENTIALS, workdir)
        assert result.returncode == 0, result.stderr
        # Its files are gone whatever happened: the master password does not stay on the host.
        assert not (workdir / "bootstrap").exists()
        for secret in (MASTER.password, CREDENTIALS.db_owner_password):
            assert secret not in result.stdout + result.stderr
    return postgres


def test_bootstrap_twice_leaves_exactly_the_lab_privileges(bootstrapped):
    current = privileges(bootstrapped)
    assert {key: current[key] for key in WANTED_PRIVILEGES} == WANTED_PRIVILEGES


def test_owner_owns_the_database_and_the_roles_are_plain(bootstrapped):
    row = bootstrapped.superuser_psql(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database();"
        f"SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles"
        f" WHERE rolname IN ('{OWNER_ROLE}', '{RUNTIME_ROLE}') ORDER BY rolname"
    )
    assert row.splitlines() == [
        OWNER_ROLE,
        f"{RUNTIME_ROLE}|f|f|f|t",
        f"{OWNER_ROLE}|f|f|f|t",
    ]


def test_roles_log_in_over_verify_full_and_runtime_gets_dml_only(bootstrapped):
    service = urls(bootstrapped, CREDENTIALS)
    with psycopg.connect(service["MIGRATION_DATABASE_URL"], autocommit=True) as owner:
        owner.execute("CREATE TABLE IF NOT EXISTS later (id serial PRIMARY KEY, v text)")
    with psycopg.connect(service["DATABASE_URL"], autocommit=True) as runtime:
        assert runtime.info.pgconn.ssl_in_use
        runtime.execute("INSERT INTO later (v) VALUES ('x')")
        runtime.execute("DELETE FROM later")
        runtime.execute("SELECT count(*) FROM early")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            runtime.execute("CREATE TABLE nope (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            runtime.execute("DROP TABLE later")


def test_a_wrong_password_is_refused(bootstrapped):
    wrong = Credentials(**{**CREDENTIALS.__dict__, "db_runtime_password": "not-it"})
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(urls(bootstrapped, wrong)["DATABASE_URL"]).close()


def test_a_rotated_password_takes_effect_on_the_next_deploy(bootstrapped, tmp_path):
    rotated = Credentials(**{**CREDENTIALS.__dict__, "db_runtime_password": "rotated-" + "r" * 30})
    try:
        assert bootstrap(bootstrapped, rotated, tmp_path).returncode == 0
        psycopg.connect(urls(bootstrapped, rotated)["DATABASE_URL"]).close()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(urls(bootstrapped, CREDENTIALS)["DATABASE_URL"]).close()
    finally:
        (tmp_path / "again").mkdir()
        assert bootstrap(bootstrapped, CREDENTIALS, tmp_path / "again").returncode == 0


def test_the_server_certificate_is_verified(bootstrapped, tmp_path):
    (tmp_path / "other").mkdir()
    other = LabCA(tmp_path / "other", "another CA")
    service = rds.managed_service_urls(
        database_address="localhost",
        database_port=bootstrapped.port,
        redis_address="unused",
        redis_port=6379,
        database=DATABASE,
        owner=OWNER_ROLE,
        runtime=RUNTIME_ROLE,
        credentials=CREDENTIALS,
        ca_file=str(other.cert_path),
    )
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(service["DATABASE_URL"]).close()
