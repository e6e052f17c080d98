"""`mcpdeploy ops backup|restore|check|bundle`: the guide's Maintenance, Backup and
Troubleshooting procedures as commands (docs/operations.md).

Hosts are reached only through :class:`~mcpdeploy.fleet.Fleet`. What runs on a host is
either a command the roles installed (``mcp-backup.service``, ``mcp-restore``) or
:mod:`mcpdeploy.support_probe`, sent as ``python3 -c`` and answering in JSON; judging and
rendering happen here and are pure, so they are unit-tested without hosts.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shlex
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import typer

from mcpdeploy import support_probe
from mcpdeploy.console import fail, out, step
from mcpdeploy.credentials import DATABASE, stack_credentials, state_dir
from mcpdeploy.fleet import Fleet, FleetError, FleetHost, lab_fleet
from mcpdeploy.settings import COLORS, Settings, SettingsError, load_settings

Status = Literal["pass", "warn", "fail"]
Progress = Callable[[str], None]
REDACTED = support_probe.REDACTED
# Where the roles put things. roles/ is not part of the installed package, so the names
# are repeated here; tests/unit/test_support.py checks each against its role.
CONTAINER = "mcp-service"  # roles.app.CONTAINER
SERVICE_UNIT = "mcp-service.service"  # roles.app.UNIT
ENV_FILE = "/etc/mcp-service/env"  # roles.app.ENV_FILE
MIGRATE_ENV_FILE = "/etc/mcp-service/migrate.env"  # roles.app.MIGRATE_ENV_FILE
POSTGRES_UNIT = "postgresql@15-main.service"  # roles.data.POSTGRES_UNIT
POSTGRES_LOG = "/var/log/postgresql/postgresql-15-main.log"  # Debian's, for VERSION 15
REDIS_UNIT = "redis-server.service"  # roles.data.REDIS_UNIT
REDIS_ADMIN_PASSWORD = "/etc/redis/admin.password"  # noqa: S105 - roles.data.redis, a path
APP_ACCESS_LOG = "/var/log/nginx/mcp.access.log"  # roles.logs.APP_NGINX_LOGS
EDGE_ACCESS_LOG = "/var/log/nginx/edge.access.log"  # roles.logs.EDGE_NGINX_LOGS
BACKUP_DIR = "/var/backups/mcpdeploy"  # roles.maintenance.BACKUP_DIR
BACKUP_UNIT = "mcp-backup.service"  # roles.maintenance.backup_job
RESTORE_COMMAND = "/usr/local/sbin/mcp-restore"  # roles.maintenance.RESTORE_COMMAND
SECRETS_DIR = "/etc/mcpdeploy/maintenance"  # roles.maintenance.SECRETS_DIR
RECEIVER_ALERTS = "/var/lib/mcp-alert-receiver/alerts.jsonl"  # roles.maintenance
NGINX_ERROR_LOG = "/var/log/nginx/error.log"
# The service's cache generation (app_image/mcp_service/cache.py): bumping it makes every
# cached response stale at once, on every host.
CACHE_GENERATION_KEY = "railspress:mcp:cache:generation"
CHECK_ORDER = (
    "reachable",
    "mcp-enabled",
    "health",
    "units",
    "failed-units",
    "firewall",
    "disk",
    "log-errors",
    "db-connections",
    "rate-limits",
    "certificate",
    "image",
)
CERTIFICATE_FAIL_DAYS = 7
CONNECTIONS_WARN, CONNECTIONS_FAIL = 0.8, 0.95
BUNDLE_MAX_BYTES = 2_000_000


class SupportError(Exception):
    """An operation could not be done; the message names why and what to do."""


# --- what runs where ---------------------------------------------------------------------


def expected_units(role: str, settings: Settings) -> list[str]:
    """The units the roles leave active on a host of ``role`` (services and timers)."""
    # UFW is judged by `ufw status` (the firewall check): its unit may be inactive while the
    # rules are loaded (a container boots without running it).
    units = ["ssh.service", "chrony.service"]
    units += ["mcp-disk-check.timer", "mcp-log-cleanup.timer"]  # roles/maintenance: alerting
    if settings.maintenance.log_collector:
        units.append("rsyslog.service")
    if role == "edge":
        units += ["nginx.service", "mcp-cert-check.timer", "mcp-health-check.timer"]
    elif role == "app":
        units += ["docker.service", SERVICE_UNIT, "nginx.service", "mcp-cert-check.timer"]
        units += ["mcp-perf-check.timer", "mcp-audit-cleanup.timer"]
    elif role == "data":
        units += [POSTGRES_UNIT, REDIS_UNIT, "mcp-backup.timer"]
        if settings.maintenance.alert_receiver:
            units.append("mcp-alert-receiver.service")
    return units


def journal_units(role: str, settings: Settings) -> list[str]:
    """The units whose journal errors count: what the roles run, not sshd or rsyslog."""
    ours = [u for u in expected_units(role, settings) if u.endswith(".service")]
    skipped = ("ssh.service", "chrony.service", "rsyslog.service")
    return [u for u in ours if u not in skipped and not u.startswith("mcp-")] + ["mcp-*"]


def check_spec(role: str, settings: Settings, minutes: int) -> dict[str, Any]:
    """What :func:`support_probe.check` looks at on a host of ``role``."""
    spec: dict[str, Any] = {
        "minutes": minutes,
        "units": expected_units(role, settings),
        "journal_units": journal_units(role, settings),
        "domain": settings.domain,
    }
    if role in ("edge", "app"):
        spec["nginx_error_log"] = NGINX_ERROR_LOG
    if role == "app":
        spec["container"] = CONTAINER
    if role == "data":
        spec["database"] = DATABASE
        spec["postgres_log"] = POSTGRES_LOG
    return spec


def probe(fleet: Fleet, host: str, mode: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run :mod:`support_probe` in ``mode`` on ``host``; its JSON answer."""
    source = Path(support_probe.__file__).read_text()
    result = fleet.run(host, ["python3", "-c", source, mode, json.dumps(spec)], timeout=300)
    return json.loads(result.stdout)


