"""The topology -> UFW allow-list mapping of roles/firewall, without any host."""

import ipaddress

import pytest

from roles.firewall import Rule, firewall_rules

ADMINS = [ipaddress.ip_network("172.30.77.1/32"), ipaddress.ip_network("10.8.0.0/24")]
EDGES = ["172.30.77.10"]
APPS = ["172.30.77.100", "172.30.77.120"]


def rules_for(role):
    return firewall_rules(role, admin_cidrs=ADMINS, edge_addresses=EDGES, app_addresses=APPS)


def opened(role):
    return {(rule.port, str(rule.source) if rule.source else "any") for rule in rules_for(role)}


@pytest.mark.parametrize("role", ["edge", "app", "data"])
def test_every_host_rate_limits_ssh_from_admin_networks_only(role):
    ssh = [rule for rule in rules_for(role) if rule.port == 22]
    assert {str(rule.source) for rule in ssh} == {"172.30.77.1/32", "10.8.0.0/24"}
    assert {rule.action for rule in ssh} == {"limit"}


@pytest.mark.parametrize("role", ["edge", "app", "data"])
def test_ssh_rules_come_first_so_enabling_ufw_keeps_the_session(role):
    ports = [rule.port for rule in rules_for(role)]
    assert ports[: len(ADMINS)] == [22] * len(ADMINS)


def test_edge_serves_http_and_https_to_anyone():
    assert opened("edge") - {(22, str(net)) for net in ADMINS} == {(80, "any"), (443, "any")}


def test_app_serves_https_to_the_edge_only():
    assert opened("app") - {(22, str(net)) for net in ADMINS} == {(443, "172.30.77.10/32")}


def test_app_port_3000_never_opened():
    assert all(rule.port != 3000 for role in ("edge", "app", "data") for rule in rules_for(role))


def test_data_serves_postgresql_and_redis_to_app_hosts_only():
    assert opened("data") - {(22, str(net)) for net in ADMINS} == {
        (port, f"{app}/32") for port in (5432, 6379) for app in APPS
    }


def test_unknown_role_rejected():
    with pytest.raises(ValueError, match="unknown host role 'db'"):
        rules_for("db")


@pytest.mark.parametrize(
    ("rule", "shown"),
    [
        (Rule(80, None, "public web"), "allow 80/tcp comment 'public web'"),
        (
            Rule(22, ipaddress.ip_network("172.30.77.1/32"), "ssh from admins", "limit"),
            "limit from 172.30.77.1 to any port 22 proto tcp comment 'ssh from admins'",
        ),
        (
            Rule(5432, ipaddress.ip_network("10.0.1.0/24"), "postgresql from app"),
            "allow from 10.0.1.0/24 to any port 5432 proto tcp comment 'postgresql from app'",
        ),
        (
            Rule(22, ipaddress.ip_network("2001:db8::/32"), "ssh from admins", "limit"),
            "limit from 2001:db8::/32 to any port 22 proto tcp comment 'ssh from admins'",
        ),
    ],
)
def test_rule_spelled_as_ufw_show_added_prints_it(rule, shown):
    # ufw_rules compares these strings with `ufw show added`: a mismatch would re-add forever.
    assert rule.ufw() == shown
