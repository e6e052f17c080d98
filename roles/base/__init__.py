"""Base role: what every host gets before it becomes an edge, app or data host.

Each control names its reason: a DevSec baseline id (linux-baseline ``os-``/``sysctl-``,
ssh-baseline ``sshd-``) or the guide's Security Hardening section. docs/hardening.md maps
every control to its test in tests/hosts/.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.apt import AptSources
from pyinfra.facts.server import LinuxDistribution
from pyinfra.facts.systemd import SystemdEnabled
from pyinfra.operations import apt, files, server, systemd

from roles.base.facts import ContainerVirtualization, WritableSysctls
from roles.base.operations import install_validated

TEMPLATES = Path(__file__).parent / "templates"
# Candidates are rendered here, checked by their own tool, then installed.
STAGING = "/etc/mcpdeploy/staged"

# ssh-audit's hardening guide for OpenSSH 9.2 (Debian 12), which paramiko (pyinfra) also speaks.
SSH_KEX = (
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)
SSH_CIPHERS = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
SSH_MACS = (
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "umac-128-etm@openssh.com",
)
SSH_HOST_KEY_ALGORITHMS = (
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256",
    "rsa-sha2-256-cert-v01@openssh.com",
)

# Kernel parameters: DevSec linux-baseline ids, plus the dev-sec os_hardening (KSPP) kernel
# defaults. Left out on purpose: sysctl-01/19 forwarding (Docker on app hosts forwards),
# sysctl-07 tcp_timestamps (breaks PAWS, RFC 7323), sysctl-29 modules_disabled (ufw loads modules).
SYSCTLS: dict[str, int] = {
    "net.ipv4.conf.all.rp_filter": 1,  # sysctl-02
    "net.ipv4.conf.default.rp_filter": 1,  # sysctl-02
    "net.ipv4.icmp_ignore_bogus_error_responses": 1,  # sysctl-03
    "net.ipv4.icmp_echo_ignore_broadcasts": 1,  # sysctl-04
    "net.ipv4.icmp_ratelimit": 100,  # sysctl-05
    "net.ipv4.icmp_ratemask": 88089,  # sysctl-06
    "net.ipv4.conf.all.arp_ignore": 1,  # sysctl-08
    "net.ipv4.conf.all.arp_announce": 2,  # sysctl-09
    "net.ipv4.tcp_rfc1337": 1,  # sysctl-10
    "net.ipv4.tcp_syncookies": 1,  # sysctl-11
    "net.ipv4.conf.all.accept_source_route": 0,  # sysctl-13
    "net.ipv4.conf.default.accept_source_route": 0,  # sysctl-13
    "net.ipv6.conf.all.accept_source_route": 0,  # sysctl-13
    "net.ipv6.conf.default.accept_source_route": 0,  # sysctl-13
    "net.ipv4.conf.all.accept_redirects": 0,  # sysctl-14
    "net.ipv4.conf.default.accept_redirects": 0,  # sysctl-14
    "net.ipv4.conf.all.secure_redirects": 0,  # sysctl-15
    "net.ipv4.conf.default.secure_redirects": 0,  # sysctl-15
    "net.ipv4.conf.all.send_redirects": 0,  # sysctl-16
    "net.ipv4.conf.default.send_redirects": 0,  # sysctl-16
    "net.ipv4.conf.all.log_martians": 1,  # sysctl-17
    "net.ipv4.conf.default.log_martians": 1,  # sysctl-17
    "net.ipv6.conf.all.accept_redirects": 0,  # sysctl-20
    "net.ipv6.conf.default.accept_redirects": 0,  # sysctl-20
    "net.ipv6.conf.all.accept_ra": 0,  # sysctl-25
    "net.ipv6.conf.default.accept_ra": 0,  # sysctl-25
    "kernel.sysrq": 0,  # sysctl-30
    "fs.suid_dumpable": 0,  # sysctl-31a
    "kernel.randomize_va_space": 2,  # sysctl-32
    "fs.protected_fifos": 1,  # sysctl-34
    "fs.protected_hardlinks": 1,  # sysctl-34
    "fs.protected_regular": 2,  # sysctl-34
    "fs.protected_symlinks": 1,  # sysctl-34
    "kernel.kptr_restrict": 2,  # os_hardening: hide kernel pointers
    "kernel.dmesg_restrict": 1,  # os_hardening: kernel log for root only
    "kernel.yama.ptrace_scope": 1,  # os_hardening: ptrace only own children
}

# Network daemons none of our hosts needs: each one running is attack surface for nothing.
UNUSED_SERVICES = (
    "avahi-daemon.service",
    "avahi-daemon.socket",
    "cups.service",
    "cups.socket",
    "rpcbind.service",
    "rpcbind.socket",
    "nfs-server.service",
    "bluetooth.service",
    "ModemManager.service",
)


@deploy("Refresh apt package lists")
def apt_lists(cache_seconds: int = 3600) -> None:
    """The Debian security repository present and package lists at most ``cache_seconds`` old."""
    suite = host.get_fact(LinuxDistribution)["release_meta"].get("VERSION_CODENAME") + "-security"
    # Guide, Security Hardening: patches need a security source; minimal images may lack one.
    # Any mirror of the suite will do (cloud images list deb.debian.org/debian-security).
    if not any(repo["distribution"] == suite for repo in host.get_fact(AptSources)):
        repository = apt.repo(
            name="Add the Debian security repository",
            src=f"deb http://security.debian.org/debian-security {suite} main",
            filename="debian-security",
        )
        apt.update(
            name="Update apt package lists now that the security repository is added",
            _if=repository.did_change,
        )
    apt.update(
        name="Update apt package lists if older than the cache time", cache_time=cache_seconds
    )


@deploy("Install security updates unattended")
def security_updates() -> None:
    """unattended-upgrades from the Debian-Security origin only, run daily by apt's timers."""
    apt.packages(name="Install unattended-upgrades", packages=["unattended-upgrades"])
    files.template(
        name="Allow unattended upgrades from the security origin only",
        src=str(TEMPLATES / "unattended-upgrades.conf.j2"),
        dest="/etc/apt/apt.conf.d/52mcpdeploy-unattended-upgrades",
        mode="644",
    )
    files.template(
        name="Run unattended upgrades daily",
        src=str(TEMPLATES / "auto-upgrades.conf.j2"),
        dest="/etc/apt/apt.conf.d/20auto-upgrades",
        mode="644",
    )


