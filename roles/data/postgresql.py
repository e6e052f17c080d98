"""PostgreSQL on the data host: TLS and SCRAM only, reachable from the app hosts only.

Guide, Database Security: a dedicated database, an owner role that runs migrations and a
least-privilege runtime role for the service. Debian 12's PostgreSQL 15, cluster ``main``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Sequence
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.operations import apt, files, postgres, systemd
from pyinfra.operations.util import any_changed

from mcpdeploy.credentials import HostTls
from roles.base.operations import install_validated, put_private
from roles.data.scram import scram_verifier, scram_verifies

TEMPLATES = Path(__file__).parent / "templates"
VERSION = "15"
CONFIG_DIR = f"/etc/postgresql/{VERSION}/main"
DATA_DIR = f"/var/lib/postgresql/{VERSION}/main"
SERVER = f"/usr/lib/postgresql/{VERSION}/bin/postgres"
SERVICE = f"postgresql@{VERSION}-main.service"
# Staged candidates must be readable by the postgres user, who alone may run `postgres -C`.
STAGING = f"{CONFIG_DIR}/mcpdeploy-staged"
TLS_DIR = f"{CONFIG_DIR}/tls"
CHECK = "/usr/local/sbin/mcpdeploy-postgres-check"
PORT = 5432


def as_postgres(command: str) -> str:
    """``command`` run as the postgres superuser over the local socket (peer auth).

    From ``/``: postgres may not enter the deploy user's working directory.
    """
    return f"cd / && runuser -u postgres -- {command}"


def psql(database: str, sql: str) -> str:
    """A psql call as postgres that stops at the first error; ``sql`` must hold no secret."""
    return as_postgres(
        f"psql -X -q -At -v ON_ERROR_STOP=1 -d {shlex.quote(database)} -c {shlex.quote(sql)}"
    )


class PostgresPasswordVerifier(FactBase[str | None]):
    """A role's stored SCRAM verifier (``pg_authid.rolpassword``); None without one."""

    def requires_command(self, role: str) -> str:
        """psql comes with the server package."""
        return "psql"

    def command(self, role: str) -> str:
        """Read pg_authid as postgres (``|| true``: no server yet reads as no verifier)."""
        # Role names are mcpdeploy.credentials' fixed identifiers, never user input.
        query = f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"  # noqa: S608
        return f"{psql('postgres', query)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        """The verifier line, if any."""
        return output[0] if output and output[0] else None


# Every privilege the runtime role must have, and must not have, in the service's database.
PRIVILEGES_QUERY = """
SELECT json_build_object(
  'public_connects', EXISTS (
    SELECT 1 FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
    WHERE d.datname = current_database() AND a.grantee = 0),
  'connect', has_database_privilege(:'runtime', current_database(), 'CONNECT'),
  'usage', has_schema_privilege(:'runtime', 'public', 'USAGE'),
  'public_creates', EXISTS (
    SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a
    WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE'),
  'default_tables', (
    SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a
    WHERE d.defaclrole = :'owner'::regrole AND d.defaclnamespace = 'public'::regnamespace
      AND d.defaclobjtype = 'r' AND a.grantee = :'runtime'::regrole
      AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')) = 4,
  'default_sequences', (
    SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a
    WHERE d.defaclrole = :'owner'::regrole AND d.defaclnamespace = 'public'::regnamespace
      AND d.defaclobjtype = 'S' AND a.grantee = :'runtime'::regrole
      AND a.privilege_type IN ('USAGE', 'SELECT')) = 2,
  'tables_without_select', (
    SELECT count(*) FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v')
      AND NOT has_table_privilege(:'runtime', c.oid, 'SELECT')),
  'sequences_without_usage', (
    SELECT count(*) FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace
      AND CASE WHEN c.relkind = 'S' THEN NOT has_sequence_privilege(:'runtime', c.oid, 'USAGE')
          ELSE false END)
)
"""

WANTED_PRIVILEGES = {
    "public_connects": False,  # only the two roles of the service may connect
    "connect": True,
    "usage": True,
    "public_creates": False,  # PostgreSQL 15's default: nobody but the owner creates objects
    "default_tables": True,  # tables later migrations create are covered
    "default_sequences": True,
    "tables_without_select": 0,  # e.g. tables restored from a dump before the grants
    "sequences_without_usage": 0,
}


class RuntimePrivileges(FactBase[dict]):
    """The runtime role's privileges in ``database`` (keys of ``WANTED_PRIVILEGES``)."""

    default = dict

    def requires_command(self, database: str, owner: str, runtime: str) -> str:
        """psql comes with the server package."""
        return "psql"

    def command(self, database: str, owner: str, runtime: str) -> str:
        """One JSON row from the service's database (``{}`` before it exists)."""
        # psql substitutes :'owner' and :'runtime' in a script read from stdin, not in -c.
        variables = f"-v owner={shlex.quote(owner)} -v runtime={shlex.quote(runtime)}"
        return (
            f"cd / && echo {shlex.quote(PRIVILEGES_QUERY)} | runuser -u postgres -- "
            f"psql -X -q -At {variables} -d {shlex.quote(database)} -f - 2>/dev/null || true"
        )

    def process(self, output: list[str]) -> dict:
        """The JSON row."""
        return json.loads(output[0]) if output else {}


@operation()
def role_password(role: str, password: str) -> Iterator[str | FileUploadCommand]:
    """``role`` logs in with ``password``, stored as a SCRAM-SHA-256 verifier.

    Changed only when the stored verifier does not accept ``password``. The ALTER ROLE
    carries a fresh verifier, never the password, and travels as a root-only file fed to
    psql's stdin, so it shows up in no command line, process list or server log.
    """
    if scram_verifies(host.get_fact(PostgresPasswordVerifier, role=role), password):
        host.noop(f"the password of {role} already verifies")
        return
    sql = f"ALTER ROLE \"{role}\" PASSWORD '{scram_verifier(password)}';\n"
    path = f"/root/.mcpdeploy-password-{role}.sql"
    yield FileUploadCommand(StringIO(sql), path)
    yield (
        f"chmod 600 {path}; status=0; "
        f"{as_postgres('psql -X -q -v ON_ERROR_STOP=1 -d postgres')} < {path} || status=$?; "
        f"rm -f {path}; exit $status"
    )


def runtime_grants(database: str, owner: str, runtime: str) -> list[str]:
    """The SQL that gives ``runtime`` exactly the rights of :data:`WANTED_PRIVILEGES` in
    ``database`` (idempotent: each statement may run again). Run by the data host's
    superuser, or on RDS by the master user once it is a member of ``owner``."""
    # Role names are mcpdeploy.credentials' fixed identifiers, never user input.
    grant_tables = (
        "DO $$ DECLARE t regclass; BEGIN"  # noqa: S608
        " FOR t IN SELECT c.oid::regclass FROM pg_class c"
        " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v')"
        f" AND NOT has_table_privilege('{runtime}', c.oid, 'SELECT') LOOP"
        f" EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', t, '{runtime}');"
        " END LOOP; END $$"
    )
    return [
        f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC',
        f'GRANT CONNECT ON DATABASE "{database}" TO "{runtime}"',
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f'GRANT USAGE ON SCHEMA public TO "{runtime}"',
        grant_tables,
        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{runtime}"',
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public'
        f' GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{runtime}"',
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public'
        f' GRANT USAGE, SELECT ON SEQUENCES TO "{runtime}"',
    ]


@operation()
def runtime_privileges(database: str, owner: str, runtime: str) -> Iterator[str]:
    """``runtime`` holds exactly the DML rights of the guide's Database Security grants.

    CONNECT (PUBLIC's revoked), USAGE on schema public but no CREATE, SELECT/INSERT/UPDATE/
    DELETE on tables and USAGE/SELECT on sequences, including those ``owner`` creates
    later (default privileges). Only tables lacking SELECT get the table grant, so the
    service's own narrower grant on ``schema_migrations`` (read-only) is left alone.
    """
    current = host.get_fact(RuntimePrivileges, database=database, owner=owner, runtime=runtime)
    if all(current.get(key) == value for key, value in WANTED_PRIVILEGES.items()):
        host.noop(f"{runtime} already has exactly its privileges in {database}")
        return
    yield psql(database, "; ".join(runtime_grants(database, owner, runtime)))


@deploy("PostgreSQL for the service")
def postgresql(
    address: str,
    client_addresses: Sequence[str],
    tls: HostTls,
    database: str,
    owner: str,
    owner_password: str,
    runtime: str,
    runtime_password: str,
    max_connections: int,
    shared_buffers_mb: int,
) -> None:
    """PostgreSQL 15 on ``address`` only, TLS + SCRAM from ``client_addresses`` only.

    ``database`` is owned by ``owner`` (migrations); ``runtime`` (the service) gets DML only.
    Every config file is checked by PostgreSQL itself before it goes live; a change reloads
    the server, a change of a restart-only setting restarts it.
    """
    apt.packages(name="Install PostgreSQL 15", packages=["postgresql"])
    files.directory(
        name="Create the staging directory for PostgreSQL's config",
        path=STAGING,
        user="postgres",
        group="postgres",
        mode="700",
    )
    files.template(
        name="Install the PostgreSQL config check",
        src=str(TEMPLATES / "postgres-check.sh.j2"),
        dest=CHECK,
        mode="755",
        server=SERVER,
        data_dir=DATA_DIR,
        config_file=f"{CONFIG_DIR}/postgresql.conf",
    )

    files.directory(
        name="Create PostgreSQL's TLS directory",
        path=TLS_DIR,
        user="postgres",
        group="postgres",
        mode="700",
    )
    certificate = files.put(
        name="Install the data host's certificate for PostgreSQL",
        src=StringIO(tls.certificate),
        dest=f"{TLS_DIR}/server.crt",
        user="postgres",
        group="postgres",
        mode="644",
    )
    # PostgreSQL refuses a key others can read.
    key = put_private(
        name="Install the data host's private key for PostgreSQL (postgres only, never shown)",
        content=tls.key,
        dest=f"{TLS_DIR}/server.key",
        user="postgres",
        group="postgres",
    )

    # Settings PostgreSQL applies on reload and those it applies only at a restart live in
    # separate drop-ins, so a change restarts the server only when it has to.
    live = {}
    for template, description in (
        ("postgresql-reload.conf.j2", "TLS, SCRAM and logging settings"),
        ("postgresql-restart.conf.j2", "listen address and memory settings"),
    ):
        conf = template.replace(".j2", "").replace("postgresql-", "")
        staged = f"{STAGING}/{conf}"
        files.template(
            name=f"Stage PostgreSQL's {description}",
            src=str(TEMPLATES / template),
            dest=staged,
            user="postgres",
            group="postgres",
            mode="600",
            address=address,
            tls_dir=TLS_DIR,
            max_connections=max_connections,
            shared_buffers_mb=shared_buffers_mb,
        )
        live[conf] = install_validated(
            name=f"Install PostgreSQL's {description} once postgres -C accepts them",
            src=staged,
            dest=f"{CONFIG_DIR}/conf.d/60-mcpdeploy-{conf}",
            validate=as_postgres(f"{SERVER} -D {DATA_DIR} --config-file={{path}} -C port"),
            validate_installed=CHECK,
        )
    files.template(
        name="Stage pg_hba.conf: TLS + SCRAM from the app hosts only",
        src=str(TEMPLATES / "pg_hba.conf.j2"),
        dest=f"{STAGING}/pg_hba.conf",
        user="postgres",
        group="postgres",
        mode="600",
        database=database,
        roles=[owner, runtime],
        client_addresses=list(client_addresses),
    )
    hba = install_validated(
        name="Install pg_hba.conf once pg_hba_file_rules shows no error",
        src=f"{STAGING}/pg_hba.conf",
        dest=f"{CONFIG_DIR}/pg_hba.conf",
        # pg_hba.conf is only parsed live: the installed file is checked, reverted on error.
        validate="test -s {path}",
        validate_installed=CHECK,
    )

    systemd.service(
        name="Run PostgreSQL now and at boot", service=SERVICE, running=True, enabled=True
    )
    systemd.service(
        name="Reload PostgreSQL to apply new settings, pg_hba.conf or certificate",
        service=SERVICE,
        reloaded=True,
        _if=any_changed(live["reload.conf"], hba, certificate, key),
    )
    systemd.service(
        name="Restart PostgreSQL to apply a changed listen address or memory setting",
        service=SERVICE,
        restarted=True,
        _if=live["restart.conf"].did_change,
    )

    for role, password in ((owner, owner_password), (runtime, runtime_password)):
        postgres.role(
            name=f"Create the login role {role}: no superuser, no CREATEDB, no CREATEROLE",
            role=role,
            login=True,
            _sudo=True,
            _sudo_user="postgres",
        )
        role_password(name=f"Set the password of {role} (SCRAM verifier only)", role=role,
                      password=password)  # fmt: skip
    postgres.database(
        name=f"Create the database {database}, owned by {owner}",
        database=database,
        owner=owner,
        template="template0",
        encoding="UTF8",
        _sudo=True,
        _sudo_user="postgres",
    )
    runtime_privileges(
        name=f"Grant {runtime} DML only in {database}, for tables migrations create later too",
        database=database,
        owner=owner,
        runtime=runtime,
    )
