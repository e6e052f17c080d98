"""Managed data on AWS: RDS PostgreSQL and ElastiCache Redis in place of the data host.

The lab's data role creates the service's database roles and grants on its own server.
On AWS the database exists (``infra/components/database.py``) but those roles do not: the
RDS-managed master user creates them with the same grants, once per deploy, from one app
host (:func:`service_roles`, run with ``_run_once``: the host that reaches it first).
:func:`managed_service_urls` gives the service the same variables as
:func:`roles.data.service_urls` does on the lab.

The RDS certificate is verified against the RDS global CA bundle (``verify-full``): the
operator's deploy fetches it over HTTPS (:func:`mcpdeploy.credentials.rds_ca_bundle`) and
ships it (:func:`rds_client`). ElastiCache's certificate chains to Amazon's public roots,
which the service image's own trust store holds (``ca-certificates``).
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlencode

from pyinfra.api import deploy, operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.operations import apt, files

from mcpdeploy.credentials import Credentials, MasterCredentials
from roles.base.operations import upload_into
from roles.data import postgres_url
from roles.data.postgresql import runtime_grants
from roles.data.scram import scram_verifier

# Where psql on the app hosts (and operators there) find the RDS CA bundle.
RDS_CA_FILE = "/etc/mcpdeploy/rds-ca-bundle.pem"
# The one-shot role bootstrap's files (master password, role verifiers): root only, removed
# by the same command that uses them.
BOOTSTRAP_DIR = "/root/.mcpdeploy-rds-roles"


def managed_service_urls(
    *,
    database_address: str,
    database_port: int,
    redis_address: str,
    redis_port: int,
    database: str,
    owner: str,
    runtime: str,
    credentials: Credentials,
    ca_file: str,
) -> dict[str, str]:
    """The service's connection URLs to RDS and ElastiCache, in the shape of
    :func:`roles.data.service_urls`.

    ``DATABASE_URL`` (``runtime``) and ``MIGRATION_DATABASE_URL`` (``owner``, for
    ``migrate``) use ``verify-full`` against ``ca_file`` (the RDS bundle as the container
    sees it). ``REDIS_URL`` is ``rediss://`` with the AUTH token (ElastiCache's default
    user), the certificate and hostname checked against the image's trust store.
    """

    def database_url(role: str, password: str) -> str:
        return postgres_url(database_address, database_port, database, role, password, ca_file)

    redis_query = urlencode({"ssl_cert_reqs": "required", "ssl_check_hostname": "true"})
    return {
        "DATABASE_URL": database_url(runtime, credentials.db_runtime_password),
        "MIGRATION_DATABASE_URL": database_url(owner, credentials.db_owner_password),
        "REDIS_URL": (
            f"rediss://:{quote(credentials.redis_password, safe='')}"
            f"@{redis_address}:{redis_port}/0?{redis_query}"
        ),
        "MCP_RUNTIME_ROLE": runtime,
    }


def bootstrap_sql(
    *, database: str, owner: str, owner_password: str, runtime: str, runtime_password: str
) -> str:
    """The SQL the RDS master user runs in ``database``: ``owner`` and ``runtime`` log in
    (stored as SCRAM verifiers, never the passwords), ``owner`` owns the database (and so
    schema public, PostgreSQL 15+), ``runtime`` gets the lab's grants. Every statement
    may run again: the file is run as one transaction on every deploy.

    The master becomes a member of ``owner``: PostgreSQL requires it to hand the database
    over and to set ``owner``'s default privileges (AWS: RDS has no superuser).
    """
    roles = {owner: scram_verifier(owner_password), runtime: scram_verifier(runtime_password)}
    lines = [
        # An error never echoes the statement it failed on (some hold verifiers).
        r"\set VERBOSITY terse",
        "SET client_min_messages = warning;",
        *(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') "
            f'THEN CREATE ROLE "{role}" LOGIN; END IF; END $$;'
            for role in roles
        ),
        *(f"ALTER ROLE \"{role}\" LOGIN PASSWORD '{scram}';" for role, scram in roles.items()),
        f'GRANT "{owner}" TO CURRENT_USER;',
        f'ALTER DATABASE "{database}" OWNER TO "{owner}";',
        *(f"{statement};" for statement in runtime_grants(database, owner, runtime)),
    ]
    return "\n".join(lines) + "\n"


def pgpass_line(address: str, port: int, database: str, user: str, password: str) -> str:
    """One ``.pgpass`` line (``:`` and ``\\`` escaped), so no password is on a command line."""

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return ":".join(escape(str(v)) for v in (address, port, database, user, password)) + "\n"


def bootstrap_command(
    *, address: str, port: int, database: str, master_user: str, ca_file: str, directory: str
) -> str:
    """psql as the master user over TLS (``verify-full`` against ``ca_file``) running
    ``directory``/roles.sql in one transaction, password from ``directory``/pgpass; the
    directory is removed whatever the result, and psql's status returned."""
    conninfo = (
        f"host={address} port={port} dbname={database} user={master_user} "
        f"sslmode=verify-full sslrootcert={ca_file} connect_timeout=10"
    )
    q_dir = shlex.quote(directory)
    return (
        f"status=0; PGPASSFILE={q_dir}/pgpass psql -X -q -v ON_ERROR_STOP=1 "
        f"--single-transaction -f {q_dir}/roles.sql {shlex.quote(conninfo)} || status=$?; "
        f"rm -rf {q_dir}; exit $status"
    )


