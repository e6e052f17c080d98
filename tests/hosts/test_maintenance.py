"""The maintenance timers (roles/maintenance) on each host: scheduled, hardened, working.

Checks are run for real (``systemctl start``) and judged by their unit's result; the
scripts are run with thresholds that must trip. The backup is verified with ``sha256sum``
and ``pg_restore``, then restored after a wipe and compared table by table (lab only:
the wipe is real). The alert test stops the active color, runs the edge's health check
as its every-minute timer would, and waits for the alert at the lab's receiver on the
data host. The log test sends one request through the edge and finds its
request id in the app host's service and nginx logs at the collector.
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import ssl
import time
from typing import Any

import pytest

from mcpdeploy.credentials import DATABASE, stack_credentials
from roles.logs import COLLECTED
from roles.maintenance import BACKUP_DIR, LIB_DIR, RECEIVER_ALERTS, SECRETS_DIR, SECRETS_GROUP

EVERY_HOST = ("mcp-disk-check", "mcp-log-cleanup")
ROLE_JOBS = {
    "edge": (*EVERY_HOST, "mcp-cert-check", "mcp-health-check"),
    "app": (*EVERY_HOST, "mcp-cert-check", "mcp-perf-check", "mcp-audit-cleanup"),
    "data": (*EVERY_HOST, "mcp-backup"),
}
# Checks that must pass on a healthy host (the cleanups and the backup are tested apart).
ROLE_CHECKS = {
    "edge": ("mcp-disk-check", "mcp-cert-check", "mcp-health-check"),
    "app": ("mcp-disk-check", "mcp-cert-check", "mcp-perf-check", "mcp-audit-cleanup"),
    "data": ("mcp-disk-check",),
}
MAX_EXPOSURE = 3.0
ALERT_WAIT_SECONDS = 120
LOG_WAIT_SECONDS = 60
ROW_COUNTS = (
    "SELECT table_name, (xpath('/row/c/text()', query_to_xml(format("
    "'SELECT count(*) AS c FROM public.%I', table_name), false, true, '')))[1]::text "
    "FROM information_schema.tables "
    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
)
READY = (
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/health/mcp', timeout=2)"
)
WIPE = (
    "DO $$ DECLARE t text; BEGIN "
    "FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP "
    "EXECUTE format('DROP TABLE IF EXISTS public.%I CASCADE', t); END LOOP; END $$"
)


def role_of(host: Any, topology: dict[str, dict[str, Any]]) -> str:
    """The host's role from the lab status; skip when there is no topology."""
    name = host.backend.hostname
    if name not in topology:
        pytest.skip("no topology for this host: pass --lab-status=FILE")
    return str(topology[name]["role"])


def hosts_of(role: str, topology: dict[str, dict[str, Any]], lab_hosts: dict[str, Any]) -> Any:
    """The first host of ``role``; skip when the topology has none."""
    names = [name for name, entry in topology.items() if entry["role"] == role]
    if not names:
        pytest.skip(f"no {role} host in the topology")
    return lab_hosts[names[0]]


@pytest.fixture(scope="module")
def data_host(topology: dict[str, dict[str, Any]], lab_hosts: dict[str, Any]) -> Any:
    """The data host, where backups and restores run."""
    return hosts_of("data", topology, lab_hosts)


def psql(host: Any, sql: str) -> str:
    """Run ``sql`` as postgres over the local socket; return its unaligned output."""
    command = (
        "cd / && runuser -u postgres -- psql -X -At -F '|' -v ON_ERROR_STOP=1 "
        f"-d {DATABASE} -c {shlex.quote(sql)}"
    )
    return host.check_output(command)


def row_counts(host: Any) -> dict[str, int]:
    """Rows of every table of the service's database."""
    lines = psql(host, ROW_COUNTS).splitlines()
    return {name: int(count) for name, count in (line.split("|") for line in lines)}


def test_maintenance_timers_enabled_with_a_next_run(host: Any, topology: Any) -> None:
    for job in ROLE_JOBS[role_of(host, topology)]:
        timer = host.service(f"{job}.timer")
        assert timer.is_enabled and timer.is_running, job
        assert host.check_output(f"systemctl show -P NextElapseUSecRealtime {job}.timer"), job


