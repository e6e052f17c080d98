"""Runs ON a host (``python3 -c <this file> MODE SPEC``): what ``ops check`` and ``ops
bundle`` need from it, as one JSON document on stdout.

Standard library only (a Debian 12 host's python3); one SSH command per host. ``check``
reads unit states, disk use, recent errors, the service container, nginx's rate limits,
the served certificate and PostgreSQL's connections; ``collect`` runs the bundle's commands
and replaces the values of the host's own secret files with ``[redacted]`` before anything
leaves the host. ``SPEC`` (JSON) says which parts apply to this host's role.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REDACTED = "[redacted]"
ERROR_LEVELS = ("ERROR", "CRITICAL")
NGINX_ERROR = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(error|crit|alert|emerg)\] (.*)")
# log_line_prefix '%m [%p] %q%u@%d ' (Debian's): stamp, zone, [pid], user@db or nothing.
POSTGRES_ERROR = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S* \S+ \[\d+\] (?:\S+@\S+ )?(ERROR|FATAL|PANIC):\s+(.*)"
)
LIMIT_ZONE = re.compile(r"limit_req_zone\s+\S+\s+zone=(\w+):(\w+)\s+rate=(\d+)r/s")
LIMIT_REQ = re.compile(r"limit_req\s+zone=(\w+)(?:\s+burst=(\d+))?")
SAMPLES = 3
# Env file variables whose values are secrets. Connection URLs stay: their userinfo is
# redacted by the operator's patterns, and their host and database help support.
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN", re.IGNORECASE)


def sh(command: str | list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (a shell string or argv); output as text, never raises on exit code."""
    try:
        return subprocess.run(
            command,
            shell=isinstance(command, str),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            cwd="/",
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", f"timed out after {timeout:.0f} s")


def unit_states(units: list[str]) -> dict[str, dict[str, str]]:
    """{unit: {"load", "active", "sub"}} from ``systemctl show``."""
    if not units:
        return {}
    output = sh(["systemctl", "show", "-p", "Id,LoadState,ActiveState,SubState", *units]).stdout
    return parse_show(output, units)


def parse_show(output: str, units: list[str]) -> dict[str, dict[str, str]]:
    """``systemctl show``'s blocks (one per unit, in order) as {unit: states}."""
    states = {}
    for unit, block in zip(units, output.strip().split("\n\n"), strict=False):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[unit] = {
            "load": fields.get("LoadState", "?"),
            "active": fields.get("ActiveState", "?"),
            "sub": fields.get("SubState", "?"),
        }
    return states


def failed_units() -> list[str]:
    output = sh(["systemctl", "list-units", "--failed", "--plain", "--no-legend"]).stdout
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def disk_use() -> dict[str, int]:
    """{mount point: percent used} of local, disk-backed filesystems (as mcp-disk-check)."""
    output = sh(
        "df --local --output=pcent,target --exclude-type=tmpfs --exclude-type=devtmpfs "
        "--exclude-type=squashfs"
    ).stdout
    use = {}
    for line in output.splitlines()[1:]:
        percent, _, target = line.strip().partition(" ")
        if percent.endswith("%"):
            use[target.strip()] = int(percent[:-1])
    return use


def found(count: int, samples: list[str]) -> dict[str, Any]:
    return {"count": count, "samples": samples[-SAMPLES:]}


def journal_errors(units: list[str], minutes: int) -> dict[str, Any]:
    """Entries at priority err or worse about ``units`` in the last ``minutes``."""
    if not units:
        return found(0, [])
    matches = [arg for unit in units for arg in ("-u", unit)]
    result = sh(
        ["journalctl", *matches, "-p", "err", "--since", f"{minutes} min ago", "-o", "json"],
    )
    samples = []
    for line in result.stdout.splitlines():
        entry = json.loads(line)
        message = entry.get("MESSAGE")
        if isinstance(message, list):
            message = bytes(message).decode(errors="replace")
        unit = entry.get("UNIT") or entry.get("_SYSTEMD_UNIT") or entry.get("SYSLOG_IDENTIFIER")
        samples.append(f"{unit}: {message}")
    return found(len(samples), samples)


def service_log_errors(container: str, minutes: int) -> dict[str, Any]:
    """The service's JSON log lines at ERROR or worse in the last ``minutes``."""
    result = sh(["docker", "logs", "--since", f"{minutes}m", container], timeout=60)
    samples = []
    for line in (result.stdout + result.stderr).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") in ERROR_LEVELS:
            samples.append(f"{record.get('level')}: {record.get('message')}")
    return found(len(samples), samples)


def file_errors(
    path: str, pattern: re.Pattern[str], stamp: str, minutes: int, now: datetime
) -> dict[str, Any]:
    """Lines of ``path`` that ``pattern`` matches, stamped (``stamp``) within ``minutes``."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()[-20000:]
    except OSError:
        return found(0, [])
    since = now - timedelta(minutes=minutes)
    samples = []
    for line in lines:
        match = pattern.match(line)
        if match and datetime.strptime(match[1], stamp) >= since:
            samples.append(f"{match[2]}: {match[3]}")
    return found(len(samples), samples)


def container_state(container: str) -> dict[str, Any] | None:
    """The service container: image, state, kill switch and rate-limit variables.

    Only the ``MCP_RATE_LIMIT_*`` variables leave the host; the rest of its environment
    holds secrets.
    """
    inspected = sh(["docker", "inspect", container], timeout=60)
    if inspected.returncode != 0:
        return None
    details = json.loads(inspected.stdout)[0]
    environment = dict(item.split("=", 1) for item in details["Config"].get("Env") or [])
    state: dict[str, Any] = {
        "image": details["Config"]["Image"],
        "image_id": details["Image"],
        "state": details["State"]["Status"],
        "rate_limits": {k: v for k, v in environment.items() if k.startswith("MCP_RATE_LIMIT")},
        "mcp_enabled": None,
    }
    if state["state"] == "running":
        status = sh(["docker", "exec", container, "mcp-service", "status"], timeout=60)
        try:
            state["mcp_enabled"] = json.loads(status.stdout)["mcp_enabled"]
        except (ValueError, KeyError):
            state["mcp_error"] = (status.stderr or status.stdout).strip()[-300:]
    return state


def nginx_limits() -> dict[str, Any]:
    """The rate limits in nginx's loaded configuration (``nginx -T``)."""
    return parse_limits(sh(["nginx", "-T"]).stdout)


def parse_limits(text: str) -> dict[str, Any]:
    """``limit_req_zone`` rates and each zone's ``limit_req`` bursts in nginx configuration."""
    zones = {m[1]: {"size": m[2], "rate_per_second": int(m[3])} for m in LIMIT_ZONE.finditer(text)}
    bursts: dict[str, list[int]] = {}
    for match in LIMIT_REQ.finditer(text):
        bursts.setdefault(match[1], []).append(int(match[2] or 0))
    return {"zones": zones, "bursts": bursts}


def certificate(name: str, target: str, now: datetime) -> dict[str, Any]:
    """The certificate served on ``target`` for ``name``: its end date and days left."""
    served = sh(
        f"openssl s_client -connect {target} -servername {name} </dev/null 2>/dev/null "
        "| openssl x509 -noout -enddate"
    )
    if served.returncode != 0 or "=" not in served.stdout:
        return {"error": f"no certificate served on {target}"}
    end = datetime.strptime(served.stdout.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
    end = end.replace(tzinfo=UTC)
    return {"not_after": end.isoformat(), "days_left": (end - now).days}


def postgres_connections(database: str) -> dict[str, Any]:
    """Client connections in ``pg_stat_activity`` by role and state, and the limits."""
    queries = (
        "SELECT coalesce(usename, ''), coalesce(state, ''), count(*) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT 'limits', current_setting('max_connections'), "
        "current_setting('superuser_reserved_connections')",
    )
    argv = ["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-F", "|", "-d", database]
    result = sh([*argv, *(arg for query in queries for arg in ("-c", query))])
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-300:]}
    by_role: dict[str, int] = {}
    limits = {}
    for line in result.stdout.splitlines():
        role, state, count = line.split("|")
        if role == "limits":
            limits = {"max_connections": int(state), "reserved": int(count)}
            continue
        key = f"{role or '?'} {state or '?'}"
        by_role[key] = by_role.get(key, 0) + int(count)
    return {"connections": sum(by_role.values()), "by_role_state": by_role, **limits}


