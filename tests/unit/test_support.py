"""mcpdeploy ops backup|restore|check|bundle without hosts: what is judged from the hosts'
answers, how reports read, what redaction removes, how the bundle is written, and the
restore script's own pure parts (roles/maintenance/scripts/restore.py)."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

from mcpdeploy import credentials, support, support_probe
from mcpdeploy.cli import app
from mcpdeploy.fleet import Fleet, FleetError, FleetHost
from mcpdeploy.settings import load_settings
from roles import app as app_role
from roles import logs, maintenance
from roles.data import postgresql, redis
from roles.maintenance.scripts import restore as restore_script

SETTINGS = load_settings("lab")
LIMITS = SETTINGS.rate_limits
IMAGE = "registry.mcp.lab.test:5000/mcpdeploy/app@sha256:" + "a" * 64
FLEET = Fleet(
    stack="lab",
    ssh=("ssh",),
    hosts=(
        FleetHost("edge", "edge", None, "172.30.77.10"),
        FleetHost("app-blue", "app", "blue", "172.30.77.100"),
        FleetHost("app-green", "app", "green", "172.30.77.120"),
        FleetHost("data", "data", None, "172.30.77.20"),
    ),
    inventory="hosts/lab.py",
)


def healthy_answer(host: FleetHost) -> dict[str, Any]:
    """What support_probe.check answers on a healthy host of the lab."""
    units = support.expected_units(host.role, SETTINGS)
    answer: dict[str, Any] = {
        "units": {u: {"load": "loaded", "active": "active", "sub": "running"} for u in units},
        "failed_units": [],
        "ufw": "Status: active",
        "disk": {"/": 28, "/etc/hosts": 28},
        "errors": {"journal": {"count": 0, "samples": []}},
    }
    if host.role in ("edge", "app"):
        answer["errors"]["nginx"] = {"count": 0, "samples": []}
        answer["certificate"] = {"not_after": "2027-12-27T00:00:00+00:00", "days_left": 396}
    if host.role == "app":
        answer["errors"]["service"] = {"count": 0, "samples": []}
        answer["container"] = {
            "image": IMAGE,
            "image_id": "sha256:" + "b" * 64,
            "state": "running",
            "mcp_enabled": True,
            "rate_limits": {
                "MCP_RATE_LIMIT_PER_MINUTE": str(LIMITS.per_minute),
                "MCP_RATE_LIMIT_PER_HOUR": str(LIMITS.per_hour),
                "MCP_RATE_LIMIT_PER_DAY": str(LIMITS.per_day),
            },
        }
        answer["nginx_limits"] = {
            "zones": {
                "mcp": {"size": "10m", "rate_per_second": 10},
                "api": {"size": "10m", "rate_per_second": 100},
            },
            "bursts": {"mcp": [20], "api": [50]},
        }
    if host.role == "data":
        answer["errors"]["postgres"] = {"count": 0, "samples": []}
        answer["postgres"] = {
            "connections": 9,
            "by_role_state": {"railspress_mcp idle": 8, "postgres active": 1},
            "max_connections": 100,
            "reserved": 3,
        }
    return answer


def answers(**changes: Any) -> dict[str, Any]:
    """Healthy answers of every host, with ``changes`` ({host: answer or FleetError})."""
    result: dict[str, Any] = {h.name: healthy_answer(h) for h in FLEET.hosts}
    result.update({name.replace("_", "-"): value for name, value in changes.items()})
    return result


HEALTHY = {"app-blue": 200, "app-green": 200}


def evaluate(found: dict[str, Any], health: dict[str, Any] = HEALTHY) -> list[support.Check]:
    return support.evaluate(FLEET, SETTINGS, found, health, 15)


def failing(checks: list[support.Check]) -> list[support.Check]:
    return [c for c in checks if c.status != "pass"]


# --- the names the roles own --------------------------------------------------------------


def test_paths_and_units_agree_with_the_roles():
    assert support.CONTAINER == app_role.CONTAINER
    assert support.SERVICE_UNIT == app_role.UNIT
    assert (support.ENV_FILE, support.MIGRATE_ENV_FILE) == (
        app_role.ENV_FILE,
        app_role.MIGRATE_ENV_FILE,
    )
    assert support.POSTGRES_UNIT == postgresql.SERVICE
    assert f"/var/log/postgresql/postgresql-{postgresql.VERSION}-main.log" == support.POSTGRES_LOG
    assert (support.REDIS_UNIT, support.REDIS_ADMIN_PASSWORD) == (
        redis.SERVICE,
        redis.ADMIN_PASSWORD,
    )
    assert logs.APP_NGINX_LOGS.path == support.APP_ACCESS_LOG
    assert logs.EDGE_NGINX_LOGS.path == support.EDGE_ACCESS_LOG
    assert support.BACKUP_DIR == maintenance.BACKUP_DIR == str(restore_script.BACKUP_DIR)
    assert support.RESTORE_COMMAND == maintenance.RESTORE_COMMAND
    assert support.SECRETS_DIR == maintenance.SECRETS_DIR
    assert support.RECEIVER_ALERTS == maintenance.RECEIVER_ALERTS
    backup = maintenance.backup_job(database=credentials.DATABASE, days=30)
    assert support.BACKUP_UNIT == restore_script.BACKUP_UNIT == f"{backup.name}.service"
    assert restore_script.DEFAULT_DATABASE == credentials.DATABASE


def test_expected_units_include_each_roles_maintenance_timers():
    timers = {
        role: {u for u in support.expected_units(role, SETTINGS) if u.endswith(".timer")}
        for role in ("edge", "app", "data")
    }
    assert "mcp-health-check.timer" in timers["edge"]
    assert {"mcp-perf-check.timer", "mcp-audit-cleanup.timer"} <= timers["app"]
    assert "mcp-backup.timer" in timers["data"]
    assert "mcp-alert-receiver.service" in support.expected_units("data", SETTINGS)


# --- ops check: judging -------------------------------------------------------------------


def test_a_healthy_lab_passes_every_check():
    checks = evaluate(answers())
    assert failing(checks) == []
    names = {c.name for c in checks}
    assert names == set(support.CHECK_ORDER) - {"reachable"}
    assert [c.name for c in checks] == sorted(
        (c.name for c in checks), key=support.CHECK_ORDER.index
    )


def test_a_stopped_unit_fails_naming_the_host_and_the_fix():
    found = answers()
    found["app-green"]["units"]["nginx.service"] = {
        "load": "loaded",
        "active": "inactive",
        "sub": "dead",
    }
    [check] = failing(evaluate(found))
    assert (check.name, check.host, check.status) == ("units", "app-green", "fail")
    assert "nginx.service is inactive (dead)" in check.detail
    assert check.fix.startswith("on app-green: systemctl start nginx.service")


def test_a_failed_unit_and_a_closed_firewall_fail():
    found = answers()
    found["edge"]["failed_units"] = ["mcp-health-check.service"]
    found["data"]["ufw"] = "Status: inactive"
    bad = {(c.name, c.host): c for c in failing(evaluate(found))}
    assert set(bad) == {("failed-units", "edge"), ("firewall", "data")}
    assert "reset-failed mcp-health-check.service" in bad["failed-units", "edge"].fix
    assert "ufw --force enable" in bad["firewall", "data"].fix


def test_the_unhealthy_idle_color_fails_the_health_check():
    [check] = failing(evaluate(answers(), {"app-blue": 200, "app-green": "Connection refused"}))
    assert (check.name, check.host, check.status) == ("health", "app-green", "fail")
    assert "a switch to it would fail" in check.detail


def test_disk_fails_above_the_alert_percent():
    found = answers()
    found["data"]["disk"] = {"/": 91}
    [check] = failing(evaluate(found))
    assert (check.name, check.host, check.status) == ("disk", "data", "fail")
    assert "91%" in check.detail and "85%" in check.detail


def test_logged_errors_warn_with_a_redacted_sample():
    found = answers()
    found["app-blue"]["errors"]["service"] = {
        "count": 2,
        "samples": ["ERROR: cannot reach postgresql://mcp:hunter2hunter2@10.0.0.5/db"],
    }
    [check] = failing(evaluate(found))
    assert (check.name, check.status) == ("log-errors", "warn")
    assert "hunter2" not in check.detail and "[redacted]@10.0.0.5" in check.detail
    assert "docker logs --since 15m mcp-service" in check.fix


@pytest.mark.parametrize(("days", "status"), [(396, "pass"), (20, "warn"), (3, "fail")])
def test_certificate_expiry_against_the_warning_days(days, status):
    check = support.certificate_check("edge", {"not_after": "2027-01-01", "days_left": days}, 21)
    assert check.status == status


@pytest.mark.parametrize(("used", "status"), [(9, "pass"), (80, "warn"), (95, "fail")])
def test_database_connections_against_max_connections(used, status):
    answer = {"connections": used, "by_role_state": {}, "max_connections": 100, "reserved": 3}
    check = support.connections_check("data", answer, load_settings("lab"))
    assert check.status == status
    assert f"{used} of 97" in check.detail


def test_the_connections_fix_names_what_each_app_host_pools():
    settings = load_settings("lab")
    settings = settings.model_copy(
        update={"app": settings.app.model_copy(update={"db_pool_size": 7, "workers": 2})}
    )
    answer = {"connections": 95, "by_role_state": {}, "max_connections": 100, "reserved": 3}
    check = support.connections_check("data", answer, settings)
    assert "each app host pools 14 (app.dbPoolSize 7 x app.workers 2)" in check.fix
    assert "25" not in check.fix


def test_rate_limits_that_differ_from_the_settings_fail():
    found = answers()
    found["app-blue"]["container"]["rate_limits"]["MCP_RATE_LIMIT_PER_MINUTE"] = "7"
    found["app-blue"]["nginx_limits"]["bursts"]["mcp"] = [5]
    [check] = failing(evaluate(found))
    assert (check.name, check.host) == ("rate-limits", "app-blue")
    assert f"MCP_RATE_LIMIT_PER_MINUTE=7 (settings: {LIMITS.per_minute})" in check.detail
    assert "nginx mcp burst [5] (settings: 20)" in check.detail


def test_passing_rate_limits_say_what_is_in_effect():
    check = next(c for c in evaluate(answers()) if c.name == "rate-limits")
    limits = f"{LIMITS.per_minute}/min, {LIMITS.per_hour}/h, {LIMITS.per_day}/day"
    assert limits in check.detail and "mcp 10 r/s burst 20" in check.detail


def test_a_disabled_kill_switch_fails_with_the_way_back():
    found = answers()
    for name in ("app-blue", "app-green"):
        found[name]["container"]["mcp_enabled"] = False
    [check] = failing(evaluate(found))
    assert (check.name, check.host) == ("mcp-enabled", "app-blue")
    assert "mcp-service enable" in check.fix


def test_hosts_of_one_color_running_different_images_fail():
    fleet = Fleet(
        "lab", ("ssh",), (*FLEET.hosts, FleetHost("app-green-2", "app", "green", "x")), ""
    )
    containers = {
        "app-blue": {"image": IMAGE, "state": "running"},
        "app-green": {"image": IMAGE, "state": "running"},
        "app-green-2": {"image": IMAGE.replace("a", "c"), "state": "running"},
    }
    checks = support.image_checks(fleet.role("app"), containers, "hosts/lab.py")
    assert [c.status for c in checks] == ["pass", "fail"]
    assert "--limit app_green" in checks[1].fix


def test_a_stopped_container_fails_the_image_check():
    found = answers()
    found["app-green"]["container"]["state"] = "exited"
    bad = failing(evaluate(found))
    assert [(c.name, c.host) for c in bad] == [("image", "app-green")]


def test_an_unreachable_host_is_one_failure_not_a_crash():
    checks = evaluate(answers(data=FleetError("data: 'python3' failed (255): no route")))
    bad = failing(checks)
    assert [(c.name, c.host) for c in bad] == [("reachable", "data")]
    assert not any(c.host == "data" and c.name != "reachable" for c in checks)


# --- ops check: reporting -----------------------------------------------------------------


def test_report_shows_a_fix_under_each_check_that_is_not_a_pass():
    found = answers()
    found["app-green"]["units"]["nginx.service"]["active"] = "inactive"
    text = support.render_report("lab", SETTINGS, evaluate(found))
    lines = text.splitlines()
    assert lines[0].startswith("lab: blue serves;") and "1 fail" in lines[0]
    failed = next(i for i, line in enumerate(lines) if line.startswith("FAIL"))
    assert "app-green" in lines[failed] and lines[failed + 1].strip().startswith("fix: ")
    assert sum(line.strip().startswith("fix:") for line in lines) == 1


def test_json_report_is_ok_only_without_failures():
    healthy = support.report_json("lab", SETTINGS, evaluate(answers()))
    assert healthy["ok"] is True and healthy["counts"]["fail"] == 0
    assert {"name", "host", "status", "detail", "fix"} == set(healthy["checks"][0])
    warned = answers()
    warned["edge"]["errors"]["journal"] = {"count": 1, "samples": ["x"]}
    assert support.report_json("lab", SETTINGS, evaluate(warned))["ok"] is True
    found = answers()
    found["data"]["ufw"] = "Status: inactive"
    assert support.report_json("lab", SETTINGS, evaluate(found))["ok"] is False


def test_check_spec_asks_each_role_for_its_parts():
    app = support.check_spec("app", SETTINGS, 15)
    assert app["container"] == "mcp-service" and app["nginx_error_log"]
    data = support.check_spec("data", SETTINGS, 15)
    assert data["database"] == credentials.DATABASE and "container" not in data
    edge = support.check_spec("edge", SETTINGS, 15)
    assert "container" not in edge and "database" not in edge
    assert "mcp-*" in edge["journal_units"] and "ssh.service" not in edge["journal_units"]


# --- the probe's parsers ------------------------------------------------------------------


def test_probe_parses_systemctl_show_in_unit_order():
    output = (
        "Id=nginx.service\nLoadState=loaded\nActiveState=inactive\nSubState=dead\n\n"
        "Id=nope.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n"
    )
    states = support_probe.parse_show(output, ["nginx.service", "nope.service"])
    assert states["nginx.service"] == {"load": "loaded", "active": "inactive", "sub": "dead"}
    assert states["nope.service"]["load"] == "not-found"


def test_probe_parses_the_rate_limits_from_nginx_config():
    config = (
        "limit_req_zone $binary_remote_addr zone=mcp:10m rate=10r/s;\n"
        "limit_req_status 429;\n        limit_req zone=mcp burst=20 nodelay;\n"
        "        limit_req zone=api;\n"
    )
    parsed = support_probe.parse_limits(config)
    assert parsed["zones"] == {"mcp": {"size": "10m", "rate_per_second": 10}}
    assert parsed["bursts"] == {"mcp": [20], "api": [0]}


def test_probe_counts_only_recent_errors_in_a_log_file(tmp_path):
    from datetime import datetime

    log = tmp_path / "error.log"
    log.write_text(
        "2026/11/25 20:00:00 [error] 1#1: old failure\n"
        "2026/11/25 23:20:00 [warn] 1#1: limiting requests\n"
        "2026/11/25 23:21:00 [error] 1#1: connect() failed\n"
        "2026/11/25 23:22:00 [crit] 1#1: disk full\n"
    )
    now = datetime(2026, 11, 25, 23, 25)
    found = support_probe.file_errors(
        str(log), support_probe.NGINX_ERROR, "%Y/%m/%d %H:%M:%S", 15, now
    )
    assert found == {
        "count": 2,
        "samples": ["error: 1#1: connect() failed", "crit: 1#1: disk full"],
    }


def test_probe_reads_postgres_errors_with_debians_prefix():
    match = support_probe.POSTGRES_ERROR.match(
        "2026-11-25 23:25:08.121 UTC [6375] railspress_mcp@railspress_production ERROR:  "
        "permission denied for table posts"
    )
    assert match and match[2] == "ERROR" and match[3] == "permission denied for table posts"
    assert not support_probe.POSTGRES_ERROR.match(
        "2026-11-25 23:25:08.121 UTC [6375] railspress_mcp@railspress_production LOG:  "
        "statement: SELECT 'ERROR: x'"
    )


def test_probe_finds_the_hosts_own_secrets(tmp_path):
    token = tmp_path / "metrics-token"
    token.write_text("s3cr3t-metrics-token-value\n")
    env = tmp_path / "env"
    env.write_text("MCP_API_KEY=abcdefgh12345678\nMCP_WORKERS=2\nDATABASE_URL=postgresql://x\n")
    spec = {"secret_files": [str(token), str(tmp_path / "absent")], "env_files": [str(env)]}
    assert support_probe.host_secrets(spec) == ["s3cr3t-metrics-token-value", "abcdefgh12345678"]


# --- redaction ----------------------------------------------------------------------------

PEM = (
    ed25519.Ed25519PrivateKey.generate()
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)


def test_known_secret_values_are_redacted_wherever_they_appear():
    secret = "Zx8_kq-2LmN0pQrStUvWxYz1234567890abcdef"
    text = f"debug: loaded {secret} from disk\nsplit{secret}glued"
    redacted = support.redact(text, [secret])
    assert secret not in redacted and redacted.count("[redacted]") == 2


def test_secret_shaped_strings_are_redacted_without_knowing_them():
    samples = {
        "db password=hunter2hunter2 ok": "hunter2hunter2",
        '{"db_password": "opensesame99"}': "opensesame99",
        "SECRET_KEY_BASE=abcdef0123456789": "abcdef0123456789",
        "X-API-Key: k-1234567890abcdef": "k-1234567890abcdef",
        "Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl": "eyJhbGciOi",
        "rediss://mcp:p%40ss-w0rd@172.30.77.20:6379/0": "p%40ss-w0rd",
        "GET /x?token=tok_9f8e7d6c5b&page=2": "tok_9f8e7d6c5b",
        f"key follows\n{PEM}after": PEM.splitlines()[1],
    }
    for text, secret in samples.items():
        redacted = support.redact(text, [])
        assert secret not in redacted, text
        assert "[redacted]" in redacted, text
    assert support.redact("rediss://mcp:pw@host:6379/0", []) == "rediss://[redacted]@host:6379/0"
    assert "&page=2" in support.redact("GET /x?token=abc123&page=2", [])


def test_redaction_leaves_ordinary_diagnostics_alone():
    for text in (
        "LOG:  connection authorized: user=railspress_mcp database=railspress_production",
        "limit_req zone=mcp burst=20 nodelay;",
        "ssl_session_tickets off;",
        "nginx.service loaded active running A high performance web server",
        "https://127.0.0.1:8443/health/mcp 200",
    ):
        assert support.redact(text, ["unrelated-secret-value"]) == text


def test_known_secrets_hold_the_stacks_credentials_and_private_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(credentials, "STATE_ROOT", tmp_path)
    directory = tmp_path / "lab"
    (directory / "certs").mkdir(parents=True)
    (directory / "certs" / "edge.key").write_text(PEM)
    (directory / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIBpublic\n")
    creds = credentials.file_credentials(directory / "secrets")
    known = support.known_secrets("lab")
    assert creds.api_key in known and creds.db_runtime_password in known
    assert PEM.splitlines()[1] in known
    assert "MIIBpublic" not in known


# --- the bundle ---------------------------------------------------------------------------


def test_bundle_collects_every_section_for_each_role():
    for role in ("edge", "app", "data"):
        names = [name for name, _ in support.bundle_commands(role, SETTINGS, 60)]
        sections = {name.split("/")[0] for name in names}
        assert {"system", "units", "logs", "versions.txt"} <= sections, role
        assert ("nginx" in sections) == (role != "data"), role
        assert len(names) == len(set(names)), role
    app_commands = dict(support.bundle_commands("app", SETTINGS, 60))
    assert "--since 60m mcp-service" in app_commands["logs/mcp-service.log"]
    assert "docker version" in app_commands["versions.txt"]
    data_commands = dict(support.bundle_commands("data", SETTINGS, 60))
    assert "redis-server --version" in data_commands["versions.txt"]
    assert "SELECT version()" in data_commands["versions.txt"]


def test_collect_spec_names_the_hosts_secret_files():
    spec = support.collect_spec("app", SETTINGS, 60)
    assert redis.ADMIN_PASSWORD in spec["secret_files"]
    assert app_role.ENV_FILE in spec["env_files"]


def test_bundle_file_and_members_are_private_and_never_replaced(tmp_path):
    path = tmp_path / "bundle.tar.gz"
    support.write_bundle(path, {"root/a/logs/journal.txt": "line\n", "root/MANIFEST.json": "{}"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["root/a/logs/journal.txt", "root/MANIFEST.json"]
        assert all(stat.S_IMODE(m.mode) == 0o600 for m in members)
        assert tar.extractfile("root/a/logs/journal.txt").read() == b"line\n"
    with pytest.raises(FileExistsError):
        support.write_bundle(path, {})


# --- backup and restore -------------------------------------------------------------------


def test_backup_path_accepts_names_and_paths_in_the_backup_dir_only():
    name = "railspress_production_20261125T232419Z.dump"
    assert support.backup_path(name) == f"{support.BACKUP_DIR}/{name}"
    assert support.backup_path(f"{support.BACKUP_DIR}/{name}") == f"{support.BACKUP_DIR}/{name}"
    for bad in ("../../etc/shadow.dump", "/root/x.dump", "sub/x.dump"):
        with pytest.raises(support.SupportError, match="reads backups in"):
            support.backup_path(bad)
    with pytest.raises(support.SupportError, match=r"not a database dump"):
        support.backup_path("mcp_config_20261125T232419Z.tar.gz")


def test_the_backup_unit_can_be_started_on_demand_any_number_of_times():
    # ops backup and a restore's safety backup start it on demand; systemd's default start
    # limit (5 in 10 s) would fail the sixth and alert.
    backup = maintenance.backup_job(database=credentials.DATABASE, days=30)
    unit = maintenance.render_units([backup])["mcp-backup.service"]
    unit_section = unit.split("[Service]")[0]
    assert "StartLimitIntervalSec=0" in unit_section


def test_newest_dumps_sort_by_their_stamp():
    files = {"db_20261125T0100Z.dump": 1, "db_20261126T0100Z.dump": 1, "x.dump.sha256": 1}
    assert support.newest_dumps(files) == ["db_20261126T0100Z.dump", "db_20261125T0100Z.dump"]


@pytest.mark.parametrize(
    ("size", "shown"), [(512, "512 B"), (12_595, "12.3 KiB"), (4 << 20, "4.0 MiB")]
)
def test_human_size(size, shown):
    assert support.human_size(size) == shown


def test_restore_report_names_the_safety_backup_and_each_tables_rows():
    report = {
        "file": "/var/backups/mcpdeploy/a.dump",
        "database": "railspress_production",
        "host": "data",
        "safety_backup": "/var/backups/mcpdeploy/b.dump",
        "rows": 7,
        "tables": {"public.posts": 5, "public.tags": 2},
        "cache_invalidated_on": "app-blue",
        "health": {"app-blue": 200, "app-green": 200},
    }
    text = support.render_restore(report)
    assert "safety backup: /var/backups/mcpdeploy/b.dump" in text
    assert "7 rows in 2 tables" in text and "public.posts" in text
    assert "app-blue 200" in text


SQL = b"""SET client_min_messages = warning;
DROP TABLE IF EXISTS public.posts;
CREATE TABLE public.posts (id integer, body text);
COPY public.posts (id, body) FROM stdin;
1\tfirst\\nline
2\tsecond
\\.

