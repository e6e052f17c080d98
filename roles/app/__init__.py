"""App role: the MCP service's container on an app host, run by a sandboxed systemd unit.

A release is an image reference (pinned by digest where the registry allows): the role
pulls it, writes the service's environment root-only, runs ``migrate`` once for that
image, (re)starts the unit only when something changed, waits for readiness and prunes
images beyond the rollback window. ``service_environment`` and ``render_unit`` are pure.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import docker, files, server, systemd

from mcpdeploy.credentials import Credentials
from roles.app.operations import Readiness, prune_images, wait_ready_command
from roles.base.operations import put_private

TEMPLATES = Path(__file__).parent / "templates"
UNIT = "mcp-service.service"
CONTAINER = "mcp-service"
CONFIG_DIR = "/etc/mcp-service"
ENV_FILE = f"{CONFIG_DIR}/env"
MIGRATE_ENV_FILE = f"{CONFIG_DIR}/migrate.env"
CA_FILE = f"{CONFIG_DIR}/ca.crt"
# Where the container reads the CA that signed the data host's certificates.
CONTAINER_CA_FILE = "/etc/mcpdeploy/ca.crt"
STATE_DIR = "/var/lib/mcp-service"
# The reference image's user (app_image/Dockerfile): stated again so a root image fails.
CONTAINER_USER = "10001:10001"
PORT = 3000
# Host names the service answers besides the domain: loopback, where this host's nginx,
# the health and performance checks and the release gates reach it from.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def service_environment(
    *,
    credentials: Credentials,
    urls: Mapping[str, str],
    trusted_proxy: ipaddress.IPv4Address,
    workers: int,
    stop_timeout_seconds: int,
    settings: Any,
    extra_names: Sequence[str] = (),
    client_origins: Sequence[str] = (),
) -> dict[str, str]:
    """The container's environment (app_image/mcp_service/config.py) from the stack.

    ``urls`` holds ``DATABASE_URL``, ``REDIS_URL`` and ``MCP_RUNTIME_ROLE`` (the data role's
    ``service_urls``; the owner's migration URL is left out: the service never holds it).
    ``trusted_proxy`` is where nginx's connections come from as the container sees them
    (docker0's address); ``settings`` the stack's :class:`~mcpdeploy.settings.Settings`.
    ``extra_names`` are the other names the load balancer answers to (the edge's), and
    ``client_origins`` the origins the stack's clients call from besides
    ``https://<domain>`` (the lab's published port): the service's Host and Origin checks.
    """
    environment = {
        "DATABASE_URL": urls["DATABASE_URL"],
        "REDIS_URL": urls["REDIS_URL"],
        "SECRET_KEY_BASE": credentials.secret_key_base,
        "MCP_API_KEY": credentials.api_key,
        # The performance check's credential for the metrics endpoint: independent of the
        # client key, so `ops rotate-key` never locks the check out (roles/maintenance).
        "MCP_METRICS_TOKEN": credentials.metrics_token,
        "MCP_RUNTIME_ROLE": urls.get("MCP_RUNTIME_ROLE", ""),
        "MCP_TRUSTED_PROXIES": f"{trusted_proxy}/32",
        "MCP_WORKERS": str(workers),
        "MCP_DB_POOL_SIZE": str(settings.app.db_pool_size),
        **settings.rate_limits.environment(),
        "MCP_CORS_ORIGINS": ",".join(str(o).rstrip("/") for o in settings.cors_origins),
        "MCP_ALLOWED_HOSTS": ",".join(allowed_hosts(settings.domain, extra_names)),
        "MCP_ALLOWED_ORIGINS": ",".join(
            dict.fromkeys((f"https://{settings.domain}", *client_origins))
        ),
        "MCP_MAX_REQUEST_SIZE": str(settings.max_request_bytes),
        "MCP_TIMEOUT_SECONDS": str(settings.timeouts.request_seconds),
        # Drain within docker stop's grace period, with 5 s to spare.
        "MCP_SHUTDOWN_TIMEOUT_SECONDS": str(stop_timeout_seconds - 5),
        "MCP_AUDIT_LOG_RETENTION_DAYS": str(settings.retention.audit_log_days),
        "MCP_STREAM_KEEPALIVE_SECONDS": str(settings.app.stream_keepalive_seconds),
        "MCP_SETTINGS_CACHE_SECONDS": f"{settings.app.settings_cache_seconds:g}",
    }
    return {name: value for name, value in environment.items() if value}


def allowed_hosts(domain: str, extra_names: Sequence[str] = ()) -> list[str]:
    """``Host`` values the service accepts (DNS rebinding): each name bare, as nginx's
    ``Host $host`` forwards it, and as ``name:*``, as a caller on a port sends it."""
    names = dict.fromkeys((domain, *extra_names, *LOOPBACK_NAMES))
    return [f"{name}{port}" for name in names for port in ("", ":*")]


def env_file_text(environment: Mapping[str, str]) -> str:
    """``NAME=value`` lines as ``docker run --env-file`` reads them (no quoting)."""
    for name, value in environment.items():
        if "\n" in value or "\r" in value or "=" in name:
            # Never show the value: it may be a secret.
            raise ValueError(f"{name}: an --env-file value cannot contain a line break")
    return "".join(f"{name}={value}\n" for name, value in sorted(environment.items()))


def render_unit(
    *,
    image: str,
    memory: str,
    pids_limit: int,
    stop_timeout_seconds: int,
    start_timeout_seconds: int = 300,
    mount_ca: bool = False,
) -> str:
    """The systemd unit that runs ``image`` (templates/mcp-service.service.j2)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - a systemd unit, not HTML
    )
    return env.get_template("mcp-service.service.j2").render(
        image=image,
        container=CONTAINER,
        user=CONTAINER_USER,
        memory=memory,
        pids_limit=pids_limit,
        port=PORT,
        stop_timeout=stop_timeout_seconds,
        start_timeout=start_timeout_seconds,
        env_file=ENV_FILE,
        ca_mount=f"{CA_FILE}:{CONTAINER_CA_FILE}:ro" if mount_ca else None,
    )


def image_repository(image: str) -> str:
    """``image`` without tag or digest: ``reg:5000/team/app:1.2`` -> ``reg:5000/team/app``."""
    name = image.split("@", 1)[0]
    base, _, tag = name.rpartition(":")
    return base if base and "/" not in tag else name


def release_marker(image: str) -> str:
    """The file that records ``migrate`` succeeded for ``image`` on this host."""
    return f"{STATE_DIR}/migrated-{hashlib.sha256(image.encode()).hexdigest()[:16]}"


@deploy("Run the MCP service container")
def app(
    *,
    image: str,
    environment: Mapping[str, str],
    migrate_environment: Mapping[str, str] | None,
    memory: str,
    pids_limit: int,
    stop_timeout_seconds: int,
    readiness_path: str,
    readiness_timeout_seconds: int,
    keep_images: int,
    ca_pem: str | None = None,
    rollback_image: str | None = None,
) -> None:
    """``image`` running from :data:`UNIT`, ready on ``readiness_path`` before this returns.

    + environment: the container's variables (:func:`service_environment`), written 0600
    + migrate_environment: the same with the schema owner's ``DATABASE_URL``; ``migrate``
      runs once per image with it (None: no database yet, no migration)
    + readiness_path: ``/health/mcp`` (needs PostgreSQL and Redis) or ``/health``
    + rollback_image: the other color's image, pulled and never pruned here, so a rollback
      or a re-deploy of the previous release never waits for (or lacks) its image
    + ca_pem: the CA(s) the service verifies its database with, mounted read-only at
      :data:`CONTAINER_CA_FILE`: the stack's CA (data host) or the RDS CA bundle (AWS);
      None: no file, the image's own trust store
    """
    files.directory(
        name=f"{CONFIG_DIR}: the service's secrets, root only",
        path=CONFIG_DIR,
        user="root",
        group="root",
        mode="700",
    )
    files.directory(
        name=f"{STATE_DIR}: release markers", path=STATE_DIR, user="root", group="root", mode="700"
    )
    env_file = put_private(
        name=f"Write the service's environment to {ENV_FILE} (0600 root, never shown)",
        content=env_file_text(environment),
        dest=ENV_FILE,
    )
    ca = (
        files.put(
            name=f"Install the data host's CA for the container ({CA_FILE})",
            src=io.StringIO(ca_pem),
            dest=CA_FILE,
            user="root",
            group="root",
            mode="644",
        )
        if ca_pem is not None
        else None
    )
    ca_mount = f"--volume {CA_FILE}:{CONTAINER_CA_FILE}:ro " if ca_pem is not None else ""
    docker.image(name=f"Pull {image}", image=image, present=True)
    if rollback_image and rollback_image != image:
        docker.image(
            name=f"Keep the rollback image {rollback_image}", image=rollback_image, present=True
        )

    if migrate_environment is not None:
        put_private(
            name=f"Write the migration's environment to {MIGRATE_ENV_FILE} (0600 root)",
            content=env_file_text(migrate_environment),
            dest=MIGRATE_ENV_FILE,
        )
        marker = release_marker(image)
        # Once per image: the service's advisory lock makes a concurrent or repeated run a
        # no-op, the marker keeps the deploy from reporting a change every time.
        if not host.get_fact(File, path=marker):
            server.shell(
                # Contract migrations wait for `mcpdeploy release` (after its watch window).
                name="Run the release's expand migrations (one-shot container)",
                commands=[
                    "docker run --rm --read-only --tmpfs /tmp:rw,noexec,nosuid,size=16m "
                    f"--user {CONTAINER_USER} --cap-drop ALL --security-opt no-new-privileges "
                    f"{ca_mount}--env-file {MIGRATE_ENV_FILE} {image} migrate --phase expand "
                    f"&& touch {marker}"
                ],
            )

    unit = files.put(
        name=f"Install {UNIT} (sandboxed docker client, hardened container)",
        src=io.StringIO(
            render_unit(
                image=image,
                memory=memory,
                pids_limit=pids_limit,
                stop_timeout_seconds=stop_timeout_seconds,
                mount_ca=ca_pem is not None,
            )
        ),
        dest=f"/etc/systemd/system/{UNIT}",
        user="root",
        group="root",
        mode="644",
    )
    # A unit started just now already runs the new release: restart only one that ran.
    was_running = bool(host.get_fact(SystemdStatus).get(UNIT))
    systemd.service(
        name=f"Run {UNIT} now and at boot",
        service=UNIT,
        running=True,
        enabled=True,
        daemon_reload=unit.will_change,
    )

    def changed() -> bool:
        return unit.did_change() or env_file.did_change() or bool(ca and ca.did_change())

    systemd.service(
        name=f"Restart {UNIT} for its new image, unit or environment",
        service=UNIT,
        restarted=True,
        _if=lambda: was_running and changed(),
    )
    ready = host.get_fact(Readiness, port=PORT, path=readiness_path) == 200
    server.shell(
        name=f"Wait until {readiness_path} answers 200 (at most {readiness_timeout_seconds} s)",
        commands=[
            wait_ready_command(
                host_name=host.name,
                port=PORT,
                path=readiness_path,
                timeout_seconds=readiness_timeout_seconds,
                unit=UNIT,
                container=CONTAINER,
            )
        ],
        _if=lambda: changed() or not ready,
    )
    repository = image_repository(image)
    prune_images(
        name=f"Keep {keep_images} images of {repository} (this release and the rollback "
        "image first), remove older ones",
        repository=repository,
        keep=keep_images,
        pinned=[image, *([rollback_image] if rollback_image else [])],
    )
