"""Every host reachable over SSH, with the guide's 2 GB of memory and room on its disks."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from mcpdeploy.fleet import Fleet, FleetError
from mcpdeploy.preflight.check import Check

GiB = 1024**3
# The guide's minimum is 2 GB of RAM. MemTotal leaves out what firmware and the kernel
# reserve at boot (a 2 GiB VM such as t3.small reports about 1.85 GiB), so allow 10 %.
MIN_MEMORY_BYTES = int(2 * GiB * 0.9)
# Room for what a release adds before anything is cleaned up: an image pull (about 300 MB
# unpacked, more while layers are extracted), a day's backup on the data host, logs. Below
# this a release can fail half-way, e.g. a pull that fills an idle host's disk.
MIN_FREE_DISK_BYTES = 2 * GiB
# Filesystems that fill up, per host role: the root, Docker's images, PostgreSQL's data and
# the backups. Paths a host does not have are skipped; a filesystem is reported once.
DISK_PATHS = {
    "edge": ("/",),
    "app": ("/", "/var/lib/docker"),
    "data": ("/", "/var/lib/postgresql", "/var/backups"),
}


@dataclass(frozen=True)
class Disk:
    """Free space of the filesystem holding ``path`` (mounted at ``mount``)."""

    path: str
    mount: str
    free_bytes: int
    used_percent: int


@dataclass(frozen=True)
class HostFacts:
    """What a host reported over SSH: its memory and its filesystems' free space."""

    memory_bytes: int
    disks: tuple[Disk, ...]


def host_probe_command(role: str) -> str:
    """The shell command that prints a host's memory and free disk, one fact a line."""
    paths = " ".join(shlex.quote(p) for p in DISK_PATHS.get(role, ("/",)))
    return (
        "awk '/^MemTotal:/ {print \"memory\", $2 * 1024}' /proc/meminfo; "
        f'for p in {paths}; do [ -e "$p" ] && df -P -B1 "$p" | '
        'awk -v p="$p" \'NR == 2 {print "disk", p, $6, $4, $5}\'; done; exit 0'
    )


def parse_host_probe(output: str) -> HostFacts:
    """Read :func:`host_probe_command`'s output; raise ValueError when it has no memory line."""
    memory = 0
    disks: dict[str, Disk] = {}
    for line in output.splitlines():
        parts = line.split()
        if parts[:1] == ["memory"] and len(parts) == 2:
            memory = int(float(parts[1]))
        elif parts[:1] == ["disk"] and len(parts) == 5:
            _, path, mount, free, percent = parts
            disks.setdefault(mount, Disk(path, mount, int(free), int(percent.rstrip("%"))))
    if not memory:
        raise ValueError(f"no MemTotal in the host's answer: {output.strip()[:200]!r}")
    return HostFacts(memory, tuple(disks.values()))


def host_checks(name: str, facts: HostFacts, disk_alert_percent: int) -> list[Check]:
    """Memory and disk checks of one reachable host (``disk_alert_percent``: the setting
    at which the maintenance disk check alerts; reaching it here is a warning)."""
    memory = f"{facts.memory_bytes / GiB:.1f} GiB"
    if facts.memory_bytes >= MIN_MEMORY_BYTES:
        checks = [Check(f"memory {name}", "pass", memory)]
    else:
        checks = [
            Check(
                f"memory {name}",
                "fail",
                f"{memory}; the guide's minimum is 2 GiB",
                "give the host at least 2 GiB of memory",
            )
        ]
    for disk in facts.disks:
        label = f"disk {name} {disk.mount}"
        seen = f"{disk.free_bytes / GiB:.1f} GiB free ({disk.used_percent}% used)"
        free_up = (
            f"free space on {disk.mount} (old images: `docker image ls`; the journal: "
            "`journalctl --vacuum-size=200M`; old backups in /var/backups/mcpdeploy) or grow it"
        )
        if disk.free_bytes < MIN_FREE_DISK_BYTES:
            need = f"a release needs {MIN_FREE_DISK_BYTES // GiB} GiB"
            checks.append(Check(label, "fail", f"{seen}; {need}", free_up))
        elif disk.used_percent >= disk_alert_percent:
            alert = f"maintenance.diskAlertPercent is {disk_alert_percent}"
            checks.append(Check(label, "warn", f"{seen}; {alert}", free_up))
        else:
            checks.append(Check(label, "pass", seen))
    return checks


def probe_hosts(fleet: Fleet, disk_alert_percent: int) -> tuple[list[Check], set[str]]:
    """SSH, memory and disk checks of every host; returns them and the reachable hosts'
    names. An unreachable host gets its ``ssh`` check (failed) and nothing else."""
    checks: list[Check] = []
    reachable: set[str] = set()
    for host in fleet.hosts:
        try:
            result = fleet.run(host.name, host_probe_command(host.role), timeout=30, check=False)
            if result.returncode != 0:
                last = (result.stderr or result.stdout).strip().splitlines()[-1:]
                raise FleetError(f"ssh exited {result.returncode}: {''.join(last)}")
            facts = parse_host_probe(result.stdout)
        except (FleetError, ValueError) as exc:
            lab = (
                " (lab: `mcpdeploy lab status`, `mcpdeploy lab up`)" if fleet.stack == "lab" else ""
            )
            checks.append(
                Check(
                    f"ssh {host.name}",
                    "fail",
                    f"unreachable: {exc}",
                    f"is it up? `{shlex.join([*fleet.ssh, host.name, 'true'])}` shows why{lab}",
                )
            )
            continue
        reachable.add(host.name)
        checks.append(Check(f"ssh {host.name}", "pass", f"{host.role} at {host.address}"))
        checks.extend(host_checks(host.name, facts, disk_alert_percent))
    return checks, reachable