@deploy("Keep the clock in sync")
def time_sync() -> None:
    """chrony running (TLS validity, token expiry and log correlation need a true clock).

    Inside a container chronyd runs with ``-x``: it tracks time but never sets the clock,
    which is not namespaced; with CAP_SYS_TIME (the lab grants it) it would step the clock
    of the whole machine.
    """
    container = host.get_fact(ContainerVirtualization)
    apt.packages(name="Install chrony", packages=["chrony"])
    options = files.template(
        name="Let chronyd set the clock only outside containers",
        src=str(TEMPLATES / "chrony-default.j2"),
        dest="/etc/default/chrony",
        mode="644",
        set_clock=container is None,
    )
    systemd.service(
        name="Run chrony now and at boot", service="chrony.service", running=True, enabled=True
    )
    systemd.service(
        name="Restart chrony to apply its options",
        service="chrony.service",
        restarted=True,
        _if=options.did_change,
    )


@deploy("Add the deploy user")
def deploy_user(user: str, authorized_keys: Sequence[str]) -> None:
    """A non-root ``user`` logging in with ``authorized_keys`` only, passwordless sudo."""
    apt.packages(name="Install sudo", packages=["sudo"])
    server.user(  # noqa: S604 - shell= is the login shell, not a subprocess
        name=f"Add user {user} with key login only",
        user=user,
        shell="/bin/bash",
        home=f"/home/{user}",
        create_home=True,
        public_keys=list(authorized_keys),
        delete_keys=True,
    )
    staged = f"{STAGING}/sudoers-{user}"
    files.template(
        name=f"Stage the sudoers drop-in for {user}",
        src=str(TEMPLATES / "sudoers-deploy.j2"),
        dest=staged,
        mode="440",
        account=user,
    )
    install_validated(
        name=f"Install the sudoers drop-in for {user} once visudo accepts it",
        src=staged,
        dest=f"/etc/sudoers.d/mcpdeploy-{user}",
        validate="visudo -cqf {path}",
        mode="440",
    )


