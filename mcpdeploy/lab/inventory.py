"""pyinfra inventory groups for the lab, derived from ``Pulumi.lab.yaml``."""

from __future__ import annotations

from typing import Any

from mcpdeploy.lab.lab import Lab
from mcpdeploy.lab.topology import SSH_USER, topology
from mcpdeploy.settings import load_settings

HostEntry = tuple[str, dict[str, Any]]


def lab_groups() -> dict[str, list[HostEntry]]:
    """Groups ``edge``, ``app``, ``app_blue``, ``app_green``, ``data`` of (name, data) pairs.

    Each host's data carries what roles and tests need: how to reach it over SSH, its
    role, color and private address, the stack, the deploy user's keys and the origins
    the lab's clients call from.
    """
    settings = load_settings("lab")
    lab = Lab(topology(settings))
    # Clients reach the edge on a port published on the operator machine: the origins a
    # browser there sends, which the service must accept (its Origin check).
    port = settings.lab.https_port
    origins = [f"https://127.0.0.1:{port}", f"https://localhost:{port}"]
    public_key = lab.ssh_key.with_suffix(".pub")
    keys = [public_key.read_text().strip()] if public_key.exists() else []
    groups: dict[str, list[HostEntry]] = {
        "edge": [],
        "app": [],
        "app_blue": [],
        "app_green": [],
        "data": [],
    }
    for host in lab.topo.hosts:
        entry = (
            host.name,
            {
                "ssh_hostname": "127.0.0.1",
                "ssh_port": host.ssh_port,
                "ssh_user": SSH_USER,
                "ssh_key": str(lab.ssh_key),
                "ssh_known_hosts_file": str(lab.known_hosts),
                "ssh_strict_host_key_checking": "yes",
                "role": host.role,
                "color": host.color,
                "address": host.address,
                "stack": "lab",
                "deploy_authorized_keys": keys,
                "credentials": "file",
                "client_origins": origins,
            },
        )
        groups[host.role].append(entry)
        if host.color:
            groups[f"app_{host.color}"].append(entry)
    return groups
