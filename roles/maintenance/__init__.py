"""Maintenance role: the guide's Maintenance Procedures as hardened systemd timers.

Every procedure is a oneshot service run by a timer; a run that fails triggers
``mcp-alert@<unit>.service``, which posts the unit's last journal lines as Slack-shaped JSON
(``{"text": ...}``) to the alert webhook. Every unit is rendered from one template
(``templates/job.service.j2``) with the same sandbox: ``tests/unit/test_maintenance_units.py``
scores each with ``systemd-analyze security`` (exposure ≤ 3.0). docs/maintenance.md maps
each guide procedure to its unit and to what a managed service does instead on AWS.

:func:`render_units` is pure (unit-tested); the ``@deploy`` functions install a host's part.
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, server, systemd

from roles.base.operations import put_private

TEMPLATES = Path(__file__).parent / "templates"
SCRIPTS = Path(__file__).parent / "scripts"
UNIT_DIR = "/etc/systemd/system"
LIB_DIR = "/usr/local/lib/mcpdeploy"
RESTORE_COMMAND = "/usr/local/sbin/mcp-restore"
# The webhook URL, the metrics token, the receiver's key: readable by root and the jobs'
# group only. (systemd's LoadCredential= would be neater, but it fails in the lab's
# containers, whose /run is Docker's tmpfs.)
SECRETS_DIR = "/etc/mcpdeploy/maintenance"
SECRETS_GROUP = "mcp-maintenance"
DEPLOYMENT_JSON = "/etc/mcpdeploy/deployment.json"
BACKUP_DIR = "/var/backups/mcpdeploy"
PYTHON = "/usr/bin/python3"
ALERT_UNIT = "mcp-alert@.service"
RECEIVER_STATE = "mcp-alert-receiver"
RECEIVER_ALERTS = f"/var/lib/{RECEIVER_STATE}/alerts.jsonl"
INTERNET = ("AF_UNIX", "AF_INET", "AF_INET6")


@dataclass(frozen=True)
class Job:
    """One maintenance unit (and its timer when ``schedule`` is set).

    ``user`` None runs it as a DynamicUser; ``groups`` are its supplementary groups
    (``SECRETS_GROUP`` reads the secrets in ``SECRETS_DIR``).
    """

    name: str
    description: str
    reason: str
    command: str
    schedule: str | None = None
    randomized_delay_seconds: int = 0
    user: str | None = None
    groups: tuple[str, ...] = ()
    private_users: bool = True
    capabilities: tuple[str, ...] = ()
    address_families: tuple[str, ...] = ("AF_UNIX",)
    read_write_paths: tuple[str, ...] = ()
    state_directory: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    alert: bool = True
    service_type: Literal["oneshot", "simple"] = "oneshot"
    timeout_seconds: int = 300


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - systemd unit files, not HTML
    )


def render_units(jobs: Sequence[Job]) -> dict[str, str]:
    """Each job's unit (and timer) as {unit file name: content}."""
    env = _environment()
    units = {}
    for job in jobs:
        units[f"{job.name}.service"] = env.get_template("job.service.j2").render(job=job)
        if job.schedule:
            units[f"{job.name}.timer"] = env.get_template("job.timer.j2").render(job=job)
    return units


def _script(name: str) -> str:
    return f"{LIB_DIR}/{name}"


def _python(name: str, *args: object) -> str:
    return " ".join([PYTHON, _script(name), *(shlex.quote(str(a)) for a in args)])


def alert_job() -> Job:
    """``mcp-alert@UNIT``: post UNIT's failure to the webhook (the OnFailure= of every job)."""
    return Job(
        name="mcp-alert@",
        description="Alert the webhook that %i failed",
        reason="guide, Monitoring and Alerting: failures are posted to the alert webhook",
        command=_python(
            "alert.py",
            "--webhook-file",
            f"{SECRETS_DIR}/alert-webhook",
            "--ca",
            f"{SECRETS_DIR}/ca.crt",
            "%i",
        ),
        # The failed unit's journal says why it failed.
        groups=("systemd-journal", SECRETS_GROUP),
        address_families=INTERNET,
        alert=False,
        timeout_seconds=60,
    )