@deploy("Harden sshd")
def sshd(
    permit_root_login: str = "prohibit-password",
    max_auth_tries: int = 3,
    login_grace_time: int = 30,
    client_alive_interval: int = 300,
    client_alive_count_max: int = 3,
) -> None:
    """Key-only sshd with modern algorithms, validated by ``sshd -t`` before any reload.

    ``permit_root_login`` stays ``prohibit-password`` while the inventory deploys as root
    with a key (the lab, bring-your-own); pass ``"no"`` for hosts deployed as the deploy user.
    """
    staged = f"{STAGING}/sshd-hardening.conf"
    files.template(
        name="Stage the sshd hardening drop-in",
        src=str(TEMPLATES / "sshd-hardening.conf.j2"),
        dest=staged,
        mode="600",
        permit_root_login=permit_root_login,
        max_auth_tries=max_auth_tries,
        login_grace_time=login_grace_time,
        client_alive_interval=client_alive_interval,
        client_alive_count_max=client_alive_count_max,
        kex_algorithms=SSH_KEX,
        ciphers=SSH_CIPHERS,
        macs=SSH_MACS,
        host_key_algorithms=SSH_HOST_KEY_ALGORITHMS,
    )
    installed = install_validated(
        name="Install the sshd drop-in once sshd -t accepts it alone and in the full config",
        src=staged,
        dest="/etc/ssh/sshd_config.d/00-mcpdeploy-hardening.conf",
        validate="sshd -t -f {path}",
        validate_installed="sshd -t",
        mode="600",
    )
    systemd.service(
        name="Run sshd now and at boot", service="ssh.service", running=True, enabled=True
    )
    systemd.service(
        name="Reload sshd to apply the new drop-in",
        service="ssh.service",
        reloaded=True,
        _if=installed.did_change,
    )


@deploy("Harden kernel parameters")
def kernel(sysctls: Mapping[str, int] = SYSCTLS) -> None:
    """Persist ``sysctls`` in /etc/sysctl.d and apply each one the kernel lets this host set.

    In a container only the network namespace's own ``net.*`` keys are ever applied, and
    only if its /proc/sys is writable (Docker mounts it read-only): the other keys belong to
    the machine's kernel. docs/hardening.md lists what a lab container cannot set.
    """
    files.template(
        name="Persist the hardened kernel parameters for every boot",
        src=str(TEMPLATES / "sysctl-hardening.conf.j2"),
        dest="/etc/sysctl.d/60-mcpdeploy-hardening.conf",
        mode="644",
        sysctls=dict(sysctls),
    )
    settable = set(host.get_fact(WritableSysctls, keys=sorted(sysctls)))
    if host.get_fact(ContainerVirtualization) is not None:
        # Only net.* lives in the container's own namespace; the rest is the machine's kernel.
        settable = {key for key in settable if key.startswith("net.")}
    for key, value in sysctls.items():
        if key in settable:
            server.sysctl(name=f"Set {key} = {value} now", key=key, value=value)


@deploy("Bound the journal")
def journald(max_use: str) -> None:
    """journald keeps at most ``max_use`` on disk (e.g. ``500M``)."""
    limits = files.template(
        name=f"Cap the journal at {max_use}",
        src=str(TEMPLATES / "journald.conf.j2"),
        dest="/etc/systemd/journald.conf.d/60-mcpdeploy.conf",
        mode="644",
        max_use=max_use,
    )
    systemd.service(
        name="Restart journald to apply the cap",
        service="systemd-journald.service",
        restarted=True,
        _if=limits.did_change,
    )


@deploy("Restrict the default umask")
def umask(value: str = "027") -> None:
    """New files are not world-readable, for login shells and for useradd (DevSec os-05)."""
    files.line(
        name=f"Set UMASK {value} in login.defs",
        path="/etc/login.defs",
        line=r"^UMASK[[:space:]].*",
        replace=f"UMASK\t\t{value}",
    )
    files.template(
        name=f"Set umask {value} for login shells",
        src=str(TEMPLATES / "umask.sh.j2"),
        dest="/etc/profile.d/mcpdeploy-umask.sh",
        mode="644",
        umask=value,
    )


@deploy("Turn off unused services")
def unused_services(units: Sequence[str] = UNUSED_SERVICES) -> None:
    """Stop and disable each of ``units`` that is installed on the host."""
    installed = host.get_fact(SystemdEnabled)
    for unit in units:
        if unit in installed:
            systemd.service(
                name=f"Stop and disable {unit}", service=unit, running=False, enabled=False
            )


@deploy("Base hardening")
def base(
    deploy_user_name: str,
    deploy_authorized_keys: Sequence[str],
    journald_max_use: str,
    permit_root_login: str = "prohibit-password",
) -> None:
    """Every control of the base role, in the order a fresh host needs them."""
    apt_lists()
    security_updates()
    time_sync()
    deploy_user(deploy_user_name, deploy_authorized_keys)
    sshd(permit_root_login=permit_root_login)
    kernel()
    journald(journald_max_use)
    umask()
    unused_services()
