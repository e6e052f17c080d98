"""The lab's shape follows from Pulumi.lab.yaml alone."""

from __future__ import annotations

import ipaddress

from mcpdeploy.lab import topology
from mcpdeploy.settings import load_settings, parse_settings


def lab_settings(**extra: object):
    config = {
        "mcpdeploy:domain": "mcp.lab.test",
        "mcpdeploy:activeColor": "blue",
        "mcpdeploy:image": "registry.mcp.lab.test:5000/app:1",
        "mcpdeploy:adminCidrs": ["172.30.77.1/32"],
    }
    config.update({f"mcpdeploy:{k}": v for k, v in extra.items()})
    return parse_settings({"config": config})


def test_default_lab_has_the_four_hosts_of_the_design():
    topo = topology(load_settings("lab"))
    assert [(h.name, h.role, h.color) for h in topo.hosts] == [
        ("edge", "edge", None),
        ("app-blue", "app", "blue"),
        ("app-green", "app", "green"),
        ("data", "data", None),
    ]


def test_addresses_are_distinct_inside_the_subnet_and_not_the_gateway():
    topo = topology(lab_settings(lab={"subnet": "10.99.0.0/24"}))
    addresses = [ipaddress.ip_address(h.address) for h in topo.hosts]
    addresses.append(ipaddress.ip_address(topo.registry_address))
    assert len(set(addresses)) == len(addresses)
    assert all(a in topo.subnet for a in addresses)
    assert str(topo.gateway) == "10.99.0.1" and topo.gateway not in map(str, addresses)


def test_published_ports_are_distinct_and_follow_settings():
    topo = topology(lab_settings(lab={"sshPortBase": 3000, "httpsPort": 9443}))
    ports = topo.published_ports()
    assert len(set(ports)) == len(ports)
    assert [h.ssh_port for h in topo.hosts] == [3000, 3001, 3002, 3003]
    assert topo.url == "https://127.0.0.1:9443"


def test_more_app_hosts_per_color_are_numbered():
    topo = topology(lab_settings(appHostsPerColor=2))
    names = [h.name for h in topo.hosts if h.role == "app"]
    assert names == ["app-blue-1", "app-blue-2", "app-green-1", "app-green-2"]
