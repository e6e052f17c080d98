"""Package lists and unattended security upgrades (roles/base)."""

import pytest

# The app-host checks `mcpdeploy release` runs on the idle color (mcpdeploy/gates.py).
pytestmark = pytest.mark.gate


def test_debian_security_repository_is_a_package_source(host):
    # Guide, Security Hardening: security patches need the security archive.
    assert "-security" in host.run("apt-cache policy").stdout


def test_unattended_upgrades_installed(host):
    assert host.package("unattended-upgrades").is_installed


def test_unattended_upgrades_take_security_origin_only(host):
    dump = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    # apt-config prints the list's own (empty) value, then one "::" line per pattern.
    patterns = [
        line
        for line in dump.splitlines()
        if line.startswith("Unattended-Upgrade::Origins-Pattern:: ")
    ]
    assert patterns, dump
    assert all("label=Debian-Security" in pattern for pattern in patterns), dump


@pytest.mark.parametrize(
    "key", ["APT::Periodic::Update-Package-Lists", "APT::Periodic::Unattended-Upgrade"]
)
def test_unattended_upgrades_run_daily(host, key):
    assert host.check_output(f"apt-config dump {key}") == f'{key} "1";'


def test_apt_upgrade_timer_enabled(host):
    assert host.service("apt-daily-upgrade.timer").is_enabled
