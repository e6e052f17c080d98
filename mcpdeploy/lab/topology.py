"""What the lab is made of, derived from the settings alone (no Docker needed).

Hosts, their roles, colors, fixed addresses and published ports all follow from
``mcpdeploy:lab`` and ``appHostsPerColor`` in ``Pulumi.lab.yaml``, so the inventory,
``status --json`` and ``up`` agree by construction.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from mcpdeploy.settings import COLORS, Settings

STATE_DIR = Path("/var/lib/mcpdeploy/lab")
NETWORK = "mcpdeploy-lab"
PREFIX = "mcpdeploy-lab-"
LABEL = "mcpdeploy.lab"
REGISTRY_NAME = "registry.mcp.lab.test"
REGISTRY_PORT = 5000
SSH_USER = "root"

# Host number inside the lab subnet, by kind: edge .10, data .20, blue .100+, green .120+.
_EDGE, _DATA, _REGISTRY = 10, 20, 5
_FIRST_APP = {"blue": 100, "green": 120}


@dataclass(frozen=True)
class LabHost:
    """One lab host: a Debian 12 systemd container reached over SSH on 127.0.0.1."""

    name: str
    role: str
    color: str | None
    address: str
    ssh_port: int

    @property
    def container(self) -> str:
        return PREFIX + self.name


@dataclass(frozen=True)
class Topology:
    """The whole lab: network, hosts, the registry and the edge's published port."""

    subnet: ipaddress.IPv4Network
    hosts: tuple[LabHost, ...]
    https_port: int
    registry_address: str

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise KeyError(f"no lab host named {name!r} (the lab has: {known})")

    def published_ports(self) -> list[int]:
        return [h.ssh_port for h in self.hosts] + [self.https_port, REGISTRY_PORT]


def topology(settings: Settings) -> Topology:
    """The lab described by ``settings`` (``Pulumi.lab.yaml``)."""
    lab = settings.lab
    base = lab.subnet.network_address

    def at(offset: int) -> str:
        return str(base + offset)

    per_color = settings.app_hosts_per_color
    named: list[tuple[str, str, str | None, str]] = [("edge", "edge", None, at(_EDGE))]
    for color in COLORS:
        for i in range(per_color):
            name = f"app-{color}" if per_color == 1 else f"app-{color}-{i + 1}"
            named.append((name, "app", color, at(_FIRST_APP[color] + i)))
    named.append(("data", "data", None, at(_DATA)))
    hosts = tuple(
        LabHost(name, role, color, address, lab.ssh_port_base + index)
        for index, (name, role, color, address) in enumerate(named)
    )
    return Topology(lab.subnet, hosts, lab.https_port, at(_REGISTRY))
