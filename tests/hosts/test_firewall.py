"""UFW state on each host (roles/firewall); what it lets through is test_reachability.py."""

import pytest

# The app-host checks `mcpdeploy release` runs on the idle color (mcpdeploy/gates.py).
pytestmark = pytest.mark.gate


def test_ufw_active_with_default_deny(host):
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing), deny (routed)" in status


def test_ufw_logging_on(host):
    assert "Logging: on" in host.check_output("ufw status verbose")


def test_ufw_enabled_at_boot(host):
    assert host.file("/etc/ufw/ufw.conf").contains("^ENABLED=yes$")
    assert host.service("ufw").is_enabled


def test_ssh_rate_limited_from_admin_networks_only(host, settings):
    rules = host.check_output("ufw show added").splitlines()
    ssh_rules = [rule for rule in rules if "port 22 " in rule or " 22/tcp" in rule]
    assert ssh_rules
    assert all(rule.startswith("ufw limit from ") for rule in ssh_rules), ssh_rules
    assert len(ssh_rules) == len(settings.admin_cidrs)