COPY public."Odd Name" (id) FROM stdin;
\\.

SELECT pg_catalog.setval('public.posts_id_seq', 2, true);
"""


def test_restore_counts_the_rows_of_each_copy_block_while_passing_the_sql_on():
    out = io.BytesIO()
    rows = restore_script.copy_counting(io.BytesIO(SQL).readlines(), out)
    assert out.getvalue() == SQL
    assert rows == {"public.posts": 2, 'public."Odd Name"': 0}


def test_restore_verification_raises_unless_every_count_matches():
    sql = restore_script.verification_sql({"public.posts": 2, 'public."Odd Name"': 0})
    assert sql.startswith("DO $mcp_restore$")
    assert "IF (SELECT count(*) FROM public.posts) <> 2 THEN" in sql
    assert "'public.\"Odd Name\"'" in sql and sql.count("RAISE EXCEPTION") == 2


def test_restore_refuses_an_unreadable_file_with_exit_2(tmp_path, capsys):
    code = restore_script.main(["--json", str(tmp_path / "absent.dump")])
    assert code == 2
    report = json.loads(capsys.readouterr().out)
    assert report["restored"] is False and "cannot read" in report["error"]


def test_restore_refuses_a_file_whose_checksum_differs(tmp_path, capsys):
    dump = tmp_path / "a.dump"
    dump.write_bytes(b"PGDMP")
    Path(f"{dump}.sha256").write_text("0" * 64 + "  a.dump\n")
    assert restore_script.main([str(dump)]) == 1
    assert "does not match" in capsys.readouterr().err


# --- the CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["check"], ["backup"], ["bundle"], ["restore", "--from", "x"]])
def test_ops_commands_refuse_stacks_other_than_the_lab(command):
    result = CliRunner().invoke(app, ["ops", *command, "--stack", "prod"])
    assert result.exit_code == 2
    assert "error:" in result.stderr and "lab's hosts only" in result.stderr
    assert "Traceback" not in result.output


def test_ops_help_lists_the_commands():
    result = CliRunner().invoke(app, ["ops", "--help"])
    assert result.exit_code == 0
    for command in ("backup", "restore", "check", "bundle"):
        assert command in result.stdout