def disk_check_job(percent: int) -> Job:
    """Hourly: alert when any local filesystem is more than ``percent`` full."""
    return Job(
        name="mcp-disk-check",
        description=f"Check that no filesystem is more than {percent}% full",
        reason="guide, Daily Tasks: check disk space",
        command=_python("disk_check.py", percent),
        schedule="hourly",
    )


def log_cleanup_job(days: int) -> Job:
    """Daily: delete rotated logs and journal entries older than ``days``."""
    return Job(
        name="mcp-log-cleanup",
        description=f"Delete logs older than {days} days",
        reason="guide, Weekly Tasks: clean old logs (retention.logDays)",
        command=f"/bin/sh {_script('log_cleanup.sh')} {days}",
        schedule="daily",
        randomized_delay_seconds=1800,
        user="root",
        private_users=False,
        # Rotated logs live in daemons' own directories too (/var/log/chrony is _chrony's).
        capabilities=("CAP_DAC_OVERRIDE",),
        read_write_paths=("/var/log",),
    )


def certificate_check_job(server_name: str, days: int) -> Job:
    """Daily: alert when the certificate nginx serves expires within ``days`` days."""
    return Job(
        name="mcp-cert-check",
        description=f"Check that the served certificate is valid for {days} more days",
        reason="guide, Weekly Tasks: check SSL certificate expiration",
        command=f"/bin/sh {_script('cert_check.sh')} {shlex.quote(server_name)} {days}",
        schedule="daily",
        randomized_delay_seconds=1800,
        address_families=INTERNET,
    )


def health_check_job(server_name: str, addresses: Sequence[str]) -> Job:
    """Every minute: GET /health/mcp on each address, verified as ``server_name``."""
    return Job(
        name="mcp-health-check",
        description="Check /health/mcp through the edge and on every app host",
        reason="guide, Monitoring and Alerting: health_check.sh",
        command=_python(
            "health_check.py",
            "--server-name",
            server_name,
            "--ca",
            f"{SECRETS_DIR}/ca.crt",
            *addresses,
        ),
        schedule="minutely",
        address_families=INTERNET,
        groups=(SECRETS_GROUP,),
        timeout_seconds=50,
    )


def performance_check_job(
    *, url: str, error_percent: float, slow_seconds: float, window_minutes: int
) -> Job:
    """Every window: alert on a high error rate or slow responses in the service's metrics."""
    return Job(
        name="mcp-perf-check",
        description="Check the service's error rate and response times",
        reason="guide, Performance Monitoring: error rate above 5 %, responses over 5 s",
        command=_python(
            "perf_check.py",
            "--url",
            url,
            "--error-percent",
            error_percent,
            "--slow-seconds",
            slow_seconds,
            "--token-file",
            f"{SECRETS_DIR}/metrics-token",
            "/var/lib/mcp-perf-check/counters.json",
        ),
        schedule=f"*:0/{window_minutes}",
        address_families=INTERNET,
        # Kept between runs: the counters the next window is measured from.
        state_directory="mcp-perf-check",
        groups=(SECRETS_GROUP,),
        timeout_seconds=60,
    )


def audit_cleanup_job(container: str, days: int) -> Job:
    """Daily: the service's own ``audit-cleanup`` in its running container."""
    return Job(
        name="mcp-audit-cleanup",
        description=f"Delete audit records older than {days} days",
        reason="guide, Monthly Tasks: clean old audit logs (retention.auditLogDays)",
        command=(
            f"/usr/bin/docker exec {shlex.quote(container)} mcp-service audit-cleanup --days {days}"
        ),
        schedule="daily",
        randomized_delay_seconds=1800,
        # Root without any capability: the Docker socket is root's.
        user="root",
        private_users=False,
        # An exec needs no registry credentials: the client reads its (absent) config from
        # the private /tmp, not root's home, which ProtectHome= hides.
        environment={"DOCKER_CONFIG": "/tmp"},  # noqa: S108 - PrivateTmp: its own, empty
        after=("docker.service",),
    )