def probe_all(
    fleet: Fleet, specs: Mapping[str, Mapping[str, Any]], mode: str
) -> dict[str, dict[str, Any] | FleetError]:
    """:func:`probe` on every host of ``specs`` at once: {host: answer or the error}."""

    def one(host: str) -> dict[str, Any] | FleetError:
        try:
            return probe(fleet, host, mode, specs[host])
        except FleetError as exc:
            return exc
        except ValueError as exc:
            return FleetError(f"{host}: the probe answered no JSON ({exc})")

    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        return dict(zip(specs, pool.map(one, specs), strict=True))


# --- ops check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One line of the report: ``fix`` says what to do when it is not a pass."""

    name: str
    host: str
    status: Status
    detail: str
    fix: str = ""


def _on(host: str, command: str) -> str:
    return f"on {host}: {command}"


def unit_checks(host: str, answer: Mapping[str, Any]) -> list[Check]:
    """Units that should be active, units that failed, and UFW, from a probe's answer."""
    down = {
        unit: state
        for unit, state in answer["units"].items()
        if state["active"] != "active" or state["load"] != "loaded"
    }
    if down:
        detail = "; ".join(
            f"{u} is not installed"
            if s["load"] != "loaded"
            else f"{u} is {s['active']} ({s['sub']})"
            for u, s in down.items()
        )
        names = " ".join(down)
        fix = _on(
            host,
            f"systemctl start {names} (journalctl -u {next(iter(down))} -n 50 says why it "
            "stopped; a unit that is not installed needs a deploy)",
        )
        checks = [Check("units", host, "fail", detail, fix)]
    else:
        checks = [Check("units", host, "pass", f"{len(answer['units'])} units active")]
    failed = answer["failed_units"]
    if failed:
        first = failed[0]
        checks.append(
            Check(
                "failed-units",
                host,
                "fail",
                f"failed: {', '.join(failed)}",
                _on(
                    host,
                    f"systemctl status {first} and journalctl -u {first} -n 50 say why; "
                    f"systemctl reset-failed {first} once it is fixed",
                ),
            )
        )
    else:
        checks.append(Check("failed-units", host, "pass", "no failed unit"))
    if answer["ufw"].strip() == "Status: active":
        checks.append(Check("firewall", host, "pass", "ufw active"))
    else:
        checks.append(
            Check(
                "firewall",
                host,
                "fail",
                f"ufw: {answer['ufw']}",
                _on(host, "ufw --force enable, or deploy again (roles/firewall)"),
            )
        )
    return checks


def disk_check(host: str, use: Mapping[str, int], limit: int) -> Check:
    """The fullest local filesystem against ``maintenance.diskAlertPercent``."""
    if not use:
        return Check("disk", host, "warn", "df listed no local filesystem", _on(host, "df -h"))
    mount, percent = max(use.items(), key=lambda item: item[1])
    detail = f"fullest: {mount} {percent}% (limit {limit}%)"
    if percent > limit:
        fix = _on(
            host,
            f"du -xh --max-depth=2 {mount} | sort -h | tail; journalctl --vacuum-size=200M; "
            "docker image prune (app hosts keep app.keepImages images)",
        )
        return Check("disk", host, "fail", detail, fix)
    return Check("disk", host, "pass", detail)


def log_check(host: str, errors: Mapping[str, Mapping[str, Any]], minutes: int) -> Check:
    """Errors logged in the last ``minutes``: a warning with samples, not a failure."""
    counts = {source: found["count"] for source, found in errors.items() if found["count"]}
    if not counts:
        return Check("log-errors", host, "pass", f"no error in the last {minutes} min")
    samples = [redact(s, ()) for found in errors.values() for s in found["samples"]]
    where = ", ".join(f"{source} {count}" for source, count in counts.items())
    detail = f"{sum(counts.values())} error(s) in the last {minutes} min ({where})"
    if samples:
        detail += f"; latest: {samples[-1][:300]}"
    readers = {
        "journal": f"journalctl -p err --since '{minutes} min ago' -u 'mcp-*' -u nginx",
        "service": f"docker logs --since {minutes}m {CONTAINER}",
        "nginx": f"tail -n 50 {NGINX_ERROR_LOG}",
        "postgres": f"tail -n 50 {POSTGRES_LOG}",
    }
    fix = _on(host, "read them: " + "; ".join(readers[source] for source in counts))
    return Check("log-errors", host, "warn", detail, fix)


