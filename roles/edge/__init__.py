"""Edge role (lab and self-hosted): nginx as the load balancer in front of both colors.

On AWS the ALB plays this part (``infra/components/loadbalancer.py``). The edge terminates
public TLS with the same policy and headers as the app hosts, forwards to the active
color's app hosts over verified HTTPS, and replaces ``X-Forwarded-For`` with the client's
address. Rate limits are applied per client on the app hosts, which trust only the edge
(docs/edge.md). A switch is a config change checked by ``nginx -t`` and a reload, which
lets in-flight requests finish on the old workers: no connection is dropped.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from roles.nginx import MOZILLA_INTERMEDIATE
from roles.nginx import TEMPLATES as NGINX_TEMPLATES

TEMPLATES = Path(__file__).parent / "templates"
HTTP_CONF = "/etc/nginx/conf.d/mcpdeploy-edge.conf"
SITE_CONF = "/etc/nginx/sites-available/mcp-edge"
SITE_LINK = "/etc/nginx/sites-enabled/mcp-edge"
TLS_DIR = "/etc/nginx/tls"
MAX_FAILS = 3
FAIL_TIMEOUT = 10


def render_edge_config(
    *,
    domain: str,
    active_color: str,
    colors: Mapping[str, Sequence[str]],
    timeouts: Any,
    max_request_bytes: int,
    extra_names: Sequence[str] = ("localhost", "127.0.0.1"),
    certificate_path: str = f"{TLS_DIR}/edge.crt",
    key_path: str = f"{TLS_DIR}/edge.key",
    upstream_ca_path: str = f"{TLS_DIR}/upstream-ca.crt",
) -> dict[str, str]:
    """The edge's nginx configuration as {path on the host: content}.

    ``colors`` maps each color to its app hosts' addresses; ``active_color`` must be one of
    them and have at least one host, or nothing would serve.
    """
    if not colors.get(active_color):
        raise ValueError(f"active color {active_color!r} has no app hosts in the inventory")
    env = Environment(
        loader=FileSystemLoader([TEMPLATES, NGINX_TEMPLATES]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - nginx configuration, not HTML
    )
    data = {
        "domain": domain,
        "active_color": active_color,
        "colors": {color: list(addresses) for color, addresses in colors.items() if addresses},
        "timeouts": timeouts,
        "max_request_bytes": max_request_bytes,
        "extra_names": list(extra_names),
        "certificate_path": certificate_path,
        "key_path": key_path,
        "upstream_ca_path": upstream_ca_path,
        "ciphers": MOZILLA_INTERMEDIATE,
        "max_fails": MAX_FAILS,
        "fail_timeout": FAIL_TIMEOUT,
    }
    return {
        HTTP_CONF: env.get_template("edge-http.conf.j2").render(data),
        SITE_CONF: env.get_template("edge.conf.j2").render(data),
    }


@deploy("Edge load balancer")
def edge(*, certificate_pem: str, key_pem: str, upstream_ca_pem: str, **config: Any) -> None:
    """nginx serving the public TLS and forwarding to the active color.

    ``config`` holds :func:`render_edge_config`'s arguments.
    """
    apt.packages(name="Install nginx", packages=["nginx"])
    changes = [
        files.directory(
            name="TLS directory, root only", path=TLS_DIR, user="root", group="root", mode="0700"
        ),
        files.put(
            name="Install the edge's public certificate",
            src=io.StringIO(certificate_pem),
            dest=f"{TLS_DIR}/edge.crt",
            mode="0644",
        ),
        files.put(
            name="Install the edge's key (root only, content never shown)",
            src=io.StringIO(key_pem),
            dest=f"{TLS_DIR}/edge.key",
            mode="0600",
        ),
        files.put(
            name="Trust the internal CA for the app hosts",
            src=io.StringIO(upstream_ca_pem),
            dest=f"{TLS_DIR}/upstream-ca.crt",
            mode="0644",
        ),
    ]
    for path, content in render_edge_config(**config).items():
        changes.append(
            files.put(name=f"Render {path}", src=io.StringIO(content), dest=path, mode="0644")
        )
    changes.append(files.link(name="Enable the edge site", path=SITE_LINK, target=SITE_CONF))
    changes.append(
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