def check(spec: dict[str, Any]) -> dict[str, Any]:
    """Everything ``ops check`` judges about this host."""
    minutes = spec["minutes"]
    now = datetime.now(UTC)
    local_now = datetime.now()  # nginx and PostgreSQL stamp their logs in local time
    ufw = sh(["ufw", "status"]).stdout.splitlines()
    errors = {"journal": journal_errors(spec["journal_units"], minutes)}
    result: dict[str, Any] = {
        "units": unit_states(spec["units"]),
        "failed_units": failed_units(),
        "ufw": ufw[0] if ufw else "ufw status printed nothing",
        "disk": disk_use(),
        "errors": errors,
    }
    if spec.get("nginx_error_log"):
        errors["nginx"] = file_errors(
            spec["nginx_error_log"], NGINX_ERROR, "%Y/%m/%d %H:%M:%S", minutes, local_now
        )
        result["certificate"] = certificate(spec["domain"], "127.0.0.1:443", now)
    if spec.get("container"):
        errors["service"] = service_log_errors(spec["container"], minutes)
        result["container"] = container_state(spec["container"])
        result["nginx_limits"] = nginx_limits()
    if spec.get("database"):
        errors["postgres"] = file_errors(
            spec["postgres_log"], POSTGRES_ERROR, "%Y-%m-%d %H:%M:%S", minutes, local_now
        )
        result["postgres"] = postgres_connections(spec["database"])
    return result


def host_secrets(spec: dict[str, Any]) -> list[str]:
    """Secret values kept on this host: whole files, and env files' secret-named values."""
    values = []
    for path in spec.get("secret_files", []):
        try:
            values.append(Path(path).read_text().strip())
        except OSError:
            continue
    for path in spec.get("env_files", []):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            name, _, value = line.partition("=")
            if SECRET_NAME.search(name) and len(value) >= 8:
                values.append(value)
    return sorted((v for v in values if len(v) >= 8), key=len, reverse=True)


def collect(spec: dict[str, Any]) -> dict[str, Any]:
    """Run each of the bundle's commands; their output with this host's secrets redacted."""
    secrets = host_secrets(spec)
    limit = spec["max_bytes"]
    files = {}
    for name, command in spec["files"]:
        result = sh(command, timeout=60)
        text = result.stdout + result.stderr
        if len(text) > limit:
            text = f"[first {len(text) - limit} characters cut]\n" + text[-limit:]
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        files[name] = text
    return {"files": files}


def main(argv: list[str]) -> int:
    mode, spec = argv[1], json.loads(argv[2])
    print(json.dumps({"check": check, "collect": collect}[mode](spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