def certificate_check(host: str, served: Mapping[str, Any], warning_days: int) -> Check:
    """The certificate nginx serves on the host, against ``certificateWarningDays``."""
    if "error" in served:
        return Check(
            "certificate",
            host,
            "fail",
            served["error"],
            _on(host, "systemctl status nginx; nginx -t (the TLS files in /etc/nginx/tls)"),
        )
    days = served["days_left"]
    detail = f"valid until {served['not_after'][:10]} ({days} days)"
    renew = "deploy again: the stack's CA issues a new certificate (roles/nginx, roles/edge)"
    if days < CERTIFICATE_FAIL_DAYS:
        return Check("certificate", host, "fail", detail, renew)
    if days < warning_days:
        return Check("certificate", host, "warn", detail, renew)
    return Check("certificate", host, "pass", detail)


def connections_check(host: str, answer: Mapping[str, Any], settings: Settings) -> Check:
    """Client connections in ``pg_stat_activity`` against ``max_connections``; the fix
    names what each app host pools (app.dbPoolSize per worker, app.workers workers)."""
    if "error" in answer:
        fix = _on(host, f"systemctl status {POSTGRES_UNIT}; tail -n 50 {POSTGRES_LOG}")
        return Check("db-connections", host, "fail", f"psql: {answer['error']}", fix)
    used, limit = answer["connections"], answer["max_connections"] - answer["reserved"]
    breakdown = ", ".join(f"{key} {count}" for key, count in answer["by_role_state"].items())
    detail = f"{used} of {limit} connections ({breakdown})"
    app = settings.app
    pools = (
        f"each app host pools {app.db_pool_size * app.workers} (app.dbPoolSize "
        f"{app.db_pool_size} x app.workers {app.workers})"
    )
    who = (
        'runuser -u postgres -- psql -c "SELECT usename, state, count(*) FROM pg_stat_activity '
        'GROUP BY 1, 2"'
    )
    fix = _on(
        host,
        f"{who} shows who holds them; {pools}; raise data.postgres.maxConnections if the "
        "load is real",
    )
    if used >= CONNECTIONS_FAIL * limit:
        return Check("db-connections", host, "fail", detail, fix)
    if used >= CONNECTIONS_WARN * limit:
        return Check("db-connections", host, "warn", detail, fix)
    return Check("db-connections", host, "pass", detail)


def rate_limit_check(
    host: str, container: Mapping[str, Any], nginx: Mapping[str, Any], settings: Settings
) -> Check:
    """The rate limits in effect (service environment, nginx) against the settings."""
    limits, zones = settings.rate_limits, settings.nginx_rate_limits
    wanted_service = limits.environment()
    running = container.get("rate_limits", {})
    drift = [
        f"service {name}={running.get(name, '(unset)')} (settings: {value})"
        for name, value in wanted_service.items()
        if running.get(name) != value
    ]
    if running.get("MCP_RATE_LIMIT_ENABLED", "true").lower() in ("0", "false", "no", "off"):
        drift.append("service MCP_RATE_LIMIT_ENABLED is off")
    in_effect = []
    for name in ("mcp", "api"):
        zone = getattr(zones, name)
        loaded = nginx["zones"].get(name)
        bursts = nginx["bursts"].get(name, [])
        if not loaded or loaded["rate_per_second"] != zone.rate_per_second:
            rate = f"{loaded['rate_per_second']} r/s" if loaded else "(no zone)"
            drift.append(f"nginx zone {name} {rate} (settings: {zone.rate_per_second} r/s)")
        if not bursts or any(burst != zone.burst for burst in bursts):
            drift.append(f"nginx {name} burst {bursts or '(none)'} (settings: {zone.burst})")
        in_effect.append(f"{name} {zone.rate_per_second} r/s burst {zone.burst}")
    if drift:
        fix = "deploy again so the hosts run the settings: pyinfra -y hosts/lab.py deploy.py"
        return Check("rate-limits", host, "fail", "; ".join(drift), fix)
    detail = (
        f"service {limits.per_minute}/min, {limits.per_hour}/h, {limits.per_day}/day per key "
        f"and per client; nginx {', '.join(in_effect)}"
    )
    return Check("rate-limits", host, "pass", detail)


def kill_switch_check(containers: Mapping[str, Mapping[str, Any] | None]) -> Check:
    """Whether MCP is enabled (``site_settings.mcp_enabled``), as the service reads it."""
    for host, container in containers.items():
        if container and container.get("mcp_enabled") is not None:
            if container["mcp_enabled"]:
                return Check("mcp-enabled", host, "pass", "MCP is enabled (kill switch off)")
            return Check(
                "mcp-enabled",
                host,
                "fail",
                "MCP is disabled by the kill switch: MCP calls answer 503",
                "if the emergency is over: mcpdeploy ops enable "
                f"(or {_on(host, f'docker exec {CONTAINER} mcp-service enable')})",
            )
    hosts = ", ".join(containers) or "no app host"
    errors = "; ".join(
        str(c.get("mcp_error", "")) for c in containers.values() if c and c.get("mcp_error")
    )
    return Check(
        "mcp-enabled",
        hosts,
        "fail",
        f"no running service could read the kill switch {errors}".strip(),
        f"start the service: systemctl start {SERVICE_UNIT}; docker logs {CONTAINER} says why",
    )


