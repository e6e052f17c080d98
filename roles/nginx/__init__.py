"""nginx role (app hosts): the guide's Nginx Configuration, done correctly.

``render_config`` is pure (unit tests feed its output to a real ``nginx -t``); ``nginx``
installs it, checks it with ``nginx -t`` on the host and reloads (never restarts) only
when something changed.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from roles.base.operations import put_private

TEMPLATES = Path(__file__).parent / "templates"
# Mozilla "intermediate" (v5.7) for ECDSA and RSA certificates, TLS 1.2 part; TLS 1.3
# suites are not configurable here and are all strong.
MOZILLA_INTERMEDIATE = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
HTTP_CONF = "/etc/nginx/conf.d/mcpdeploy.conf"
SITE_CONF = "/etc/nginx/sites-available/mcp"
TLS_DIR = "/etc/nginx/tls"
WORKER_CONNECTIONS = 4096


def template_env(*directories: Path) -> Environment:
    """Jinja2 for nginx files: undefined names fail, blocks leave no blank lines."""
    return Environment(
        loader=FileSystemLoader(directories),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - nginx configuration, not HTML
    )


def render_config(
    *,
    domain: str,
    trusted_proxies: Sequence[str],
    admin_cidrs: Sequence[str],
    zones: Any,
    timeouts: Any,
    max_request_bytes: int,
    upstream: str = "127.0.0.1:3000",
    certificate_path: str = f"{TLS_DIR}/server.crt",
    key_path: str = f"{TLS_DIR}/server.key",
) -> dict[str, str]:
    """The http-level and site configuration as {path on the host: content}.

    ``zones`` is the settings' ``nginxRateLimits`` (``mcp``/``api`` with ``rate_per_second``,
    ``burst``, ``size``); ``timeouts`` the settings' ``timeouts``.
    """
    env = template_env(TEMPLATES)
    data = {
        "domain": domain,
        "trusted_proxies": list(trusted_proxies),
        "admin_cidrs": list(admin_cidrs),
        "zones": zones,
        "timeouts": timeouts,
        "max_request_bytes": max_request_bytes,
        "upstream": upstream,
        "certificate_path": certificate_path,
        "key_path": key_path,
        "ciphers": MOZILLA_INTERMEDIATE,
    }
    return {
        HTTP_CONF: env.get_template("http.conf.j2").render(data),
        SITE_CONF: env.get_template("site.conf.j2").render(data),
    }


@deploy("nginx site")
def site(
    *,
    configs: Mapping[str, str],
    site_conf: str,
    certificate_pem: str,
    key_pem: str,
    public_files: Mapping[str, str] | None = None,
) -> None:
    """nginx serving ``configs`` ({path: content}) with the host's certificate and key.

    ``site_conf`` (one of ``configs``' paths, in sites-available) is enabled and Debian's
    default site disabled. ``public_files`` are more 0644 files in :data:`TLS_DIR` (a CA).
    A change is checked with ``nginx -t`` and applied by a reload, never a restart.
    """
    apt.packages(name="Install nginx", packages=["nginx"])
    changes = [
        files.directory(
            name="TLS directory, root only", path=TLS_DIR, user="root", group="root", mode="0700"
        ),
        # put_private, not files.put: ``pyinfra --diff`` would print the key.
        put_private(
            name="Install the host's TLS key (root only, content never shown)",
            content=key_pem,
            dest=f"{TLS_DIR}/server.key",
        ),
    ]
    public = {f"{TLS_DIR}/server.crt": certificate_pem}
    public |= {f"{TLS_DIR}/{name}": content for name, content in (public_files or {}).items()}
    for path, content in {**public, **configs}.items():
        changes.append(
            files.put(
                name=f"Install {path}",
                src=io.StringIO(content),
                dest=path,
                user="root",
                group="root",
                mode="0644",
            )
        )
    # Debian's nginx.conf allows 768 connections per worker: a proxy holds two per client
    # (client and upstream), and an SSE stream holds them for minutes. The file stays the
    # distribution's; these two lines are the only edits.
    changes.append(
        files.line(
            name=f"nginx: {WORKER_CONNECTIONS} connections per worker",
            path="/etc/nginx/nginx.conf",
            line=r"^\s*worker_connections\s",
            replace=f"\tworker_connections {WORKER_CONNECTIONS};",
        )
    )
    changes.append(
        files.line(
            name="nginx: workers may open that many files (client and upstream sockets)",
            path="/etc/nginx/nginx.conf",
            line=r"^worker_rlimit_nofile\s",
            replace=f"worker_rlimit_nofile {2 * WORKER_CONNECTIONS};",
        )
    )
    link = site_conf.replace("/sites-available/", "/sites-enabled/")
    changes.append(files.link(name=f"Enable {site_conf}", path=link, target=site_conf))
    changes.append(
        # Debian enables it as a symlink to sites-available/default.
        files.link(
            name="Disable the distribution's default site",
            path="/etc/nginx/sites-enabled/default",
            present=False,
        )
    )

    def changed() -> bool:
        return any(op.did_change() for op in changes)

    server.shell(
        name="Check the configuration with nginx -t before reloading",
        commands=["nginx -t -q"],
        _if=changed,
    )
    systemd.service(
        name="Reload nginx (never restart): in-flight requests finish on the old workers",
        service="nginx",
        running=True,
        enabled=True,
        reloaded=True,
        _if=changed,
    )
    systemd.service(name="nginx enabled and running", service="nginx", running=True, enabled=True)


@deploy("Serve the MCP service through hardened nginx")
def nginx(*, certificate_pem: str, key_pem: str, **config: Any) -> None:
    """The app host's nginx in front of the service; ``config``: :func:`render_config`'s."""
    site(
        configs=render_config(**config),
        site_conf=SITE_CONF,
        certificate_pem=certificate_pem,
        key_pem=key_pem,
    )