def test_maintenance_units_score_at_most_3_as_loaded(host: Any, topology: Any) -> None:
    for job in ROLE_JOBS[role_of(host, topology)]:
        output = host.check_output(f"systemd-analyze security --no-pager {job}.service")
        exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
        assert exposure, output
        print(f"{host.backend.hostname} {job}.service: exposure {exposure.group(1)}")
        assert float(exposure.group(1)) <= MAX_EXPOSURE, job


def test_maintenance_secrets_readable_by_root_and_the_jobs_group_only(host: Any) -> None:
    directory = host.file(SECRETS_DIR)
    assert directory.is_directory and directory.mode == 0o750
    assert (directory.user, directory.group) == ("root", SECRETS_GROUP)
    for name in host.check_output(f"ls {SECRETS_DIR}").split():
        if name != "ca.crt":  # a public certificate
            assert host.file(f"{SECRETS_DIR}/{name}").mode == 0o640, name


def test_checks_pass_on_a_healthy_host(host: Any, topology: Any) -> None:
    for job in ROLE_CHECKS[role_of(host, topology)]:
        host.run(f"systemctl start {job}.service")
        assert host.check_output(f"systemctl show -P Result {job}.service") == "success", job


def test_disk_check_fails_above_its_limit(host: Any) -> None:
    result = host.run(f"python3 {LIB_DIR}/disk_check.py 0")
    assert result.rc == 1 and "disk space alert: / is" in result.stdout


def test_certificate_check_fails_within_its_warning_days(
    topology: Any, lab_hosts: Any, settings: Any
) -> None:
    serving = [name for name, entry in topology.items() if entry["role"] in ("edge", "app")]
    assert serving, "nginx serves a certificate on edge and app hosts: none in the topology"
    for name in serving:
        # No certificate is valid for another hundred years.
        result = lab_hosts[name].run(f"sh {LIB_DIR}/cert_check.sh {settings.domain} 36500")
        assert result.rc == 1 and "certificate alert" in result.stdout, name


def test_backup_writes_a_checksummed_dump_and_the_configuration(
    data_host: Any, pytestconfig: pytest.Config
) -> None:
    host = data_host
    stale = f"{BACKUP_DIR}/{DATABASE}_20000101T000000Z.dump"
    host.check_output(f"runuser -u postgres -- touch -d '400 days ago' {stale}")
    host.check_output("systemctl start mcp-backup.service")
    assert not host.file(stale).exists, "backups past retention.backupDays are deleted"
    dump = host.check_output(f"ls -t {BACKUP_DIR}/{DATABASE}_*.dump | head -n 1")
    config = host.check_output(f"ls -t {BACKUP_DIR}/mcp_config_*.tar.gz | head -n 1")
    for path in (dump, config):
        assert host.run(f"cd {BACKUP_DIR} && sha256sum --check {path}.sha256").rc == 0
    assert "TABLE DATA public site_settings" in host.check_output(f"pg_restore --list {dump}")
    exported = json.loads(host.check_output(f"tar -xzOf {config} mcp_settings.json"))
    stored = psql(host, "SELECT key FROM site_settings WHERE key LIKE 'mcp\\_%'").split()
    assert sorted(exported) == sorted(stored)
    deployment = host.check_output(f"tar -xzOf {config} deployment.json")
    assert json.loads(deployment)["domain"]
    secrets = stack_credentials(pytestconfig.getoption("stack"), "file")
    assert secrets.api_key not in deployment and secrets.db_owner_password not in deployment


def test_restore_refuses_a_backup_whose_checksum_does_not_match(data_host: Any) -> None:
    host = data_host
    dump = host.check_output(f"ls -t {BACKUP_DIR}/{DATABASE}_*.dump | head -n 1")
    copy = "/root/mcpdeploy-test-corrupt.dump"
    host.check_output(f"cp {dump} {copy} && cp {dump}.sha256 {copy}.sha256 && echo x >> {copy}")
    try:
        result = host.run(f"mcp-restore {copy}")
    finally:
        host.run(f"rm -f {copy} {copy}.sha256")
    assert result.rc == 1 and "does not match" in result.stderr