def backup_job(*, database: str, days: int, bucket: str | None = None, prefix: str = "") -> Job:
    """Daily: pg_dump and the configuration, checksummed, pruned after ``days``."""
    environment = {"MCP_BACKUP_BUCKET": bucket, "MCP_BACKUP_PREFIX": prefix} if bucket else {}
    return Job(
        name="mcp-backup",
        description=f"Back up {database} and the MCP configuration",
        reason="guide, Backup Procedures: backup_database.sh and backup_config.sh",
        command=(
            f"/bin/sh {_script('backup.sh')} {BACKUP_DIR} {shlex.quote(database)} {days} "
            f"{DEPLOYMENT_JSON}"
        ),
        schedule="*-*-* 02:15:00",
        randomized_delay_seconds=900,
        # Peer authentication over the local socket: no password anywhere.
        user="postgres",
        address_families=INTERNET if bucket else ("AF_UNIX",),
        read_write_paths=(BACKUP_DIR,),
        environment=environment,
        after=("postgresql.service",),
        timeout_seconds=3600,
    )


def receiver_job(port: int) -> Job:
    """The lab's webhook: a long-running HTTPS receiver writing alerts to a file."""
    return Job(
        name="mcp-alert-receiver",
        description="Lab alert webhook receiver",
        reason="the lab has no Slack: alerts land in a file the tests read",
        command=_python(
            "alert_receiver.py",
            "--port",
            port,
            "--certificate",
            f"{SECRETS_DIR}/receiver.crt",
            "--key",
            f"{SECRETS_DIR}/receiver.key",
            RECEIVER_ALERTS,
        ),
        address_families=INTERNET,
        state_directory=RECEIVER_STATE,
        groups=(SECRETS_GROUP,),
        service_type="simple",
    )


def _install_scripts(names: Sequence[str]) -> None:
    files.directory(name=f"{LIB_DIR} for the maintenance scripts", path=LIB_DIR, mode="0755")
    for name in names:
        files.put(
            name=f"Install {LIB_DIR}/{name}",
            src=str(SCRIPTS / name),
            dest=f"{LIB_DIR}/{name}",
            mode="0755",
        )


def _changed(operations: Sequence[OperationMeta]) -> Callable[[], bool]:
    return lambda: any(op.did_change() for op in operations)


def _secret(path: str, value: str, what: str) -> OperationMeta:
    return put_private(
        name=f"Store {what} for the jobs' group only (content never shown)",
        content=value,
        dest=path,
        group=SECRETS_GROUP,
        mode="640",
    )


def _install_jobs(jobs: Sequence[Job], inputs: Sequence[OperationMeta] = ()) -> None:
    """Units in place, systemd reloaded when one changed, every timer enabled and started.

    A job without a timer is a long-running service: restarted when it or ``inputs`` changed.
    """
    written = [
        files.put(
            name=f"Install the unit {unit}",
            src=io.StringIO(content),
            dest=f"{UNIT_DIR}/{unit}",
            mode="0644",
        )
        for unit, content in render_units(jobs).items()
    ]
    changes = [*written, *inputs]
    systemd.daemon_reload(
        name="Reload systemd to read the changed units",
        _if=_changed(written),
    )
    for job in jobs:
        if job.schedule:
            systemd.service(
                name=f"Schedule {job.name}: enable and start its timer",
                service=f"{job.name}.timer",
                running=True,
                enabled=True,
            )
        elif job.service_type == "simple":
            systemd.service(
                name=f"Run {job.name} now and at boot",
                service=f"{job.name}.service",
                running=True,
                enabled=True,
            )
            systemd.service(
                name=f"Restart {job.name} to apply its new unit or secrets",
                service=f"{job.name}.service",
                restarted=True,
                _if=_changed(changes),
            )


@deploy("Maintenance alerts")
def alerting(*, webhook_url: str, ca_pem: str, disk_alert_percent: int, log_days: int) -> None:
    """Every host: the alert unit, the disk-space check and the log cleanup.

    ``webhook_url`` empty: alerts are written to the journal only. ``ca_pem``: the stack's
    internal CA, trusted besides the system's CAs by the alert and the health check.
    """
    server.group(
        name=f"Group {SECRETS_GROUP}: the maintenance jobs that read a secret",
        group=SECRETS_GROUP,
        system=True,
    )
    files.directory(
        name="Directory for the maintenance jobs' secrets, closed to everyone else",
        path=SECRETS_DIR,
        user="root",
        group=SECRETS_GROUP,
        mode="0750",
    )
    _install_scripts(["alert.py", "disk_check.py", "log_cleanup.sh"])
    webhook = _secret(f"{SECRETS_DIR}/alert-webhook", webhook_url, "the alert webhook URL")
    files.put(
        name="Install the stack's internal CA for the alert and the health check",
        src=io.StringIO(ca_pem),
        dest=f"{SECRETS_DIR}/ca.crt",
        mode="0644",
    )
    _install_jobs(
        [alert_job(), disk_check_job(disk_alert_percent), log_cleanup_job(log_days)], [webhook]
    )