def health_checks(
    hosts: Sequence[FleetHost], health: Mapping[str, int | str], active: str
) -> list[Check]:
    """``/health/mcp`` of each app host as the edge reaches it."""
    checks = []
    for host in hosts:
        status = health.get(host.name, "not probed")
        role = "active" if host.color == active else "idle: a switch to it would fail"
        if status == 200:
            checks.append(Check("health", host.name, "pass", f"/health/mcp 200 ({host.color})"))
            continue
        fix = _on(
            host.name,
            f"systemctl status nginx {SERVICE_UNIT}; docker logs --tail 50 {CONTAINER}; "
            "the answer names a failing dependency (postgres, redis)",
        )
        detail = f"/health/mcp from the edge: {status} ({host.color}, {role})"
        checks.append(Check("health", host.name, "fail", detail, fix))
    return checks


def image_checks(
    hosts: Sequence[FleetHost], containers: Mapping[str, Mapping[str, Any] | None], inventory: str
) -> list[Check]:
    """The image each color's hosts run: one per color, running on every host."""
    checks = []
    for color in COLORS:
        members = [h.name for h in hosts if h.color == color]
        if not members:
            continue
        images = {
            name: containers[name]["image"]
            for name in members
            if containers.get(name) and containers[name]["state"] == "running"
        }
        missing = [name for name in members if name not in images]
        deploy = f"pyinfra -y --limit app_{color} {inventory} deploy.py"
        if missing:
            detail = f"no running {CONTAINER} container on {', '.join(missing)}"
            fix = f"systemctl start {SERVICE_UNIT} there, or deploy {color}: {deploy}"
            checks.append(Check("image", ", ".join(missing), "fail", detail, fix))
        elif len(set(images.values())) > 1:
            detail = "; ".join(f"{name} {image}" for name, image in images.items())
            fix = f"hosts of one color must run one image: deploy {color}: {deploy}"
            checks.append(Check("image", ", ".join(members), "fail", detail, fix))
        else:
            image = next(iter(images.values()))
            checks.append(Check("image", ", ".join(members), "pass", f"{color}: {image}"))
    return checks


def evaluate(
    fleet: Fleet,
    settings: Settings,
    answers: Mapping[str, dict[str, Any] | FleetError],
    health: Mapping[str, int | str],
    minutes: int,
) -> list[Check]:
    """Every check, from the probes' answers and the edge's health probe; ordered."""
    checks: list[Check] = []
    containers: dict[str, Mapping[str, Any] | None] = {}
    maintenance = settings.maintenance
    for host in fleet.hosts:
        answer = answers[host.name]
        if isinstance(answer, FleetError):
            fix = f"is it up? mcpdeploy lab status; mcpdeploy lab ssh {host.name}"
            checks.append(Check("reachable", host.name, "fail", str(answer), fix))
            if host.role == "app":
                containers[host.name] = None
            continue
        checks += unit_checks(host.name, answer)
        checks.append(disk_check(host.name, answer["disk"], maintenance.disk_alert_percent))
        checks.append(log_check(host.name, answer["errors"], minutes))
        if "certificate" in answer:
            days = maintenance.certificate_warning_days
            checks.append(certificate_check(host.name, answer["certificate"], days))
        if "postgres" in answer:
            checks.append(connections_check(host.name, answer["postgres"], settings))
        if host.role == "app":
            container = answer.get("container")
            containers[host.name] = container
            if container:
                nginx = answer["nginx_limits"]
                checks.append(rate_limit_check(host.name, container, nginx, settings))
    app_hosts = fleet.role("app")
    colors = {host.name: host.color for host in app_hosts}
    active_first = sorted(containers, key=lambda name: colors[name] != settings.active_color)
    checks.append(kill_switch_check({name: containers[name] for name in active_first}))
    checks += health_checks(app_hosts, health, settings.active_color)
    checks += image_checks(app_hosts, containers, fleet.inventory)
    order = {name: index for index, name in enumerate(CHECK_ORDER)}
    hosts = {host.name: index for index, host in enumerate(fleet.hosts)}
    return sorted(checks, key=lambda c: (order[c.name], hosts.get(c.host.split(", ")[0], 99)))


def run_checks(fleet: Fleet, settings: Settings, minutes: int) -> list[Check]:
    """Probe every host (at once) and the app hosts' health from the edge; judge."""
    specs = {h.name: check_spec(h.role, settings, minutes) for h in fleet.hosts}
    answers = probe_all(fleet, specs, "check")
    edges = fleet.role("edge")
    try:
        health = fleet.health_from_edge(settings.domain, fleet.app_hosts()) if edges else {}
    except FleetError as exc:
        health = {h.name: f"no probe from the edge: {exc}" for h in fleet.role("app")}
    return evaluate(fleet, settings, answers, health, minutes)


def summary(checks: Sequence[Check]) -> dict[str, int]:
    return {
        status: sum(1 for c in checks if c.status == status) for status in ("pass", "warn", "fail")
    }


