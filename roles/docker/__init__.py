"""Docker role (app hosts): Debian's engine, a hardened daemon, registry trust, no UFW bypass.

``daemon_config``, ``client_config`` and ``docker_user_rules`` are pure (unit-tested);
``docker_engine`` installs and converges a host. The daemon restarts only when its
configuration changed, and only after the new file passed the daemon's own check.
"""

from __future__ import annotations

import io
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from roles.base import STAGING
from roles.base.operations import install_validated

TEMPLATES = Path(__file__).parent / "templates"
DAEMON_JSON = "/etc/docker/daemon.json"
CERTS_D = "/etc/docker/certs.d"
CLIENT_CONFIG = "/root/.docker/config.json"
UFW_AFTER_RULES = "/etc/ufw/after.rules"
# Interfaces whose traffic is the containers' own: docker0 and user-defined bridges.
CONTAINER_BRIDGES = ("docker0", "br-+")
# dockerd >= 23 checks a config file without starting; Debian 12's 20.10 cannot, so the
# file is at least parsed as JSON (its keys are fixed by daemon_config).
VALIDATE_DAEMON_JSON = (
    "if dockerd --help 2>/dev/null | grep -q -- --validate; "
    "then dockerd --validate --config-file {path}; "
    "else python3 -m json.tool {path} >/dev/null; fi"
)


def daemon_config(
    *, bridge: ipaddress.IPv4Interface, log_max_size: str, log_max_files: int
) -> dict[str, Any]:
    """``/etc/docker/daemon.json``: each key with the reason it is set.

    - ``no-new-privileges``: no container gains privileges through setuid binaries (CIS 2.18);
    - ``log-driver``/``log-opts``: json-file rotated (guide: Log Aggregation, 10m x 3);
    - ``live-restore``: containers keep running while dockerd restarts or upgrades (CIS 2.14);
    - ``userland-proxy: false``: published ports are kernel NAT, not a docker-proxy process
      listening on the host (CIS 2.15);
    - ``icc: false``: containers on the default bridge cannot talk to each other (CIS 2.1);
    - ``bip``: docker0's address is fixed, so the service can trust it as its one proxy.
    """
    return {
        "bip": str(bridge),
        "icc": False,
        "live-restore": True,
        "log-driver": "json-file",
        "log-opts": {"max-size": log_max_size, "max-file": str(log_max_files)},
        "no-new-privileges": True,
        "userland-proxy": False,
    }


def client_config(credential_helper_registries: Sequence[str]) -> dict[str, Any]:
    """The Docker client's ``config.json``: ECR's credential helper for each registry host.

    The helper (``docker-credential-ecr-login``) fetches short-lived tokens with the
    instance role, so no password is ever stored on the host.
    """
    return {"credHelpers": {registry: "ecr-login" for registry in credential_helper_registries}}


def docker_user_rules(bridges: Sequence[str] = CONTAINER_BRIDGES) -> str:
    """The ``DOCKER-USER`` rules as an iptables-restore block for UFW's ``after.rules``."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - iptables rules, not HTML
    )
    return env.get_template("docker-user.rules.j2").render(bridges=list(bridges))


def json_text(document: dict[str, Any]) -> str:
    """Stable JSON text (sorted keys, newline at the end), so unchanged means identical."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


@deploy("Close the Docker bypass of UFW")
def docker_user_chain() -> None:
    """DOCKER-USER drops new connections from outside the container bridges, at every boot.

    A port published on 0.0.0.0 by mistake is then still unreachable from other hosts.
    """
    rules = files.block(
        name="Keep DOCKER-USER rules in UFW's after.rules (loaded at boot and on reload)",
        path=UFW_AFTER_RULES,
        content=docker_user_rules().rstrip("\n"),
        marker="# {mark} MCPDEPLOY DOCKER-USER",
    )
    server.shell(
        name="Reload UFW to apply the DOCKER-USER rules now",
        commands=["ufw reload"],
        _if=rules.did_change,
    )


@deploy("Run the Docker engine, hardened")
def docker_engine(
    *,
    bridge: ipaddress.IPv4Interface,
    log_max_size: str,
    log_max_files: int,
    registry_ca: tuple[str, str] | None = None,
    credential_helper_registries: Sequence[str] = (),
) -> None:
    """Debian's ``docker.io`` with :func:`daemon_config`, trusting the image registry.

    + registry_ca: ``(host:port, CA PEM)`` of a private registry served with a private CA
      (the lab's); Docker trusts it through ``/etc/docker/certs.d``, never insecure mode
    + credential_helper_registries: ECR registry hosts (AWS); installs
      ``amazon-ecr-credential-helper`` and names it in root's client config
    """
    apt.packages(name="Install Docker from Debian (docker.io)", packages=["docker.io"])
    # Before dockerd (re)starts, so its FORWARD jump finds the chain ready.
    docker_user_chain()

    staged = f"{STAGING}/docker-daemon.json"
    files.directory(name="Docker configuration directory", path="/etc/docker", mode="755")
    files.put(
        name="Stage the hardened daemon.json",
        src=io.StringIO(
            json_text(
                daemon_config(bridge=bridge, log_max_size=log_max_size, log_max_files=log_max_files)
            )
        ),
        dest=staged,
        mode="644",
    )
    daemon = install_validated(
        name="Install daemon.json once the daemon's check accepts it",
        src=staged,
        dest=DAEMON_JSON,
        validate=VALIDATE_DAEMON_JSON,
    )
    if registry_ca is not None:
        registry, ca_pem = registry_ca
        # Read by dockerd at each pull: no restart needed.
        files.put(
            name=f"Trust {registry} with its CA (certs.d, no insecure registry)",
            src=io.StringIO(ca_pem),
            dest=f"{CERTS_D}/{registry}/ca.crt",
            mode="644",
            create_remote_dir=True,
        )
    if credential_helper_registries:
        apt.packages(
            name="Install the ECR credential helper",
            packages=["amazon-ecr-credential-helper"],
        )
        files.directory(name="Root's Docker client directory", path="/root/.docker", mode="700")
        files.put(
            name="Pull from ECR with the instance role (credHelpers, no stored password)",
            src=io.StringIO(json_text(client_config(credential_helper_registries))),
            dest=CLIENT_CONFIG,
            mode="600",
        )
    systemd.service(
        name="Run Docker now and at boot", service="docker.service", running=True, enabled=True
    )
    systemd.service(
        name="Restart Docker to apply its new configuration (live-restore keeps containers)",
        service="docker.service",
        restarted=True,
        _if=daemon.did_change,
    )