@deploy("Certificate expiry check")
def certificate_check(*, server_name: str, warning_days: int) -> None:
    """Edge and app hosts: alert when nginx's certificate expires within ``warning_days``."""
    _install_scripts(["cert_check.sh"])
    _install_jobs([certificate_check_job(server_name, warning_days)])


@deploy("Health check of /health/mcp")
def health_check(*, server_name: str, addresses: Sequence[str]) -> None:
    """Edge: every minute, /health/mcp through the edge (127.0.0.1) and on each app host.

    App hosts' certificates are verified with the stack's CA installed by :func:`alerting`.
    """
    _install_scripts(["health_check.py"])
    _install_jobs([health_check_job(server_name, addresses)])


@deploy("Performance alerts from the service's metrics")
def performance_check(
    *, url: str, metrics_token: str, error_percent: float, slow_seconds: float, window_minutes: int
) -> None:
    """App hosts: read ``url`` (Prometheus text) every window and alert past the thresholds."""
    apt.packages(
        name="Install the Prometheus client's text parser",
        packages=["python3-prometheus-client"],
    )
    _install_scripts(["perf_check.py"])
    token = _secret(f"{SECRETS_DIR}/metrics-token", metrics_token, "the metrics token")
    _install_jobs(
        [
            performance_check_job(
                url=url,
                error_percent=error_percent,
                slow_seconds=slow_seconds,
                window_minutes=window_minutes,
            )
        ],
        [token],
    )


@deploy("Audit log retention")
def audit_cleanup(*, container: str, days: int) -> None:
    """App hosts: daily ``mcp-service audit-cleanup --days days`` in the running container."""
    _install_jobs([audit_cleanup_job(container, days)])


@deploy("PostgreSQL and configuration backups")
def backups(
    *,
    database: str,
    days: int,
    deployment_json: str,
    bucket: str | None = None,
    bucket_prefix: str = "",
) -> None:
    """Data host: daily dumps in ``BACKUP_DIR``, optionally copied to S3, and mcp-restore.

    ``deployment_json`` is the deployment's settings without secrets, kept with each backup.
    """
    apt.packages(name="Install the PostgreSQL client tools", packages=["postgresql-client"])
    if bucket:
        apt.packages(name="Install boto3 for the S3 copy", packages=["python3-boto3"])
    _install_scripts(["backup.sh", "backup_upload.py"])
    files.put(
        name=f"Install {RESTORE_COMMAND}: checksum-verified, row-count-verified restore",
        src=str(SCRIPTS / "restore.py"),
        dest=RESTORE_COMMAND,
        mode="0755",
    )
    files.directory(
        name=f"{BACKUP_DIR}: postgres only",
        path=BACKUP_DIR,
        user="postgres",
        group="postgres",
        mode="0700",
    )
    files.put(
        name=f"Write the deployment's secret-free settings to {DEPLOYMENT_JSON}",
        src=io.StringIO(deployment_json),
        dest=DEPLOYMENT_JSON,
        mode="0644",
    )
    _install_jobs([backup_job(database=database, days=days, bucket=bucket, prefix=bucket_prefix)])


@deploy("Lab alert receiver")
def alert_receiver(*, port: int, certificate_pem: str, key_pem: str) -> None:
    """Data host of the lab: the HTTPS webhook that writes each alert to RECEIVER_ALERTS."""
    _install_scripts(["alert_receiver.py"])
    inputs = [
        _secret(f"{SECRETS_DIR}/receiver.crt", certificate_pem, "the receiver's certificate"),
        _secret(f"{SECRETS_DIR}/receiver.key", key_pem, "the receiver's key"),
    ]
    _install_jobs([receiver_job(port)], inputs)