@operation()
def service_roles(
    *,
    address: str,
    port: int,
    database: str,
    master: Callable[[], MasterCredentials],
    owner: str,
    owner_password: str,
    runtime: str,
    runtime_password: str,
    ca_file: str = RDS_CA_FILE,
) -> Iterator[str | FileUploadCommand]:
    """The service's roles and grants on RDS, made by the master user (:func:`bootstrap_sql`).

    ``master`` is asked for the RDS-managed master secret only on the host that runs this
    (call with ``_run_once=True``: once per deploy, not per host). The master password goes
    to a root-only 0600 pgpass file and the verifiers to a 0600 SQL file, in a 0700
    directory that the same command removes; nothing secret is on a command line. The SQL
    is idempotent, and this reports a change on every deploy (the check needs the master).
    """
    credentials = master()
    contents = {
        "pgpass": pgpass_line(address, port, database, credentials.username, credentials.password),
        "roles.sql": bootstrap_sql(
            database=database,
            owner=owner,
            owner_password=owner_password,
            runtime=runtime,
            runtime_password=runtime_password,
        ),
    }
    q_dir = shlex.quote(BOOTSTRAP_DIR)
    # A run cut short leaves the directory behind: start from an empty one.
    yield f"rm -rf {q_dir} && install -d -o root -g root -m 700 {q_dir}"
    for name, content in contents.items():
        path = f"{BOOTSTRAP_DIR}/{name}"
        yield f"install -o root -g root -m 600 /dev/null {shlex.quote(path)}"
        yield from upload_into(content.encode(), path)
    yield bootstrap_command(
        address=address,
        port=port,
        database=database,
        master_user=credentials.username,
        ca_file=ca_file,
        directory=BOOTSTRAP_DIR,
    )


@deploy("RDS client")
def rds_client(ca_bundle: str) -> None:
    """psql and the RDS CA bundle (``ca_bundle``, PEM) at :data:`RDS_CA_FILE` on an app host:
    what :func:`service_roles` needs, and what an operator needs to reach RDS from there."""
    apt.packages(name="Install psql to reach RDS", packages=["postgresql-client"])
    files.put(
        name=f"Install the RDS CA bundle ({RDS_CA_FILE})",
        src=io.StringIO(ca_bundle),
        dest=RDS_CA_FILE,
        user="root",
        group="root",
        mode="644",
    )
