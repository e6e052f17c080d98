"""Time sync, kernel parameters, journald, umask and unused services (roles/base)."""

import pytest

from roles.base import SYSCTLS, UNUSED_SERVICES

# The app-host checks `mcpdeploy release` runs on the idle color (mcpdeploy/gates.py).
pytestmark = pytest.mark.gate

SYSCTL_FILE = "/etc/sysctl.d/60-mcpdeploy-hardening.conf"


def test_time_sync_daemon_running(host):
    chrony = host.service("chrony")
    assert chrony.is_running
    assert chrony.is_enabled
    assert host.run("chronyc -n tracking").rc == 0


def test_time_sync_never_steps_a_shared_container_clock(host, in_container):
    if not in_container(host):
        pytest.skip("not a container: chronyd sets the clock")
    # A container shares the machine's clock; -x keeps chronyd from setting it.
    pid = host.check_output("pidof chronyd").split()[0]
    assert "-x" in host.file(f"/proc/{pid}/cmdline").content_string.split("\0")


@pytest.fixture(scope="module")
def persisted_sysctls(host):
    """The parameters the host applies at every boot."""
    lines = host.file(SYSCTL_FILE).content_string.splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): int(value) for key, value in pairs}


@pytest.mark.parametrize(("key", "value"), sorted(SYSCTLS.items()))
def test_kernel_parameter_persisted(persisted_sysctls, key, value):
    assert persisted_sysctls.get(key) == value


def test_kernel_parameters_live(host, in_container):
    """Every baseline parameter the host's kernel lets it own has its value.

    A container owns its network namespace (net.*); kernel.* and fs.* belong to the
    machine's kernel and are checked on real hosts (docs/hardening.md).
    """
    owned = {
        key: value
        for key, value in SYSCTLS.items()
        if key.startswith("net.") or not in_container(host)
    }
    live = {key: host.sysctl(key) for key in owned}
    assert {key: live[key] for key, value in owned.items() if live[key] != value} == {}


def test_journal_capped(host, settings):
    effective = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert f"SystemMaxUse={settings.journald_max_use}" in effective.splitlines()
    assert host.service("systemd-journald").is_running


def test_login_defs_umask_027(host):
    assert host.file("/etc/login.defs").contains(r"^UMASK[[:space:]]\+027$")


def test_login_shell_umask_027(host):
    assert host.check_output("bash -lc umask") == "0027"


@pytest.mark.parametrize("unit", UNUSED_SERVICES)
def test_unused_service_not_running(host, unit):
    assert not host.service(unit).is_running