def report_json(stack: str, settings: Settings, checks: Sequence[Check]) -> dict[str, Any]:
    """The report as ``ops check --json`` prints it."""
    return {
        "stack": stack,
        "active_color": settings.active_color,
        "ok": not any(c.status == "fail" for c in checks),
        "counts": summary(checks),
        "checks": [asdict(c) for c in checks],
    }


def render_report(stack: str, settings: Settings, checks: Sequence[Check]) -> str:
    """The report for a person: one line per check, each fix under what it fixes."""
    counts = summary(checks)
    lines = [
        f"{stack}: {settings.active_color} serves; {len(checks)} checks: {counts['pass']} pass, "
        f"{counts['warn']} warn, {counts['fail']} fail"
    ]
    for check in checks:
        lines.append(f"{check.status.upper():<4}  {check.name:<14} {check.host:<20} {check.detail}")
        if check.fix and check.status != "pass":
            lines.append(f"{'':<6}fix: {check.fix}")
    return "\n".join(lines)


# --- ops backup / restore ----------------------------------------------------------------


def data_host(fleet: Fleet) -> str:
    """The data host's name (backups and mcp-restore live there)."""
    hosts = fleet.role("data")
    if not hosts:
        raise SupportError(f"{fleet.inventory} has no data host: backups run on the data host")
    return hosts[0].name


def backup_files(fleet: Fleet, host: str) -> dict[str, int]:
    """{file name: bytes} in ``BACKUP_DIR`` on ``host``."""
    result = fleet.run(host, f"find {BACKUP_DIR} -maxdepth 1 -type f -printf '%f %s\\n'")
    return {
        name: int(size)
        for name, _, size in (line.rpartition(" ") for line in result.stdout.splitlines())
    }


def human_size(size: int) -> str:
    """``size`` bytes as people read it: 512 B, 12.3 KiB, 4.0 MiB."""
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for larger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.1f} {unit}"


def backup(fleet: Fleet) -> dict[str, Any]:
    """Run the data host's backup now; the dump and configuration archive it wrote."""
    host = data_host(fleet)
    before = backup_files(fleet, host)
    try:
        fleet.run(host, ["systemctl", "start", BACKUP_UNIT], timeout=3700)
    except FleetError:
        log = fleet.run(
            host,
            ["journalctl", "-u", BACKUP_UNIT, "-n", "5", "-o", "cat", "--no-pager"],
            check=False,
        )
        tail = " / ".join(log.stdout.strip().splitlines())
        raise SupportError(
            f"the backup failed on {host}: {tail} (journalctl -u {BACKUP_UNIT} on {host})"
        ) from None
    after = backup_files(fleet, host)
    new = sorted(set(after) - set(before))
    dumps = [name for name in new if name.endswith(".dump")]
    configs = [name for name in new if name.startswith("mcp_config_") and name.endswith(".tar.gz")]
    if not dumps:
        raise SupportError(
            f"{BACKUP_UNIT} succeeded on {host} but wrote no new dump in {BACKUP_DIR}"
        )
    dump = dumps[-1]
    digest = fleet.run(host, ["cat", f"{BACKUP_DIR}/{dump}.sha256"]).stdout.split()[0]
    result: dict[str, Any] = {
        "host": host,
        "file": f"{BACKUP_DIR}/{dump}",
        "bytes": after[dump],
        "sha256": digest,
    }
    if configs:
        result["config"] = f"{BACKUP_DIR}/{configs[-1]}"
        result["config_bytes"] = after[configs[-1]]
    return result


def backup_path(name: str) -> str:
    """The path of a backup given by name or by a path under ``BACKUP_DIR``."""
    path = posixpath.normpath(posixpath.join(BACKUP_DIR, name))
    if posixpath.dirname(path) != BACKUP_DIR:
        raise SupportError(
            f"{name}: restore reads backups in {BACKUP_DIR} on the data host only; give a file "
            f"name from there (copy another dump there first, owned by postgres, mode 0600)"
        )
    if not path.endswith(".dump"):
        raise SupportError(f"{name}: not a database dump (*.dump, written by {BACKUP_UNIT})")
    return path


def newest_dumps(files: Mapping[str, int], count: int = 5) -> list[str]:
    """The newest dumps by name (names carry a UTC stamp, so they sort by time)."""
    return sorted((name for name in files if name.endswith(".dump")), reverse=True)[:count]


def restore(fleet: Fleet, name: str, force: bool) -> dict[str, Any]:
    """``mcp-restore`` a backup on the data host; its report (see roles/maintenance/scripts)."""
    host = data_host(fleet)
    path = backup_path(name)
    files = backup_files(fleet, host)
    if posixpath.basename(path) not in files:
        listed = ", ".join(newest_dumps(files)) or "none (mcpdeploy ops backup writes one)"
        raise SupportError(f"no backup {path} on {host}; the newest: {listed}")
    argv = [RESTORE_COMMAND, "--json", *(["--force"] if force else []), path, DATABASE]
    result = fleet.run(host, argv, timeout=3700, check=False)
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = " / ".join(result.stderr.strip().splitlines()[-3:])
        raise SupportError(f"{RESTORE_COMMAND} on {host} failed: {tail}") from None
    if result.returncode == 3:
        raise SupportError(f"refused: {report['error']}")
    if result.returncode != 0:
        raise SupportError(f"{RESTORE_COMMAND} on {host}: {report.get('error', 'failed')}")
    report["host"] = host
    return report