@pytest.mark.disruptive
def test_restore_after_a_wipe_brings_back_every_row(
    data_host: Any, pytestconfig: pytest.Config
) -> None:
    host = data_host
    if pytestconfig.getoption("stack") != "lab":
        pytest.skip("wipes the database: run against the lab only")
    before = row_counts(host)
    assert sum(before.values()) > 0, "nothing to restore: seed the database first"
    host.check_output("systemctl start mcp-backup.service")
    dump = host.check_output(f"ls -t {BACKUP_DIR}/{DATABASE}_*.dump | head -n 1")
    psql(host, WIPE)
    assert row_counts(host) == {}
    restored = host.run(f"mcp-restore {dump}")
    assert restored.rc == 0, restored.stderr
    assert row_counts(host) == before


@pytest.mark.disruptive
def test_stopping_the_active_color_alerts_the_receiver_within_two_minutes(
    topology: Any, lab_hosts: Any, settings: Any
) -> None:
    if not settings.maintenance.alert_receiver:
        pytest.skip("no alert receiver in this stack (maintenance.alertReceiver)")
    data = hosts_of("data", topology, lab_hosts)
    active = [
        lab_hosts[name]
        for name, entry in topology.items()
        if entry["role"] == "app" and entry.get("color") == settings.active_color
    ]
    assert active, f"no app host of the active color {settings.active_color}"
    edge = hosts_of("edge", topology, lab_hosts)
    # The timer runs the check every minute (its next run is at most a minute away);
    # the test runs it at once, as the timer would, instead of waiting for it.
    calendar = edge.check_output("systemctl show -P TimersCalendar mcp-health-check.timer")
    assert "OnCalendar=*-*-* *:*:00 ;" in calendar, calendar
    read_alerts = f"cat {RECEIVER_ALERTS} 2>/dev/null || true"
    seen = len(data.check_output(read_alerts).splitlines())
    for app in active:
        app.check_output("systemctl stop mcp-service.service")
    try:
        edge.run("systemctl start mcp-health-check.service")
        deadline, alerts = time.monotonic() + ALERT_WAIT_SECONDS, []
        while time.monotonic() < deadline and not alerts:
            time.sleep(0.5)
            lines = data.check_output(read_alerts).splitlines()[seen:]
            alerts = [
                record
                for record in map(json.loads, lines)
                if "mcp-health-check.service failed" in record["text"]
            ]
    finally:
        for app in active:
            app.check_output("systemctl start mcp-service.service")
        for app in active:
            # Back in service before the next test: the unit waits for the container.
            app.check_output(
                "for i in $(seq 60); do python3 -c %s && exit 0; sleep 1; done; exit 1", READY
            )
        edge.run("systemctl reset-failed mcp-health-check.service")
    assert alerts, f"no alert at the receiver within {ALERT_WAIT_SECONDS} s"
    assert "/health/mcp" in alerts[0]["text"]


def test_a_requests_log_lines_reach_the_collector(
    topology: Any, lab_hosts: Any, settings: Any
) -> None:
    if not settings.maintenance.log_collector:
        pytest.skip("no log collector in this stack (maintenance.logCollector)")
    from mcpdeploy.lab import STATE_DIR

    data = hosts_of("data", topology, lab_hosts)
    hosts_of("edge", topology, lab_hosts)
    context = ssl.create_default_context(cafile=str(STATE_DIR / "ca.crt"))
    connection = http.client.HTTPSConnection(
        "127.0.0.1", settings.lab.https_port, context=context, timeout=10
    )
    connection.request("GET", "/health", headers={"Host": settings.domain})
    response = connection.getresponse()
    response.read()
    connection.close()
    request_id = response.getheader("X-Request-ID")
    assert response.status == 200 and request_id, response.status
    deadline, found = time.monotonic() + LOG_WAIT_SECONDS, set()
    while time.monotonic() < deadline and len(found) < 2:
        time.sleep(0.5)
        files = data.run(f"grep -rlF {shlex.quote(request_id)} {COLLECTED}").stdout.split()
        found = {path.rsplit("/", 1)[-1] for path in files}
    assert {"mcp-service.log", "nginx-access.log"} <= found, found
