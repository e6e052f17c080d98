"""sshd hardening (roles/base, DevSec ssh-baseline ids in the test names' comments)."""

import pytest

# The app-host checks `mcpdeploy release` runs on the idle color (mcpdeploy/gates.py).
pytestmark = pytest.mark.gate

# Algorithms nobody should offer any more (ssh-audit: SHA-1, CBC, NIST curves, small DH).
WEAK = ("sha1", "cbc", "nistp", "group1-", "group14-", "hmac-md5", "umac-64", "3des")


@pytest.fixture(scope="module")
def sshd_effective(host):
    """``sshd -T``: the options sshd really runs with, drop-ins applied."""
    options = {}
    for line in host.check_output("sshd -T").splitlines():
        key, _, value = line.partition(" ")
        options[key] = value
    return options


def test_sshd_config_is_valid(host):
    assert host.run("sshd -t").rc == 0


def test_sshd_running(host):
    assert host.service("ssh").is_running


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("passwordauthentication", "no"),  # sshd-27
        ("permitemptypasswords", "no"),  # sshd-28
        ("kbdinteractiveauthentication", "no"),  # sshd-29
        ("pubkeyauthentication", "yes"),  # sshd-22
        ("authenticationmethods", "publickey"),
        ("hostbasedauthentication", "no"),  # sshd-25
        ("ignorerhosts", "yes"),  # sshd-23
        ("gssapiauthentication", "no"),  # sshd-33
        ("permituserenvironment", "no"),  # sshd-17
        ("strictmodes", "yes"),  # sshd-11
        ("x11forwarding", "no"),  # sshd-42
        ("allowagentforwarding", "no"),  # sshd-40
        ("allowtcpforwarding", "no"),  # sshd-39
        ("allowstreamlocalforwarding", "no"),
        ("gatewayports", "no"),  # sshd-41
        ("permittunnel", "no"),  # sshd-38
        ("tcpkeepalive", "no"),  # sshd-35
        ("clientaliveinterval", "300"),  # sshd-36
        ("clientalivecountmax", "3"),  # sshd-37
        ("loglevel", "VERBOSE"),  # sshd-13
    ],
)
def test_sshd_option_hardened(sshd_effective, option, value):
    assert sshd_effective[option] == value


def test_root_never_logs_in_with_a_password(sshd_effective):
    # sshd-06: "without-password" is how sshd -T prints prohibit-password (the lab's: it
    # deploys as root with a key); "no" on hosts deployed as the deploy user.
    assert sshd_effective["permitrootlogin"] in ("without-password", "no")


def test_sshd_allows_at_most_3_auth_tries(sshd_effective):
    assert int(sshd_effective["maxauthtries"]) <= 3  # sshd-19


def test_sshd_login_grace_time_at_most_60s(sshd_effective):
    assert int(sshd_effective["logingracetime"]) <= 60  # sshd-18


@pytest.mark.parametrize(
    "option", ["kexalgorithms", "ciphers", "macs", "hostkeyalgorithms", "pubkeyacceptedalgorithms"]
)
def test_sshd_offers_no_weak_algorithm(sshd_effective, option):
    offered = sshd_effective[option].split(",")  # sshd-01..03
    assert offered
    assert not [alg for alg in offered if any(weak in alg for weak in WEAK)]


def test_password_login_refused(host, ssh_client, settings):
    alias = host.backend.get_hostname()
    result = ssh_client(
        "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
        "-o", "PreferredAuthentications=password,keyboard-interactive",
        "-l", settings.deploy_user, alias, "true",
    )  # fmt: skip
    assert result.returncode == 255
    # The server offers public key authentication and nothing else.
    assert "Permission denied (publickey)" in result.stderr