def invalidate_cache(fleet: Fleet, settings: Settings) -> str | None:
    """Make the service's cached responses stale (they predate the restore); the host that
    did it, or None when no app host could."""
    code = (
        "import os, redis; "
        f"redis.Redis.from_url(os.environ['REDIS_URL']).incr('{CACHE_GENERATION_KEY}')"
    )
    argv = ["docker", "exec", CONTAINER, "/opt/venv/bin/python", "-c", code]
    hosts = sorted(fleet.role("app"), key=lambda h: h.color != settings.active_color)
    for host in hosts:
        if fleet.run(host.name, argv, timeout=60, check=False).returncode == 0:
            return host.name
    return None


# --- ops bundle --------------------------------------------------------------------------

PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
)
URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@]+@")
AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}")
SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b([\w.-]*(?:password|passwd|secret|token|api[_-]?key)[\w.-]*[\"']?\s*[=:]\s*[\"']?)"
    r"(?!\[redacted\])([^\s\"',;&}]+)"
)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every known secret value and every secret-shaped string replaced.

    Known values first (longest first, so a value containing another goes whole), then the
    patterns: PEM private keys, URL userinfo, Bearer/Basic credentials, and the values of
    ``password=``, ``secret:``, ``token=``, ``api_key=`` and the like.
    """
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    text = PEM_PRIVATE_KEY.sub(REDACTED, text)
    text = URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    text = AUTH_SCHEME.sub(rf"\1\2{REDACTED}", text)
    return SECRET_ASSIGNMENT.sub(rf"\1{REDACTED}", text)


def private_key_material(pem: str) -> list[str]:
    """The base64 lines of every private key in ``pem``, each a secret on its own."""
    lines = []
    for match in PEM_PRIVATE_KEY.finditer(pem):
        lines += [line.strip() for line in match[0].splitlines()[1:-1] if len(line.strip()) >= 16]
    return lines


def known_secrets(stack: str) -> list[str]:
    """Every secret the operator machine holds for ``stack``: its credentials (as written and
    URL-quoted, as they appear in connection URLs) and its private keys' material."""
    credentials = stack_credentials(stack, "file")
    values = [getattr(credentials, f.name) for f in fields(credentials)]
    values += [quote(value, safe="") for value in values]
    for path in sorted(state_dir(stack).rglob("*")):
        if path.is_file() and not path.is_symlink():
            text = path.read_text(errors="replace")
            if "PRIVATE KEY-----" in text:
                values += private_key_material(text)
    return values


def bundle_commands(role: str, settings: Settings, minutes: int) -> list[tuple[str, str]]:
    """(file in the bundle, shell command run on the host) for a host of ``role``."""
    units = " ".join(expected_units(role, settings))
    since = shlex.quote(f"{minutes} min ago")
    commands = [
        ("system/uname.txt", "uname -a"),
        ("system/uptime.txt", "uptime"),
        ("system/disk.txt", "df -h"),
        ("system/memory.txt", "free -h"),
        ("system/ufw.txt", "ufw status verbose"),
        ("system/processes.txt", "ps -eo pid,user,%cpu,%mem,rss,etime,comm --sort=-rss | head -40"),
        ("units/list.txt", "systemctl list-units --all --no-pager --plain"),
        ("units/failed.txt", "systemctl list-units --failed --no-pager --plain"),
        ("units/timers.txt", "systemctl list-timers --all --no-pager"),
        ("units/status.txt", f"systemctl status --no-pager --full --lines=20 {units}"),
        ("logs/journal.txt", f"journalctl --since {since} --no-pager -o short-iso | tail -n 20000"),
    ]
    versions = [
        ("os", "cat /etc/os-release"),
        ("kernel", "uname -r"),
        ("python3", "python3 --version"),
    ]
    if role in ("edge", "app"):
        access_log = EDGE_ACCESS_LOG if role == "edge" else APP_ACCESS_LOG
        commands += [
            ("nginx/nginx-T.txt", "nginx -T"),
            ("logs/nginx-error.log", f"tail -n 5000 {NGINX_ERROR_LOG}"),
            ("logs/nginx-access.log", f"tail -n 5000 {access_log}"),
        ]
        versions.append(("nginx", "nginx -v"))
    if role == "app":
        commands += [
            (
                "logs/mcp-service.log",
                f"docker logs --since {minutes}m {CONTAINER} 2>&1 | tail -n 20000",
            ),
            ("docker/inspect.json", f"docker inspect {CONTAINER}"),
            ("docker/images.txt", "docker image ls --digests --no-trunc"),
            ("docker/info.txt", "docker info"),
        ]
        versions += [
            ("docker", "docker version"),
            (
                "image",
                f"docker inspect --format '{{{{.Config.Image}}}} {{{{.Image}}}}' {CONTAINER}",
            ),
        ]
    if role == "data":
        psql = f"runuser -u postgres -- psql -X -d {DATABASE} -c"
        activity = (
            "SELECT pid, usename, application_name, client_addr, state, backend_start, "
            "wait_event_type, wait_event FROM pg_stat_activity ORDER BY backend_start"
        )
        commands += [
            ("logs/postgresql.log", f"tail -n 5000 {POSTGRES_LOG}"),
            ("logs/alerts.jsonl", f"tail -n 200 {RECEIVER_ALERTS} 2>&1 || true"),
            ("postgres/activity.txt", f"cd / && {psql} {shlex.quote(activity)}"),
            ("system/backups.txt", f"ls -la {BACKUP_DIR}"),
        ]
        versions += [
            ("postgresql", f"cd / && {psql} 'SELECT version()'"),
            ("redis", "redis-server --version"),
        ]
    script = "; ".join(f"echo '## {name}'; {command} 2>&1; echo" for name, command in versions)
    commands.append(("versions.txt", script))
    return commands


def collect_spec(role: str, settings: Settings, minutes: int) -> dict[str, Any]:
    """What :func:`support_probe.collect` runs on a host of ``role``, and which of the host's
    own secret files it redacts before answering."""
    return {
        "files": bundle_commands(role, settings, minutes),
        "max_bytes": BUNDLE_MAX_BYTES,
        "secret_files": [
            REDIS_ADMIN_PASSWORD,
            f"{SECRETS_DIR}/alert-webhook",
            f"{SECRETS_DIR}/metrics-token",
        ],
        "env_files": [ENV_FILE, MIGRATE_ENV_FILE],
    }


def write_bundle(path: Path, files: Mapping[str, str]) -> None:
    """A tar.gz of ``files`` ({member path: text}) at ``path``, created 0600, never replaced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)
    now = time.time()
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, now
            tar.addfile(info, io.BytesIO(data))


def bundle(
    fleet: Fleet, settings: Settings, output: Path | None, minutes: int, progress: Progress
) -> tuple[Path, dict[str, str]]:
    """Collect, redact and write the support bundle; its path and {host: error} for hosts
    that could not be collected (the bundle has the others)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = f"mcpdeploy-support-{fleet.stack}-{stamp}"
    path = output or Path.cwd() / f"{root}.tar.gz"
    if path.exists():
        raise SupportError(f"{path} exists: give another --output")
    progress(f"collecting from {', '.join(h.name for h in fleet.hosts)}")
    specs = {h.name: collect_spec(h.role, settings, minutes) for h in fleet.hosts}
    answers = probe_all(fleet, specs, "collect")
    progress("checking the hosts for the report")
    checks = run_checks(fleet, settings, minutes)
    secrets = known_secrets(fleet.stack)
    files: dict[str, str] = {}
    errors: dict[str, str] = {}
    for host in fleet.hosts:
        answer = answers[host.name]
        if isinstance(answer, FleetError):
            errors[host.name] = str(answer)
            continue
        for name, text in answer["files"].items():
            files[f"{root}/{host.name}/{name}"] = redact(text, secrets)
    files[f"{root}/check.txt"] = redact(render_report(fleet.stack, settings, checks), secrets)
    files[f"{root}/settings.json"] = json.dumps(settings.masked(), indent=2) + "\n"
    manifest = {
        "stack": fleet.stack,
        "created": stamp,
        "minutes_of_logs": minutes,
        "hosts": {
            h.name: {"role": h.role, "color": h.color, "address": h.address} for h in fleet.hosts
        },
        "not_collected": errors,
        "redaction": (
            "the stack's credentials and private keys, the hosts' own secret files, PEM "
            "private keys, URL userinfo, Bearer/Basic credentials and password=/secret=/"
            f"token=/api_key= values are replaced by {REDACTED}"
        ),
    }
    files[f"{root}/MANIFEST.json"] = json.dumps(manifest, indent=2) + "\n"
    write_bundle(path, files)
    return path, errors


# --- the commands ------------------------------------------------------------------------

StackOption = Annotated[str, typer.Option("--stack", "-s", help="Only the lab for now.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable.")]


def _fleet(stack: str, verb: str) -> tuple[Fleet, Settings]:
    if stack != "lab":
        raise fail(
            f"ops {verb} knows the lab's hosts only for now. A self-hosted stack: the "
            "procedures in docs/operations.md (the same units and mcp-restore run there); "
            "an AWS stack: RDS automated backups and point-in-time recovery, CloudWatch "
            "alarms (docs/aws.md, 'Day-2 operations on AWS')",
            2,
        )
    try:
        settings = load_settings(stack)
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    return lab_fleet(), settings


def register(ops_app: typer.Typer) -> None:
    """Add ``backup``, ``restore``, ``check`` and ``bundle`` to the ``ops`` group."""
    ops_app.command("backup")(backup_command)
    ops_app.command("restore")(restore_command)
    ops_app.command("check")(check_command)
    ops_app.command("bundle")(bundle_command)


def backup_command(as_json: JsonOption = False, stack: StackOption = "lab") -> None:
    """Back up the database and the MCP configuration now, on the data host.

    Runs mcp-backup.service (the daily timer's job: pg_dump custom format with a .sha256,
    the mcp_* site settings and the deployment's settings) and prints the dump it wrote
    and its size. `ops restore --from NAME` takes that name.
    """
    fleet, _ = _fleet(stack, "backup")
    step(f"running {BACKUP_UNIT} on the data host")
    try:
        result = backup(fleet)
    except (SupportError, FleetError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(result))
        return
    out.print(
        f"backup written on {result['host']}: {result['file']} ({human_size(result['bytes'])}, "
        f"sha256 {result['sha256'][:16]}...)",
        soft_wrap=True,
    )
    if "config" in result:
        config = f"{result['config']} ({human_size(result['config_bytes'])})"
        out.print(f"configuration: {config}", soft_wrap=True)


def restore_command(
    source: Annotated[
        str,
        typer.Option(
            "--from", help=f"A backup on the data host: its name, or its path under {BACKUP_DIR}."
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a database that holds rows.")
    ] = False,
    as_json: JsonOption = False,
    stack: StackOption = "lab",
) -> None:
    """Restore the database from a backup on the data host, verified.

    Refuses a database that holds rows unless --force (and says how many). Takes a safety
    backup first and names it, restores in one transaction that checks every table's row
    count against the backup before it commits (a mismatch changes nothing), then makes the
    service's cached responses stale and checks /health/mcp. Owners and grants come back
    as they were, so the service's runtime role keeps working. Uses mcp-restore on the
    data host.
    """
    fleet, settings = _fleet(stack, "restore")
    step(f"restoring {source} on the data host (safety backup first)")
    try:
        report = restore(fleet, source, force)
    except (SupportError, FleetError) as exc:
        raise fail(str(exc)) from None
    report["cache_invalidated_on"] = invalidate_cache(fleet, settings)
    try:
        report["health"] = fleet.health_from_edge(settings.domain, fleet.app_hosts())
    except FleetError as exc:
        report["health"] = {"edge": str(exc)}
    if as_json:
        out.print_json(json.dumps(report))
    else:
        out.print(render_restore(report), soft_wrap=True)
    if any(status != 200 for status in report["health"].values()):
        raise fail("restored, but not every app host answers /health/mcp 200: ops check")


def render_restore(report: Mapping[str, Any]) -> str:
    """``ops restore``'s report for a person."""
    tables = report["tables"]
    lines = [
        f"restored {report['file']} into {report['database']} on {report['host']}",
        f"  safety backup: {report['safety_backup']}",
        f"  {report['rows']} rows in {len(tables)} tables, each count verified before the commit:",
        *(f"    {table:<32} {count:>10}" for table, count in tables.items()),
    ]
    cache = report.get("cache_invalidated_on")
    lines.append(
        f"  cached responses made stale (on {cache})"
        if cache
        else "  cached responses could not be made stale: no running service; they expire by TTL"
    )
    health = ", ".join(f"{host} {status}" for host, status in report["health"].items())
    lines.append(f"  /health/mcp: {health}")
    return "\n".join(lines)


MinutesOption = Annotated[
    int, typer.Option("--minutes", min=1, max=10080, help="How far back to read the logs.")
]


def check_command(
    as_json: JsonOption = False, minutes: MinutesOption = 15, stack: StackOption = "lab"
) -> None:
    """The guide's troubleshooting checks in one report; exit 1 on any failure.

    Each check passes, warns or fails with the fix: MCP enabled (kill switch), /health/mcp
    of each app host from the edge, units active per role, failed units, UFW, disk use,
    errors logged in the last --minutes (journal, the service's JSON logs, nginx,
    PostgreSQL), PostgreSQL connections against max_connections, rate limits in effect
    against the settings, certificate expiry (edge and app hosts), and the image each
    color runs.
    """
    fleet, settings = _fleet(stack, "check")
    checks = run_checks(fleet, settings, minutes)
    if as_json:
        out.print_json(json.dumps(report_json(stack, settings, checks)))
    else:
        out.print(render_report(stack, settings, checks), soft_wrap=True, markup=False)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


def bundle_command(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write it (default: ./mcpdeploy-support-STACK-TIME.tar.gz).",
        ),
    ] = None,
    minutes: Annotated[
        int, typer.Option("--minutes", min=1, max=10080, help="How far back to collect logs.")
    ] = 120,
    stack: StackOption = "lab",
) -> None:
    """Write a support bundle (tar.gz, mode 0600) from every host, secrets redacted.

    Per host: recent logs (journal, the service, nginx, PostgreSQL), unit status, versions
    (OS, Docker, nginx, PostgreSQL, Redis, image digests), the rendered nginx config
    (nginx -T) and system info (disk, memory, UFW); plus the `ops check` report and the
    masked settings. Every known secret of the stack and every secret-shaped string (PEM
    private keys, URL userinfo, Bearer tokens, password= values) is replaced by
    [redacted]. Exit 1 when a host could not be collected (the bundle has the others).
    """
    fleet, settings = _fleet(stack, "bundle")
    try:
        path, errors = bundle(fleet, settings, output, minutes, step)
    except (SupportError, OSError) as exc:
        raise fail(str(exc)) from None
    out.print(f"support bundle: {path} ({human_size(path.stat().st_size)}, mode 0600)")
    if errors:
        raise fail("not collected: " + "; ".join(f"{h}: {e}" for h, e in errors.items()))
