"""Data role: PostgreSQL and Redis for the app hosts (lab and self-hosted; on AWS, RDS and
ElastiCache do this, and ``roles/data/rds.py`` makes the service's roles there).

Both listen on the host's private address only, speak TLS only with the host's
certificate from the stack's CA, and admit the service's users by password only; the
firewall role already limits 5432 and 6379 to the app hosts. docs/hardening.md (Data role)
maps each control to its test in tests/hosts/test_data.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, urlencode

from pyinfra.api import deploy

from mcpdeploy.credentials import DATABASE, OWNER_ROLE, RUNTIME_ROLE, Credentials, HostTls
from mcpdeploy.settings import Data
from roles.data import postgresql as pg
from roles.data import redis as rd


@deploy("Data host")
def data(
    address: str,
    app_addresses: Sequence[str],
    tls: HostTls,
    credentials: Credentials,
    settings: Data,
) -> None:
    """PostgreSQL and Redis on ``address``, for the hosts at ``app_addresses``."""
    pg.postgresql(
        address=address,
        client_addresses=app_addresses,
        tls=tls,
        database=DATABASE,
        owner=OWNER_ROLE,
        owner_password=credentials.db_owner_password,
        runtime=RUNTIME_ROLE,
        runtime_password=credentials.db_runtime_password,
        max_connections=settings.postgres.max_connections,
        shared_buffers_mb=settings.postgres.shared_buffers_mb,
    )
    rd.redis(
        address=address,
        tls=tls,
        password=credentials.redis_password,
        max_memory_mb=settings.redis.max_memory_mb,
        max_memory_policy=settings.redis.max_memory_policy,
    )


def postgres_url(address: str, port: int, database: str, role: str, password: str,
                 ca_file: str) -> str:  # fmt: skip
    """A libpq URL that verifies the server's certificate and name against ``ca_file``
    (``verify-full``); role and password URL-quoted."""
    query = urlencode({"sslmode": "verify-full", "sslrootcert": ca_file}, safe="/")
    return (
        f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}"
        f"@{address}:{port}/{database}?{query}"
    )


def service_urls(data_address: str, credentials: Credentials, ca_file: str) -> dict[str, str]:
    """The service's connection URLs to a data host, for its environment file.

    ``DATABASE_URL`` (runtime role) and ``MIGRATION_DATABASE_URL`` (owner role, for
    ``migrate``) verify the server's certificate and name (``verify-full``); ``REDIS_URL``
    likewise (``rediss://``, hostname checked). ``ca_file`` is the stack CA's path as the
    service sees it (inside the container). The data host's certificate names
    ``data_address``, so the URLs use the address. Passwords are URL-quoted.
    """
    redis_query = urlencode({"ssl_cert_reqs": "required", "ssl_ca_certs": ca_file}, safe="/")
    return {
        "DATABASE_URL": postgres_url(
            data_address, pg.PORT, DATABASE, RUNTIME_ROLE, credentials.db_runtime_password, ca_file
        ),
        "MIGRATION_DATABASE_URL": postgres_url(
            data_address, pg.PORT, DATABASE, OWNER_ROLE, credentials.db_owner_password, ca_file
        ),
        "REDIS_URL": (
            f"rediss://{rd.SERVICE_USER}:{quote(credentials.redis_password, safe='')}"
            f"@{data_address}:{rd.PORT}/0?{redis_query}"
        ),
        "MCP_RUNTIME_ROLE": RUNTIME_ROLE,
    }
