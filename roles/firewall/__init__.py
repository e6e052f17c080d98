"""Firewall role: UFW with default deny and one allow-list per kind of host.

The guide's Firewall Configuration opens 22, 80 and 443 to the world on every host and
"denies" 3000. Here SSH is rate-limited and only reachable from the admins' networks, the
public ports exist only on the edge, and every other port is closed by the default policy
(an explicit ``ufw deny 3000`` would not stop a port Docker publishes; the app binds
127.0.0.1:3000 instead).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.operations import apt, files

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Action = Literal["allow", "limit"]

SSH_PORT = 22
EDGE_PUBLIC_PORTS = (80, 443)
APP_HTTPS_PORT = 443
DATA_PORTS = {5432: "postgresql", 6379: "redis"}
POLICY_VALUES = {"deny": "DROP", "allow": "ACCEPT", "reject": "REJECT"}


@dataclass(frozen=True)
class Rule:
    """One inbound TCP rule; ``source`` None means from anywhere."""

    port: int
    source: Network | None
    comment: str
    action: Action = "allow"

    def ufw(self) -> str:
        """The rule exactly as ``ufw show added`` prints it (minus the leading ``ufw``)."""
        if self.source is None:
            text = f"{self.action} {self.port}/tcp"
        else:
            text = (
                f"{self.action} from {_ufw_source(self.source)} to any port {self.port} proto tcp"
            )
        return f"{text} comment '{self.comment}'"


def _ufw_source(network: Network) -> str:
    # ufw prints a single-address network without its prefix length.
    if network.num_addresses == 1:
        return str(network.network_address)
    return str(network)


def firewall_rules(
    role: str,
    *,
    admin_cidrs: Iterable[Network],
    edge_addresses: Iterable[str] = (),
    app_addresses: Iterable[str] = (),
    load_balancer_cidrs: Iterable[str] = (),
    collector_ports: Mapping[int, str] | None = None,
) -> list[Rule]:
    """The inbound allow-list of a host of kind ``role`` (``edge``, ``app`` or ``data``).

    Every host: SSH from ``admin_cidrs``, rate-limited. edge: 80 and 443 from anywhere.
    app: 443 from each edge address and each of ``load_balancer_cidrs`` (AWS: the ALB's
    addresses, anywhere in the VPC; its security group narrows that to the ALB). data:
    5432 and 6379 from each app address, and each of ``collector_ports`` ({port: what}:
    the lab's alert receiver, the log collector) from every edge and app address. SSH
    rules come first so they exist before UFW is enabled.
    """
    rules = [
        Rule(SSH_PORT, ipaddress.ip_network(cidr), "ssh from admins", "limit")
        for cidr in admin_cidrs
    ]
    if role == "edge":
        rules += [Rule(port, None, "public web") for port in EDGE_PUBLIC_PORTS]
    elif role == "app":
        rules += [
            Rule(APP_HTTPS_PORT, ipaddress.ip_network(address), "https from edge")
            for address in edge_addresses
        ]
        rules += [
            Rule(APP_HTTPS_PORT, ipaddress.ip_network(cidr), "https from load balancer")
            for cidr in load_balancer_cidrs
        ]
    elif role == "data":
        rules += [
            Rule(port, ipaddress.ip_network(address), f"{service} from app")
            for port, service in DATA_PORTS.items()
            for address in app_addresses
        ]
        rules += [
            Rule(port, ipaddress.ip_network(address), f"{what} from hosts")
            for port, what in (collector_ports or {}).items()
            for address in [*edge_addresses, *app_addresses]
        ]
    else:
        raise ValueError(f"unknown host role {role!r}: expected edge, app or data")
    return rules


class UfwState(FactBase[dict]):
    """UFW's configuration: enabled, logging, default policies and the added user rules.

    ``{"active": bool, "ENABLED": "yes", "LOGLEVEL": "low", "DEFAULT_INPUT_POLICY": "DROP",
    ..., "rules": ["allow 80/tcp comment 'public web'", ...]}``; ``{}`` without ufw.
    """

    default = dict

    def requires_command(self) -> str:
        """Without ufw there is no state to read."""
        return "ufw"

    def command(self) -> str:
        """Read ufw.conf, /etc/default/ufw, ``ufw status`` and ``ufw show added``."""
        return (
            "grep -hE '^(ENABLED|LOGLEVEL|DEFAULT_[A-Z]+_POLICY)=' "
            "/etc/ufw/ufw.conf /etc/default/ufw; "
            "ufw status | head -n 1; ufw show added | grep '^ufw ' || true"
        )

    def process(self, output: list[str]) -> dict:
        """Key=value lines, the status line and the rule lines."""
        state: dict = {"active": False, "rules": []}
        for line in output:
            if line.startswith("ufw "):
                state["rules"].append(line.removeprefix("ufw "))
            elif line.startswith("Status:"):
                state["active"] = line.split(":", 1)[1].strip() == "active"
            elif "=" in line:
                key, value = line.split("=", 1)
                state[key] = value.strip().strip('"')
        return state


@operation()
def ufw_rules(rules: list[Rule]) -> Iterator[str]:
    """Exactly ``rules`` in UFW, comments included; any other rule is deleted.

    Deletions go first: ufw updates a rule in place when one with the same match is added
    (a new comment, allow -> limit), and a later delete would then remove the wanted rule.
    Open SSH sessions survive the gap (UFW accepts established connections).
    """
    wanted = [rule.ufw() for rule in rules]
    wanted_matches = {_without_comment(rule) for rule in wanted}
    current = host.get_fact(UfwState).get("rules", [])
    extra = [rule for rule in current if _without_comment(rule) not in wanted_matches]
    missing = [rule for rule in wanted if rule not in current]
    if not missing and not extra:
        host.noop("the UFW rules are exactly the allow-list")
        return
    for rule in extra:
        yield f"ufw delete {rule}"
    for rule in missing:
        yield f"ufw {rule}"


def _without_comment(rule: str) -> str:
    return rule.split(" comment ", 1)[0]


@operation()
def ufw_defaults(incoming: str, outgoing: str, routed: str) -> Iterator[str]:
    """UFW's default policy per direction (``deny``, ``allow`` or ``reject``)."""
    state = host.get_fact(UfwState)
    wanted = {"incoming": incoming, "outgoing": outgoing, "routed": routed}
    keys = {"incoming": "INPUT", "outgoing": "OUTPUT", "routed": "FORWARD"}
    changed = False
    for direction, policy in wanted.items():
        if state.get(f"DEFAULT_{keys[direction]}_POLICY") != POLICY_VALUES[policy]:
            changed = True
            yield f"ufw default {policy} {direction}"
    if not changed:
        host.noop("UFW default policies already set")


@operation()
def ufw_logging(level: str) -> Iterator[str]:
    """UFW logs blocked packets at ``level`` (``low``, ``medium``...)."""
    if host.get_fact(UfwState).get("LOGLEVEL") == level:
        host.noop(f"UFW logging already {level}")
        return
    yield f"ufw logging {level}"


@operation()
def ufw_enabled() -> Iterator[str]:
    """UFW active now and at boot."""
    state = host.get_fact(UfwState)
    if state.get("active") and state.get("ENABLED") == "yes":
        host.noop("UFW is already enabled")
        return
    yield "ufw --force enable"


@deploy("Firewall")
def firewall(rules: list[Rule], log_level: str = "low") -> None:
    """UFW installed, denying everything inbound and routed except ``rules``, logging on."""
    apt.packages(name="Install ufw", packages=["ufw"])
    # UFW applies its own sysctl.conf each time it starts, and Debian's turns martian
    # logging off: keep it on, as the base role's DevSec sysctl-17 wants.
    for scope in ("all", "default"):
        files.line(
            name=f"Keep UFW from disabling log_martians ({scope})",
            path="/etc/ufw/sysctl.conf",
            line=rf"^net/ipv4/conf/{scope}/log_martians=.*",
            replace=f"net/ipv4/conf/{scope}/log_martians=1",
        )
    # Rules before enabling: the SSH rule must exist before the default deny applies.
    ufw_rules(name="Allow only this host kind's ports in UFW, remove any other rule", rules=rules)
    ufw_defaults(
        name="Deny incoming and routed traffic, allow outgoing, by default",
        incoming="deny",
        outgoing="allow",
        routed="deny",
    )
    ufw_logging(name=f"Log blocked packets ({log_level})", level=log_level)
    ufw_enabled(name="Enable UFW now and at boot")
