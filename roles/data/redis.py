"""Redis on the data host: TLS only, ACL users only, reachable from the app hosts only.

Debian 12's redis-server 7.0 (built with TLS). The service's user may run exactly the
commands the service sends, on its own key namespace; an admin user, whose password is
generated on the data host and never leaves it, is for operators on that host.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.api.command import StringCommand
from pyinfra.facts.files import File, Sha256File
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from mcpdeploy.credentials import HostTls
from roles.base.operations import install_validated, put_private

TEMPLATES = Path(__file__).parent / "templates"
PORT = 6379
# /etc/redis is 2770 redis:redis (Debian): nothing below it is reachable by other users.
CONFIG = "/etc/redis/redis.conf"
ACL_FILE = "/etc/redis/users.acl"
TLS_DIR = "/etc/redis/tls"
STAGING = "/etc/redis/mcpdeploy-staged"
ADMIN_PASSWORD = "/etc/redis/admin.password"  # noqa: S105 - a path
CHECK = "/usr/local/sbin/mcpdeploy-redis-check"
SERVICE = "redis-server.service"

SERVICE_USER = "mcp"
# app_image/mcp_service/cache.py's NAMESPACE: the service touches no other key.
KEY_PATTERN = "railspress:mcp:*"
# What the service sends (cache.py: GET, SET EX, INCR; ratelimit.py: INCR, EXPIRE NX;
# app.py: PING for readiness and health checks). AUTH needs no grant. Everything else
# (FLUSHALL, FLUSHDB, CONFIG, DEBUG, SHUTDOWN, KEYS, MODULE, EVAL...) stays denied by -@all.
# redis-py sends INCR as INCRBY; the rest is what cache.py and ratelimit.py call.
SERVICE_COMMANDS = ("get", "set", "incr", "incrby", "expire", "ping")


@operation()
def acl_file(dest: str, service_password: str) -> Iterator[str | StringCommand]:
    """The ACL file at ``dest``: default user off, ``admin`` and the service's user.

    Passwords appear as SHA-256 digests only. The admin digest is the host's own
    ``ADMIN_PASSWORD`` file's, read when the operation runs (the file may be new).
    """
    admin_sha256 = host.get_fact(Sha256File, path=ADMIN_PASSWORD) or ""
    yield from files.template._inner(  # type: ignore[attr-defined]
        src=str(TEMPLATES / "users.acl.j2"),
        dest=dest,
        user="root",
        group="redis",
        mode="640",
        admin_password_sha256=admin_sha256,
        service_user=SERVICE_USER,
        service_password_sha256=hashlib.sha256(service_password.encode()).hexdigest(),
        key_pattern=KEY_PATTERN,
        service_commands=SERVICE_COMMANDS,
    )


@deploy("Redis for the service")
def redis(
    address: str, tls: HostTls, password: str, max_memory_mb: int, max_memory_policy: str
) -> None:
    """Redis on ``address``:``PORT`` over TLS only; ``SERVICE_USER`` logs in with ``password``.

    Each file is checked by starting redis-server on it before it goes live; any change
    restarts Redis (a cache: the service recomputes what it loses).
    """
    apt.packages(name="Install Redis", packages=["redis-server"])
    files.template(
        name="Install the Redis config check",
        src=str(TEMPLATES / "redis-check.sh.j2"),
        dest=CHECK,
        mode="755",
    )
    for path in (TLS_DIR, STAGING):
        files.directory(
            name=f"Create {path}, for root and redis only",
            path=path,
            user="root",
            group="redis",
            # setgid, as Debian's /etc/redis: new files belong to the redis group.
            mode="2750",
        )
    tls_files = [
        files.put(
            name=f"Install the data host's {what} for Redis",
            src=StringIO(content),
            dest=f"{TLS_DIR}/{filename}",
            user="root",
            group="redis",
            mode="644",
        )
        for what, content, filename in (
            ("certificate", tls.certificate, "server.crt"),
            ("CA certificate", tls.ca, "ca.crt"),
        )
    ]
    tls_files.append(
        put_private(
            name="Install the data host's private key for Redis (root and redis only, never shown)",
            content=tls.key,
            dest=f"{TLS_DIR}/server.key",
            group="redis",
            mode="640",
        )
    )

    if not host.get_fact(File, path=ADMIN_PASSWORD):
        server.shell(
            name="Generate the Redis admin password on this host, once (root only)",
            commands=[
                f"umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' "
                f"> {ADMIN_PASSWORD}"
            ],
        )
    acl_file(
        name="Stage the Redis ACL: default user off, service user on its own keys only",
        dest=f"{STAGING}/users.acl",
        service_password=password,
    )
    acl = install_validated(
        name="Install the Redis ACL once redis-server loads it",
        src=f"{STAGING}/users.acl",
        dest=ACL_FILE,
        validate=f"{CHECK} --aclfile {{path}}",
    )
    files.template(
        name="Stage redis.conf: private address, TLS only, no persistence, bounded memory",
        src=str(TEMPLATES / "redis.conf.j2"),
        dest=f"{STAGING}/redis.conf",
        user="root",
        group="redis",
        mode="640",
        address=address,
        port=PORT,
        tls_dir=TLS_DIR,
        aclfile=ACL_FILE,
        max_memory_mb=max_memory_mb,
        max_memory_policy=max_memory_policy,
    )
    config = install_validated(
        name="Install redis.conf once redis-server starts with it, TLS files loaded",
        src=f"{STAGING}/redis.conf",
        dest=CONFIG,
        validate=f"{CHECK} {{path}} --tls-replication yes",
    )
    systemd.service(name="Run Redis now and at boot", service=SERVICE, running=True, enabled=True)
    systemd.service(
        name="Restart Redis to apply its new config, ACL or certificate",
        service=SERVICE,
        restarted=True,
        _if=any_changed(config, acl, *tls_files),
    )
