"""Edge role (lab and self-hosted): nginx as the load balancer in front of both colors.

On AWS the ALB plays this part (``infra/components/loadbalancer.py``). The edge terminates
public TLS with the same policy and headers as the app hosts, forwards to the active
color's app hosts over verified HTTPS, and replaces ``X-Forwarded-For`` with the client's
address. Rate limits are applied per client on the app hosts, which trust only the edge
(docs/edge.md). The configuration names both colors; which one serves is a flag file read
per request, so a switch changes that file and nginx is not reloaded: a reload closes the
old workers' idle keep-alive connections, and a client whose next request was already on
its way gets no answer (seen under load: one request per switch).

Maintenance mode (``mcpdeploy ops maintenance on|off``, docs/operations.md) is a flag file
that nginx tests on every API request: the edge then answers ``/api/`` itself with a 503,
a JSON-RPC error body and ``Retry-After``, while ``/health*`` still reach the active color.
Toggling it writes or removes the file only: no reload, and a deploy leaves it as it is.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyinfra.api import deploy
from pyinfra.operations import files

from mcpdeploy.access import MAINTENANCE_BODY, MAINTENANCE_RETRY_AFTER_SECONDS
from roles.nginx import MOZILLA_INTERMEDIATE, TLS_DIR, site, template_env
from roles.nginx import TEMPLATES as NGINX_TEMPLATES

TEMPLATES = Path(__file__).parent / "templates"
HTTP_CONF = "/etc/nginx/conf.d/mcpdeploy-edge.conf"
SITE_CONF = "/etc/nginx/sites-available/mcp-edge"
UPSTREAM_CA = "upstream-ca.crt"
# One empty file per color, present only for the active one (edge-color.conf.j2).
ACTIVE_DIR = "/etc/nginx/mcpdeploy-active"
MAX_FAILS = 3
FAIL_TIMEOUT = 10
# Names the edge answers to besides the domain (a caller on the edge host itself); any
# other Host gets 421 from its default server.
EXTRA_NAMES = ("localhost", "127.0.0.1")


def render_edge_config(
    *,
    domain: str,
    colors: Mapping[str, Sequence[str]],
    timeouts: Any,
    max_request_bytes: int,
    maintenance_flag: str,
    extra_names: Sequence[str] = EXTRA_NAMES,
    certificate_path: str = f"{TLS_DIR}/server.crt",
    key_path: str = f"{TLS_DIR}/server.key",
    upstream_ca_path: str = f"{TLS_DIR}/{UPSTREAM_CA}",
    active_dir: str = ACTIVE_DIR,
) -> dict[str, str]:
    """The edge's nginx configuration as {path on the host: content}.

    ``colors`` maps each color to its app hosts' addresses. The configuration is the same
    whichever color is active: :func:`active_flags` says which one serves.
    While the file ``maintenance_flag`` exists the edge answers ``/api/`` with the
    maintenance 503.
    """
    env = template_env(TEMPLATES, NGINX_TEMPLATES)
    data = {
        "domain": domain,
        "colors": {color: list(addresses) for color, addresses in colors.items() if addresses},
        "timeouts": timeouts,
        "max_request_bytes": max_request_bytes,
        "extra_names": list(extra_names),
        "certificate_path": certificate_path,
        "key_path": key_path,
        "upstream_ca_path": upstream_ca_path,
        "active_dir": active_dir,
        "ciphers": MOZILLA_INTERMEDIATE,
        "max_fails": MAX_FAILS,
        "fail_timeout": FAIL_TIMEOUT,
        "maintenance_flag": maintenance_flag,
        "maintenance_retry_after": MAINTENANCE_RETRY_AFTER_SECONDS,
        "maintenance_body": json.dumps(MAINTENANCE_BODY, separators=(",", ":")),
    }
    return {
        HTTP_CONF: env.get_template("edge-http.conf.j2").render(data),
        SITE_CONF: env.get_template("edge.conf.j2").render(data),
    }


def active_flags(
    active_color: str, colors: Mapping[str, Sequence[str]], active_dir: str = ACTIVE_DIR
) -> dict[str, bool]:
    """{flag file: present} that makes ``active_color`` serve, the active one first.

    ``active_color`` must have at least one host, or nothing would serve.
    """
    if not colors.get(active_color):
        raise ValueError(f"active color {active_color!r} has no app hosts in the inventory")
    others = [color for color in colors if color != active_color]
    return {f"{active_dir}/{color}": color == active_color for color in [active_color, *others]}


@deploy("Edge load balancer")
def edge(
    *,
    certificate_pem: str,
    key_pem: str,
    upstream_ca_pem: str,
    active_color: str,
    **config: Any,
) -> None:
    """nginx serving the public TLS and forwarding to the active color.

    ``config`` holds :func:`render_edge_config`'s arguments. The active color's flag is
    written before the others are removed (while both exist the configuration picks one,
    consistently per request) and before a new configuration is loaded, so that every
    request finds a color.
    """
    flags = active_flags(active_color, config["colors"])
    files.directory(
        name="Directory of the active color's flag", path=ACTIVE_DIR, mode="0755", present=True
    )
    for path, present in flags.items():
        color = path.rsplit("/", 1)[1]
        files.file(
            name=f"{color} serves: its flag is read per request (no reload)"
            if present
            else f"{color} is idle: no flag",
            path=path,
            present=present,
            user="root",
            group="root",
            mode="0644",
        )
    site(
        configs=render_edge_config(**config),
        site_conf=SITE_CONF,
        certificate_pem=certificate_pem,
        key_pem=key_pem,
        public_files={UPSTREAM_CA: upstream_ca_pem},
    )
    # Only the directory is managed: the flag in it is the operator's, and a deploy must
    # neither remove it nor report a change because of it.
    files.directory(
        name="Maintenance flag directory (mcpdeploy ops maintenance writes the flag here)",
        path=posixpath.dirname(config["maintenance_flag"]),
        user="root",
        group="root",
        mode="0755",
    )
